"""The files a user touches around a run (issue 32): output folders owned or refused, the
training log after a cut, the atomic-write promise on a full disk, config.json validated field
by field, independent top-level weight files, images at Pillow's limits. Each refused case
checks the exit code, one stderr line without a traceback, and the hashes of every file the
user had before the command."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

from ddpmkit import checkpoint, rundir

from test_cli_faults import cli_run, one_error_line, tree
# fixtures shared with test_cli_faults: its tiny 2-D run (10 steps, checkpoints and log records at 5 and 10), a copy
# of it to damage, and each test in an empty folder
from test_cli_faults import _in_tmp_cwd, run_copy, toy_run  # noqa: F401


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
SAMPLE = ["--steps", "2", "--sampler", "ddim", "--no-progress"]  # no bar: stderr holds what the command says


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


def test_a_png_dir_inside_out_is_part_of_it(digits_run, tmp_path, capsys):
    out = tmp_path / "s"
    for n in ("8", "4"):
        code, said, err = cli_run(capsys, "sample", "--run", digits_run, "-n", n, "--png-dir", out / "png", "--out", out, *SAMPLE)
        assert code == 0, err
    assert _pngs(out / "png") == [f"{i:06d}.png" for i in range(4)] and f"replacing the earlier contents of {out}" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "s"]


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
    ["distill", "--run", "{run}", "--out", "{mine}"],
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


# ---- 3. the atomic-write promise on a full disk ----------------------------------------------------------
def _decodes(path: Path) -> None:
    """Every file a sample folder holds reads back whole in its format."""
    import numpy as np
    from PIL import Image

    if path.suffix in (".png", ".gif"):
        with Image.open(path) as picture:
            for frame in range(getattr(picture, "n_frames", 1)):
                picture.seek(frame)
                picture.load()
    elif path.suffix == ".npy":
        np.load(path, allow_pickle=False)
    elif path.suffix == ".json" or path.name == ".ddpmkit-output":
        json.loads(path.read_text())
    elif path.suffix == ".csv":
        assert path.read_text().endswith("\n")
    else:
        raise AssertionError(f"unexpected file {path}")


@pytest.mark.parametrize("room,named", [(12 * 1024, "s/reverse.gif"), (160 * 1024, "pngs/0")], ids=["at-the-gif", "in-the-pngs"])
@pytest.mark.parametrize("earlier", [True, False], ids=["replacing", "new"])
def test_a_full_disk_while_sampling_leaves_no_partial_file(earlier, room, named, digits_run, tmp_path, capsys, monkeypatch):
    """A real small tmpfs fills up during `sample --gif --png-dir` (64 samples: about 40 kB in OUT,
    64 PNG pages in the PNG folder), with `room` bytes left: one line (exit 1) naming the file being
    written and what is intact; the earlier output is exactly as it was (or nothing is left), no
    temporary remains, and every file present decodes. Where no tmpfs can be mounted (not root) the
    write of `named` raises what a full disk raises, through rundir.atomic_write, the one writer."""
    from test_cli_faults import tmpfs

    disk = tmp_path / "disk"
    argv = ["sample", "--run", digits_run, "-n", "64", *SAMPLE, "--gif", "--out", disk / "s", "--png-dir", disk / "pngs"]
    with tmpfs(disk, "4m") as mounted:
        mounted = mounted and not os.environ.get("DDPMKIT_TEST_NO_TMPFS")  # set: the simulated full disk, as without root
        if earlier:
            assert cli_run(capsys, *argv)[0] == 0
        before = tree(disk)
        if mounted:
            free = (lambda s: s.f_bavail * s.f_frsize)(os.statvfs(disk))
            with open(disk / "filler", "wb") as f:
                f.write(b"\0" * (free - room))
        else:
            write = rundir.atomic_write

            def full(path, fill):
                if named.split("/")[1] in Path(path).name:
                    raise OSError(28, os.strerror(28), str(path))
                write(path, fill)
            monkeypatch.setattr(rundir, "atomic_write", full)
        code, out, err = cli_run(capsys, *argv)
        line = one_error_line(err)
        assert code == 1 and "no space left" in line and f"writing {disk / named}" in line and ".tmp-" not in line, line
        assert ("was left as it was" if earlier else "nothing was left in") in line, line
        (disk / "filler").unlink(missing_ok=True)
        assert tree(disk) == before
        for path in disk.rglob("*"):
            if path.is_file():
                _decodes(path)


# ---- 4. configs are validated field by field -------------------------------------------------------------
def _config_mutations() -> list[tuple[str, object]]:
    """(what, the mutated config.json as a Python value), generated from the config dataclasses: for
    every field of every section (each network kind's too) values of the wrong JSON type or shape,
    chosen from the field's declared type; then the whole file and each section replaced by the
    wrong kind of value, and each section left out."""
    import dataclasses
    import typing

    from ddpmkit.config import NET_KINDS, DataConfig, DiffusionConfig, RunConfig, TrainConfig

    base = json.loads(RunConfig().to_json())
    sections = {"data": DataConfig, "diffusion": DiffusionConfig, "train": TrainConfig}
    cases = []

    def mutated(section, field, value, kind=None):
        config = json.loads(json.dumps(base))
        if kind is not None:
            config["net"] = {"kind": kind, **json.loads(json.dumps(dataclasses.asdict(NET_KINDS[kind]())))}
        config[section][field] = value
        return config

    def wrong_values(hint) -> list:
        text = str(hint)
        values = [{"an": "object"}, [[1], [2]]]  # never a field's form
        if "str" not in text and "Literal" not in text:
            values.append("12")  # a string for a number, a flag or a list
        if "Literal" in text:
            values += ["no-such-choice", 3]
        if text in ("int", "<class 'int'>"):
            values += [1.5, True, [3]]
        if "float" in text and "tuple" not in text:
            values += [[0.5], True]
        if "bool" in text:
            values += [1, "true"]
        if "tuple[int, int]" in text:
            values += [8, [8], [8, 8, 8], [8.5, 8]]
        elif "tuple" in text:
            values += [8, [{"x": 1}]]
        return values

    for section, cls in sections.items():
        for name, hint in typing.get_type_hints(cls).items():
            cases += [(f"{section}.{name} = {json.dumps(v)}", mutated(section, name, v)) for v in wrong_values(hint)]
    for kind, cls in NET_KINDS.items():
        for name, hint in typing.get_type_hints(cls).items():
            cases += [(f"net({kind}).{name} = {json.dumps(v)}", mutated("net", name, v, kind)) for v in wrong_values(hint)]
    cases += [("the file is a list", [base]), ("the file is a number", 3)]
    for section in ("data", "net", "diffusion", "train"):
        cases += [(f"{section} is a list", {**base, section: [base[section]]}),
                  (f"{section} is a string", {**base, section: "x"}),
                  (f"{section} is missing", {k: v for k, v in base.items() if k != section})]
    cases += [("seed is a string", {**base, "seed": "0"}), ("conditional is a number", {**base, "conditional": 1})]
    return cases


def test_every_config_mutation_is_one_line_naming_the_field(tmp_path, capsys):
    """Each mutation of config.json (over 200, from the dataclasses' own fields) read by
    `ddpmkit sample`: exit 2, one stderr line naming config.json and, for a field, the field;
    the folder unchanged."""
    run = tmp_path / "run"
    run.mkdir()
    cases = _config_mutations()
    assert len(cases) > 200
    failures = []
    for what, config in cases:
        (run / "config.json").write_text(json.dumps(config))
        before = tree(run)
        code, out, err = cli_run(capsys, "sample", "--run", run, "-n", "1", "--out", tmp_path / "s")
        lines = err.strip().splitlines()
        field = what.split(" = ")[0].replace("net(unet)", "net").replace("net(mlp)", "net").replace("net(gated-mlp)", "net")
        ok = (code == 2 and len(lines) == 1 and "Traceback" not in err and str(run / "config.json") in lines[0]
              and (" = " not in what or field in lines[0]) and tree(run) == before and not (tmp_path / "s").exists())
        if not ok:
            failures.append(f"{what}: exit {code}: {err.strip()[-300:]}")
    assert not failures, "\n".join(failures[:20])


def test_a_valid_config_still_reads(tmp_path):
    from ddpmkit.config import RunConfig

    config = RunConfig()
    (tmp_path / "config.json").write_text(config.to_json())
    assert RunConfig.load(tmp_path / "config.json") == config


# ---- 6. images at the limits ---------------------------------------------------------------------------
def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG file that declares width x height grey pixels (its header; the pixels are never decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 15_000])  # above Pillow's warning limit; above its error limit
@pytest.mark.parametrize("how", ["edit", "train-folder", "show-forward"])
def test_an_image_above_the_bomb_limit_is_one_line_saying_too_large(side, how, digits_run, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    huge = _png_header(folder / "huge.png", side, side)
    before = tree(tmp_path)
    argv = {"edit": ["edit", "--run", digits_run, "--input", huge, "--out", tmp_path / "e"],
            "train-folder": ["train", "--data", folder, "--steps", "1", "--no-progress", "--out", tmp_path / "r"],
            "show-forward": ["show-forward", "--data", huge, "--out", tmp_path / "f.png"]}[how]
    with _no_warnings():
        code, out, err = cli_run(capsys, *argv)
    line = one_error_line(err)
    assert code == 2 and "huge.png" in line and f"{side}x{side}" in line and "too large" in line, line
    assert f"DDPMKIT_MAX_PIXELS={side * side}" in line and "unreadable" not in line and "cannot be read" not in line, line
    assert tree(tmp_path) == before


@contextlib.contextmanager
def _no_warnings():
    """Any warning fails the test (Pillow's DecompressionBombWarning would be one)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_the_pixel_limit_can_be_raised_or_lowered(digits_run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("L", (8, 8), 128).save(small)
    monkeypatch.setenv("DDPMKIT_MAX_PIXELS", "63")
    code, out, err = cli_run(capsys, "edit", "--run", digits_run, "--input", small, "--out", tmp_path / "e", *SAMPLE)
    assert code == 2 and "too large" in one_error_line(err) and "DDPMKIT_MAX_PIXELS=64" in err
    monkeypatch.setenv("DDPMKIT_MAX_PIXELS", "64")
    assert cli_run(capsys, "edit", "--run", digits_run, "--input", small, "--out", tmp_path / "e", *SAMPLE)[0] == 0


def test_the_nan_refusal_names_the_first_bad_image(digits_run, tmp_path, capsys):
    import numpy as np

    images = np.full((6, 8, 8), 0.5, np.float32)
    images[3, 2, 2] = np.nan
    images[5, 0, 0] = np.inf
    np.save(tmp_path / "a.npy", images)
    before = tree(tmp_path)
    code, out, err = cli_run(capsys, "edit", "--run", digits_run, "--input", tmp_path / "a.npy", "--out", tmp_path / "e")
    line = one_error_line(err)
    assert code == 2 and "image 3 " in line and "2 of 6" in line and "NaN" in line, line
    assert tree(tmp_path) == before


def test_what_a_killed_swap_left_is_mended(digits_run, tmp_path, capsys):
    """Killed between the two renames of a swap: the earlier output lies aside as .s.old-PID and s is
    missing; the next command into s puts it back, then replaces it; a dead process's temporary goes."""
    out = tmp_path / "s"
    assert cli_run(capsys, "sample", "--run", digits_run, "-n", "4", "--out", out, *SAMPLE)[0] == 0
    dead = 2 ** 22 + 12345  # above the largest pid Linux allows (2^22): no such process
    os.rename(out, tmp_path / f".s.old-{dead}")
    (tmp_path / f".s.tmp-{dead}").mkdir()
    code, said, err = cli_run(capsys, "sample", "--run", digits_run, "-n", "2", "--out", out, *SAMPLE)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "s"]
    assert json.loads((out / "sample.json").read_text())["num"] == 2
