"""What a command that draws samples writes in its OUT folder: samples.npy ([N, ...] data-space
samples: uint8 [N, H, W, C] images or float points), labels.npy when they are labelled,
samples.png and, for `ddpmkit sample`, the pictures asked for (reverse.gif, strip.png, a PNG
folder) and sample.json, how they were drawn. `sample` and the edits (editing/apply.py) both
write here, so the folder has one layout; each file goes through rundir's atomic writes, and the
folder itself is claimed and written whole by outputs.py."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from . import outputs, pictures, rundir
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


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """`sample`'s claimed folders: OUT, and the PNG folder when it lies apart from OUT (one inside
    OUT is written, and replaced, with it)."""

    out: outputs.Output
    pngs: outputs.Output | None


def claim(out: Path | str | outputs.Output, files: SampleFiles) -> SampleOutput:
    """Check `sample`'s folders before any work (outputs.claim): new, empty, or earlier sample output."""
    out = outputs.claim(out, "sample")
    apart = files.png_dir is not None and not outputs.inside(files.png_dir, out)
    return SampleOutput(out, outputs.claim(files.png_dir, "png-dir", "--png-dir", overwrite=out.overwrite) if apart else None)


def sample_into(run: Run, n: int, folders: SampleOutput, request: SamplingRequest, files: SampleFiles = SampleFiles(),
                report=lambda message: None) -> np.ndarray:
    """`ddpmkit sample`: n samples drawn as `request` says (n of every class for classes "all", a
    grid row each) written whole to OUT with the pictures `files` asks for and sample.json (the
    request as resolved); returns the data-space samples."""
    if files.png_dir is not None:
        images_only(run.modality, "--png-dir", "its samples are in samples.npy")
    r = request.resolve(run)
    note = off_grid_note(run, r)
    if note:
        report(note)
    gif_steps, strip_steps = pictures.kept_steps(run.config.diffusion.num_steps, grid(run, r), files, report)
    samples = draw(run, n, r, keep=sorted(set(gif_steps) | set(strip_steps)) if gif_steps or strip_steps else None)
    record = {"num": len(samples.data), "run": str(run.directory), "sampling": r.record(run)}
    out, pngs = folders.out, folders.pngs
    # once every option has been checked (bad input creates nothing); each folder is written whole
    with outputs.write(out, record) as into, outputs.write(pngs, record) if pngs else contextlib.nullcontext() as png_into:
        write_samples(into, samples.data, samples.labels)
        png_dir = png_into if pngs or files.png_dir is None else into / Path(os.path.abspath(files.png_dir)).relative_to(os.path.abspath(out.path))
        pictures.sample_files(run, samples, into, dataclasses.replace(files, png_dir=png_dir), gif_steps, strip_steps,
                              rows=run.classes if r.classes == ALL else None)
        rundir.write_sample_record(into, record)
    return samples.data
