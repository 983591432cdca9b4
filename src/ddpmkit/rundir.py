"""The run directory on disk: its layout, atomic writes, config.json and log.jsonl.

A run directory holds
    config.json          RunConfig: rebuilds network + schedule (written here)
    model.safetensors    latest live weights      } copies of the files of the
    ema.safetensors      latest EMA weights       } newest complete checkpoint, for
    state.pt             latest training state    } sample and evaluate (copied here)
    checkpoints/step-NNNNNNNN/   complete checkpoints (checkpoint.py writes them)
    best/step-NNNNNNNN/  the weights of the step that measured best (--eval-every; checkpoint.py)
    posthoc/step-NNNNNNNN-sigma-S.safetensors   post-hoc EMA snapshots (--posthoc-ema; checkpoint.py)
    ema-posthoc-S.safetensors    an EMA rebuilt from them (ddpmkit ema; api.posthoc_ema)
    classifier/          the noise-aware classifier of classifier guidance (ddpmkit train-classifier;
                         checkpoint.py writes it whole, classifier.py says what is in it)
    distill.json         a distilled run (ddpmkit distill): its teacher, rounds and the fixed
                         step grid `sample` uses by default (written and read here)
    log.jsonl            one JSON record per log interval and per quality measurement
                         (appended, truncated, read here)
    tensorboard/, wandb/, wandb-id   the loggers' files (--logger; loggers.py)
    metrics.json         measurements (evaluation/record.py is its one writer)
    loss.png, forward.png, samples.png, steps/step-N.png, ...   pictures (pictures.py)

Every file is written under a temporary name beside its final one, fsynced and renamed
over it, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import UserError

CONFIG = "config.json"
LOG = "log.jsonl"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST = "best"  # the best measured step's weights, best/step-N/
TENSORBOARD = "tensorboard"  # TensorBoard's event files
WANDB = "wandb"  # W&B's run folders (W&B names it so under the run directory)
WANDB_ID = "wandb-id"  # the W&B run id, so that a resumed run continues it
POSTHOC = "posthoc"  # the post-hoc EMA snapshots
CLASSIFIER = "classifier"  # the noise-aware classifier for classifier guidance
DISTILL = "distill.json"  # a distilled run's record: teacher, settings, rounds, its sampler and step grid
GUIDE = "guide.safetensors"  # autoguidance's guide: the EMA weights at TrainConfig.guide_at of the steps
SAMPLE_RECORD = "sample.json"  # a `ddpmkit sample` folder's record: how many samples, from which run, drawn how
TOP_LEVEL_FILES = ("model.safetensors", "ema.safetensors", "state.pt")  # copies of the newest checkpoint's


def posthoc_weights_path(run_dir: Path, sigma_rel: float) -> Path:
    """Where `ddpmkit ema` writes the EMA of width σ_rel rebuilt from the snapshots."""
    return Path(run_dir) / f"ema-posthoc-{sigma_rel:.3f}.safetensors"


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) for a temporary file beside `path`, fsync it, rename it over `path`.
    If anything fails the old `path` is untouched and the temporary file is removed.
    A failure of the operating system (no space, read-only) is raised as the OSError it is,
    naming `path` when the call that failed did not name a file (a write to an open file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        # named as the file being written (not its temporary name); an OSError without an errno keeps its own message
        if e.errno is not None and (e.filename is None or str(e.filename) == str(tmp)):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Bytes written by Python's own file calls, so that a full disk raises OSError(ENOSPC)
    (a library writing the file itself raises its own error type, or none that says why)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically (through an open file: given a name, np.save would append .npy)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def save_png(path: Path, picture) -> None:
    """A Pillow image as a PNG file, atomically."""
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def check_output_folder(path: Path, keep: str | None) -> None:
    """Refuse to write into `path` when it holds files, unless it holds `keep` (an earlier
    output of the same command, which is replaced): a user's other files are never overwritten."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; give a folder to write into")
    if path.is_dir() and any(path.iterdir()) and not (keep is not None and (path / keep).is_file()):
        raise UserError(f"{path} is not empty; give a new or empty folder (nothing in it is overwritten)")


def write_config(run_dir: Path, config) -> None:
    """run_dir/config.json from a RunConfig (creating run_dir)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG, config.to_json())


def write_distill_record(run_dir: Path, record: dict) -> None:
    """run_dir/distill.json, atomically (ddpmkit distill rewrites it after every checkpoint)."""
    atomic_write_text(Path(run_dir) / DISTILL, json.dumps(record, indent=2, allow_nan=False))


def write_sample_record(out: Path, record: dict) -> None:
    """out/sample.json: how the samples in `out` were drawn (their number, the run, the sampling request as resolved)."""
    atomic_write_text(Path(out) / SAMPLE_RECORD, json.dumps(record, indent=2, allow_nan=False) + "\n")


def read_distill_record(run_dir: Path) -> dict | None:
    """A distilled run's distill.json (None for a run ddpmkit train wrote)."""
    path = Path(run_dir) / DISTILL
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); it was damaged: run ddpmkit distill --resume again") from None


