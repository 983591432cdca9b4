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


# ---- 1. output folders are owned or refused --------------------------------------------------------------
SAMPLE = ["--steps", "2", "--sampler", "ddim"]


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_a_png_dir_always_holds_one_commands_samples(digits_run, tmp_path, capsys):
    """--png-dir of 8 samples, then of 4 from another seed: exactly the 4 new ones, the record says
    so, and the summary says the earlier ones were replaced (an FID tool reads only these)."""
    pngs, out = tmp_path / "pngs", tmp_path / "s"
    assert cli_run(capsys, "sample", "--run", digits_run, "-n", "8", "--png-dir", pngs, "--out", out, *SAMPLE)[0] == 0
    assert len(_pngs(pngs)) == 8
    code, said, err = cli_run(capsys, "sample", "--run", digits_run, "-n", "4", "--seed", "3", "--png-dir", pngs,
                              "--out", out, *SAMPLE)
    assert code == 0, err
    assert _pngs(pngs) == [f"{i:06d}.png" for i in range(4)]
    marker = json.loads((pngs / ".ddpmkit-output").read_text())
    assert marker["kind"] == "png-dir" and marker["num"] == 4 and marker["sampling"]["seed"] == 3
    assert marker["run"] == str(digits_run) and marker["sampling"]["sampler"] == "ddim"
    assert f"replacing the earlier contents of {pngs}" in said and f"replacing the earlier contents of {out}" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "pngs", "s"]  # no temporary left beside them


@pytest.mark.parametrize("option", ["--png-dir", "--out"])
def test_a_folder_of_the_users_files_is_refused_and_kept(option, digits_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "000000.png").write_bytes(b"my own picture")
    (mine / "loss.png").write_bytes(b"my own curve")
    before = tree(tmp_path)
    argv = ["sample", "--run", digits_run, "-n", "4", *SAMPLE, option, mine]
    if option == "--png-dir":
        argv += ["--out", tmp_path / "s"]
    code, out, err = cli_run(capsys, *argv)
    line = one_error_line(err)
    assert code == 2 and f"{option} {mine}" in line and "--overwrite" in line and "000000.png" in line, line
    assert tree(tmp_path) == before


def test_overwrite_replaces_the_users_folder_as_a_whole(digits_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "000000.png").write_bytes(b"my own picture")
    (mine / "notes.txt").write_text("mine")
    code, out, err = cli_run(capsys, "sample", "--run", digits_run, "-n", "4", *SAMPLE, "--png-dir", mine,
                             "--out", tmp_path / "s", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in mine.iterdir()) == [".ddpmkit-output", *[f"{i:06d}.png" for i in range(4)]]  # not merged
    assert f"replacing the earlier contents of {mine}" in out


@pytest.mark.parametrize("argv", [
    ["train", "--data", "moons", "--steps", "2", "--no-progress", "--out", "{mine}"],
    ["sample", "--run", "{run}", "-n", "4", "--out", "{mine}"],
    ["compare-samplers", "--run", "{run}", "--samplers", "ddim", "--steps", "2", "-n", "4", "--out", "{mine}"],
    ["edit", "--run", "{run}", "--input", "{picture}", "--out", "{mine}"],
    ["inpaint", "--run", "{run}", "--input", "{picture}", "--mask", "{picture}", "--out", "{mine}"],
    ["interpolate", "--run", "{run}", "--a", "{picture}", "--b", "{picture}", "--out", "{mine}"],
    ["export", "--run", "{run}", "--out", "{mine}"],
    ["evaluate", "--run", "{run}", "--save-ref", "{mine}/samples.npz"],
], ids=lambda argv: argv[0])
def test_every_command_refuses_a_folder_it_did_not_write(argv, digits_run, tmp_path, capsys):
    """Refused before any work (not even the run is read), in one line naming the folder and
    --overwrite; every file the user had is unchanged."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "samples.png").write_bytes(b"the user's samples")
    (mine / "samples.npz").write_bytes(b"the user's array")
    (mine / "loss.png").write_bytes(b"the user's curve")
    picture = tmp_path / "in.png"
    shutil.copy(mine / "samples.png", picture)
    before = tree(tmp_path)
    given = [str(a).format(mine=mine, run=digits_run, picture=picture) for a in argv]
    code, out, err = cli_run(capsys, *given)
    line = one_error_line(err)
    assert code == 2 and str(mine) in line and "--overwrite" in line, line
    assert tree(tmp_path) == before


def test_a_run_directory_is_never_replaced_even_with_overwrite(digits_run, capsys):
    before = tree(digits_run)
    code, out, err = cli_run(capsys, "sample", "--run", digits_run, "-n", "4", "--out", digits_run, "--overwrite")
    assert code == 2 and "run directory" in one_error_line(err)
    assert tree(digits_run) == before


def test_train_overwrite_empties_a_folder_that_is_not_a_run(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "loss.png").write_bytes(b"the user's curve")
    code, out, err = cli_run(capsys, "train", "--data", "moons", "--num-points", "256", "--width", "16", "--batch-size",
                             "32", "--steps", "2", "--no-progress", "--out", mine, "--overwrite")
    assert code == 0, err
    assert "its earlier contents replaced" in out and (mine / "loss.png").read_bytes() != b"the user's curve"
    assert (mine / "config.json").is_file()
