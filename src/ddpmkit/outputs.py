"""What a command that draws samples writes in its OUT folder: samples.npy ([N, ...] data-space
samples: uint8 [N, H, W, C] images or float points), labels.npy when they are labelled,
samples.png and, for `ddpmkit sample`, the pictures asked for (reverse.gif, strip.png, a PNG
folder) and sample.json, how they were drawn. `sample` and the edits (editing/apply.py) both
write here, so the folder has one layout; each file goes through rundir's atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import pictures, rundir
from .modality import images_only
from .pictures import SampleFiles
from .sampling import ALL, Run, SamplingRequest, draw, grid, off_grid_note


def write_samples(out: Path, data: np.ndarray, labels: torch.Tensor | None) -> list[Path]:
    """OUT/samples.npy and OUT/labels.npy (labelled samples), OUT created now (once every check
    has passed: bad input creates nothing); returns them."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if labels is not None:
        rundir.save_npy(out / "labels.npy", labels.numpy())
        files.append(out / "labels.npy")
    rundir.save_npy(out / "samples.npy", data)
    return [*files, out / "samples.npy"]


def sample_into(run: Run, n: int, out: Path, request: SamplingRequest, files: SampleFiles = SampleFiles(),
                report=lambda message: None) -> np.ndarray:
    """`ddpmkit sample`: n samples drawn as `request` says (n of every class for classes "all", a
    grid row each) written to OUT with the pictures `files` asks for and sample.json (the request
    as resolved); returns the data-space samples."""
    if files.png_dir is not None:
        images_only(run.modality, "--png-dir", "its samples are in samples.npy")
    r = request.resolve(run)
    note = off_grid_note(run, r)
    if note:
        report(note)
    gif_steps, strip_steps = pictures.kept_steps(run.config.diffusion.num_steps, grid(run, r), files, report)
    samples = draw(run, n, r, keep=sorted(set(gif_steps) | set(strip_steps)) if gif_steps or strip_steps else None)
    write_samples(out, samples.data, samples.labels)
    pictures.sample_files(run, samples, out, files, gif_steps, strip_steps, rows=run.classes if r.classes == ALL else None)
    rundir.write_sample_record(out, {"num": len(samples.data), "run": str(run.directory), "sampling": r.record(run)})
    return samples.data