# ---- output locations -------------------------------------------------------------------------
def check_output(path: Path, option: str = "--out") -> None:
    """Refuse, before any data are loaded or anything is written, an output file that cannot be
    written: `path` is a directory, lies under a file, its nearest existing folder is read-only or
    not ours to write, or it is a file of a run directory, which a command never replaces. (Output
    folders are claimed by outputs.py.)"""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; pass the path of a file to write")
    if path.is_file() and (path.parent / CONFIG).is_file():
        raise UserError(f"{option} {path} is a file of a run directory, which a command never replaces; "
                        f"choose another {option}")
    check_writable(path, option, directory=False)


def check_writable(path: Path, option: str = "--out", *, directory: bool = True) -> None:
    """Refuse a location that cannot be written (check_output without the run-directory rule)."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; pass a directory (a new one is created)")
    folder = path if directory else path.parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise UserError(f"{option} {path} lies under {existing}, which is a file, not a folder; choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "on a read-only file system" if _read_only(existing) else "not writable by you"
        raise UserError(f"{option} {path} cannot be written: {existing} is {why}; choose another {option}")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


# ---- log.jsonl -------------------------------------------------------------------------------
def append_log(run_dir: Path, record: dict) -> None:
    """One record appended to run_dir/log.jsonl (a line is written whole or, after a crash or
    on a full disk, cut off: read_log reads up to the last whole record, truncate_log drops the cut one)."""
    with open(Path(run_dir) / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def _log_path(run_dir_or_file: Path) -> Path:
    path = Path(run_dir_or_file)
    return path / LOG if path.is_dir() else path


def _parse_log(path: Path) -> tuple[list[tuple[str, dict]], int | None]:
    """The whole records of a log.jsonl (each with its line) and the line number of a cut last record (None if the
    last record is whole). Only the last non-blank line may be cut (append_log writes a line at a
    time, so a crash cuts nothing else); a line before it that is not a record is damage in the
    middle of the log, refused in one line naming it (nothing is changed)."""
    numbered = [(i + 1, ln) for i, ln in enumerate(path.read_text(errors="replace").split("\n")) if ln.strip(" \t\r\x00")]
    records = []
    for k, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with an integer step")
        except ValueError as e:
            if k == len(numbered) - 1:
                return records, number
            raise UserError(f"{path} is damaged at line {number} ({str(e)[:80]}), in the middle of the log; nothing "
                            f"was changed: restore the file or delete line {number}, then run the command again") from None
        records.append((line, record))
    return records, None


def read_log(run_dir_or_file: Path) -> list[dict]:
    """The whole records of a run's log.jsonl (a run directory or the file itself), up to a cut
    last record if a crash left one."""
    return [record for _, record in _parse_log(_log_path(run_dir_or_file))[0]]


def last_logged_step(run_dir: Path) -> int:
    """The step of the last whole record in log.jsonl (0 if none)."""
    path = Path(run_dir) / LOG
    return max((r["step"] for r in read_log(path)), default=0) if path.is_file() else 0


def quality_records(run_dir_or_file: Path) -> list[dict]:
    """The quality measurements of log.jsonl (records with "quality"), by step."""
    return [r for r in read_log(run_dir_or_file) if "quality" in r]


def truncate_log(run_dir: Path, step: int, report: Callable[[str], None] = lambda message: None) -> None:
    """Drop log records after `step` (written after the checkpoint a resume starts from) and a
    cut last record (said through `report`); a log damaged in the middle is refused unchanged."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return
    records, cut = _parse_log(path)
    if cut is not None:
        report(f"{path}: dropped a partial record at line {cut} (cut off by a crash or a full disk); "
               "the records before it are whole")
    atomic_write_text(path, "".join(line + "\n" for line, record in records if record["step"] <= step))


# ---- the top-level weight files ------------------------------------------------------------------
def copy_top_level(run_dir: Path, checkpoint_dir: Path) -> None:
    """Copy a checkpoint's model.safetensors, ema.safetensors and state.pt to run_dir, one by
    one, each atomically. Copies, not hard links: damage to one file (an editor, a disk fault)
    never reaches the checkpoint it came from, which stays the intact source. A crash between
    two copies leaves each file whole but possibly one checkpoint behind the others; the next
    save or resume copies again those that differ (a file equal to the checkpoint's is left as it
    is; a hard link to it, as older versions made, becomes a copy)."""
    for name in TOP_LEVEL_FILES:
        src, dst = Path(checkpoint_dir) / name, Path(run_dir) / name
        if not (dst.is_file() and not os.path.samefile(src, dst) and filecmp.cmp(src, dst, shallow=False)):
            atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
