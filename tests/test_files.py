"""The files a user touches around a run (issue 32): output folders owned or refused, the
training log after a cut, the atomic-write promise on a full disk, config.json validated field
by field, independent top-level weight files, images at Pillow's limits. Each refused case
checks the exit code, one stderr line without a traceback, and the hashes of every file the
user had before the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ddpmkit import checkpoint, rundir

from test_cli_faults import TRAIN, cli_run, one_error_line, tree


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """The tiny 2-D run of test_cli_faults: 10 steps, checkpoints and log records at 5 and 10."""
    run = tmp_path_factory.mktemp("files") / "run"
    code = cli_run_quiet([*TRAIN, "--out", run])
    assert code == 0
    return run


def cli_run_quiet(argv) -> int:
    from ddpmkit import cli

    return cli.main([str(a) for a in argv])


@pytest.fixture
def run_copy(toy_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(toy_run, copy)
    return copy


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("DDPMKIT_DEBUG", raising=False)


TIMES = ("elapsed_s", "examples_per_s")  # what differs between two runs of the same steps


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in records]


# ---- 2. the training log survives a cut ------------------------------------------------------------------
def test_a_cut_last_log_record_is_dropped_and_the_resume_is_exact(run_copy, toy_run, capsys):
    """Killed while writing the step-10 record, before the step-10 checkpoint: resume drops the cut
    record in one line, and the resumed run's log equals the uninterrupted run's."""
    log = run_copy / "log.jsonl"
    first, second = log.read_text().splitlines()
    log.write_text(first + "\n" + second[: len(second) // 2])  # the step-10 record cut halfway
    shutil.rmtree(run_copy / "checkpoints" / "step-00000010")
    assert [r["step"] for r in rundir.read_log(run_copy)] == [5]  # readers stop at the last whole record
    code, out, err = cli_run(capsys, "train", "--resume", run_copy, "--no-progress")
    assert code == 0, err
    said = [line for line in out.splitlines() if "partial record" in line]
    assert len(said) == 1 and "line 2" in said[0] and str(log) in said[0], out
    assert _untimed(rundir.read_log(run_copy)) == _untimed(rundir.read_log(toy_run))
    assert log.read_text().endswith("\n") and len(log.read_text().splitlines()) == 2


def test_a_log_damaged_in_the_middle_is_refused_naming_the_line(run_copy, capsys):
    log = run_copy / "log.jsonl"
    first, second = log.read_text().splitlines()
    log.write_text(first[:20] + "\n" + second + "\n")  # line 1 damaged, line 2 whole
    shutil.rmtree(run_copy / "checkpoints" / "step-00000010")
    before = tree(run_copy)
    code, out, err = cli_run(capsys, "train", "--resume", run_copy, "--steps", "15", "--no-progress")
    line = one_error_line(err)
    assert code == 2 and "line 1" in line and str(log) in line and "nothing was changed" in line, line
    assert tree(run_copy) == before


def test_the_log_readers_take_blank_lines_and_refuse_a_non_record(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert rundir.read_log(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(rundir.UserError, match="line 2"):
        rundir.read_log(log)


# ---- 5. weights are independent files --------------------------------------------------------------------
def test_top_level_weights_are_copies_not_links(toy_run):
    newest = checkpoint.newest_checkpoint(toy_run)
    for name in rundir.TOP_LEVEL_FILES:
        top, kept = toy_run / name, newest / name
        assert top.read_bytes() == kept.read_bytes()
        assert not top.samefile(kept) and top.stat().st_nlink == 1


def test_a_damaged_top_level_weight_file_names_the_intact_checkpoint(run_copy, capsys):
    ema = run_copy / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:100])  # damaged in place
    newest = checkpoint.newest_checkpoint(run_copy)
    before = tree(run_copy)
    code, out, err = cli_run(capsys, "sample", "--run", run_copy, "-n", "8", "--out", run_copy.parent / "s")
    line = one_error_line(err)
    assert code == 2 and str(ema) in line and f"--weights {newest / 'ema.safetensors'}" in line and "--resume" in line, line
    assert tree(run_copy) == before
    assert cli_run(capsys, "sample", "--run", run_copy, "-n", "8", "--out", run_copy.parent / "s",
                   "--weights", newest / "ema.safetensors")[0] == 0
