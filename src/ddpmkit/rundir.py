"""The run directory on disk: its layout, atomic writes, config.json and log.jsonl.

A run directory holds
    config.json          RunConfig: rebuilds network + schedule (written here)
    model.safetensors    latest live weights      } hard links to the files of the
    ema.safetensors      latest EMA weights       } newest complete checkpoint, for
    state.pt             latest training state    } sample and evaluate (linked here)
    checkpoints/step-NNNNNNNN/   complete checkpoints (checkpoint.py writes them)
    posthoc/step-NNNNNNNN-sigma-S.safetensors   post-hoc EMA snapshots (--posthoc-ema; checkpoint.py)
    ema-posthoc-S.safetensors    an EMA rebuilt from them (ddpmkit ema; api.posthoc_ema)
    log.jsonl            one JSON record per log interval (appended, truncated, read here)
    metrics.json         measurements (evaluation/record.py is its one writer)
    loss.png, forward.png, samples.png, samples/step-N.png, ...   pictures (pictures.py)

Every file is written under a temporary name beside its final one, fsynced and renamed
over it, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

CONFIG = "config.json"
LOG = "log.jsonl"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
POSTHOC = "posthoc"  # the post-hoc EMA snapshots
TOP_LEVEL_FILES = ("model.safetensors", "ema.safetensors", "state.pt")  # links to the newest checkpoint


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
    If anything fails the old `path` is untouched and the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically (through an open file: given a name, np.save would append .npy)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def save_png(path: Path, picture) -> None:
    """A Pillow image as a PNG file, atomically."""
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def write_config(run_dir: Path, config) -> None:
    """run_dir/config.json from a RunConfig (creating run_dir)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG, config.to_json())


# ---- log.jsonl -------------------------------------------------------------------------------
def append_log(run_dir: Path, record: dict) -> None:
    """One record appended to run_dir/log.jsonl (a line is written whole or, after a crash,
    cut off; read_log and truncate_log skip nothing but blank lines)."""
    with open(Path(run_dir) / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(run_dir_or_file: Path) -> list[dict]:
    """The records of a run's log.jsonl (a run directory or the file itself)."""
    path = Path(run_dir_or_file)
    path = path / LOG if path.is_dir() else path
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def truncate_log(run_dir: Path, step: int) -> None:
    """Drop log records after `step` (written after the checkpoint a resume starts from)."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln in lines))


# ---- the top-level weight files ------------------------------------------------------------------
def link_top_level(run_dir: Path, checkpoint_dir: Path) -> None:
    """Point run_dir's model.safetensors, ema.safetensors and state.pt at a checkpoint, one by
    one, each atomically: a crash between two links leaves each file whole but possibly one
    checkpoint behind the others; the next save or resume relinks them all."""
    for name in TOP_LEVEL_FILES:
        _link_over(Path(checkpoint_dir) / name, Path(run_dir) / name)


def _link_over(src: Path, dst: Path) -> None:
    """Make `dst` the same file as `src` (a hard link, else a copy), atomically."""

    def write(tmp: Path) -> None:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, write)
