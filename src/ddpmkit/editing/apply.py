"""The edits run on a loaded Run: a user's images (already read and fitted, data.inputs.
read_inputs) in, and in OUT what `ddpmkit sample` writes (samples.npy [N, H, W, C] uint8,
labels.npy for labelled edits, samples.png) plus the edit's own picture and its record (a JSON
file of every setting and measurement). Every check comes before the first file is written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import pictures, rundir
from ..data.images import to_model_space
from ..data.inputs import InputImages
from ..denoiser import DenoiserLike
from ..errors import UserError, check_positive
from ..sampling import BATCH, Run, check_labels, check_sampler, check_sampler_options, classifier_classes, network_evaluations, sampling_grid
from .interpolation import interpolate
from .repaint import check_inpaint_sampler, jump_schedule, repaint
from .sdedit import edit_grid, sdedit

SHOWN = 16  # images per picture of an edit (columns)


@dataclass
class Edited:
    data: np.ndarray  # [N, H, W, C] uint8: what samples.npy holds
    record: dict  # what the record file holds
    files: list[Path] = field(default_factory=list)  # written, in order


def edit_images(run: Run, inputs: InputImages, out: Path, strength: float, *, denoiser: DenoiserLike,
                labels: torch.Tensor | None = None, seed: int = 0, sampler: str = "ddpm", steps: int | None = None,
                spacing: str = "linspace", about: dict | None = None, **sampler_options) -> Edited:
    """SDEdit on every input (editing.sdedit): OUT/samples.npy, samples.png, edit.png (inputs above
    results) and edit.json."""
    T = run.config.diffusion.num_steps
    check_sampler(sampler, steps, T)
    check_sampler_options(sampler_options)
    check_labels(run.config, labels, 0.0, classifier_classes(run))
    grid = edit_grid(strength, T, steps, spacing)
    generator = torch.Generator().manual_seed(seed)
    x0 = to_model_space(inputs.images)
    chunks = []
    for start in range(0, len(x0), BATCH):
        label = None if labels is None else labels[start : start + BATCH].to(run.device)
        chunks.append(sdedit(denoiser, x0[start : start + BATCH].to(run.device), strength, sampler=sampler, steps=steps,
                             spacing=spacing, label=label, generator=generator, **sampler_options).cpu())
    data = run.modality.to_data_space(torch.cat(chunks))
    record = {"edit": "SDEdit (Meng et al. 2022)", "strength": strength,
              "start_timestep": int(grid[0]) if len(grid) else None, "trained_steps_T": T, "steps": len(grid),
              "spacing": spacing,
              "sampler": sampler, "nfe": network_evaluations(sampler, len(grid)) if len(grid) else 0, "seed": seed,
              **_common(inputs, labels, about), **sampler_options}
    files = _write_samples(run, out, data, labels)
    rows = [("input", inputs.images.permute(0, 2, 3, 1).numpy()), (f"edited\ns = {strength:g}", data)]
    files += _write_picture(out / "edit.png", rows, inputs.names)
    files += _write_record(out / "edit.json", record)
    return Edited(data, record, files)


def inpaint_images(run: Run, inputs: InputImages, fill: torch.Tensor, out: Path, *, denoiser: DenoiserLike,
                   labels: torch.Tensor | None = None, seed: int = 0, sampler: str = "ddpm", steps: int | None = None,
                   spacing: str = "linspace", resample: int = 1, jump: int = 1, about: dict | None = None,
                   **sampler_options) -> Edited:
    """RePaint on every input where `fill` (bool [1, 1, H, W]) is True (editing.repaint); the known
    pixels of the result are copied from the input itself, so they are its bytes exactly. OUT/
    samples.npy, samples.png, inpaint.png (input, mask, result) and inpaint.json."""
    T = run.config.diffusion.num_steps
    check_inpaint_sampler(sampler)
    check_sampler(sampler, steps, T)
    check_sampler_options(sampler_options)
    check_labels(run.config, labels, 0.0, classifier_classes(run))
    grid = sampling_grid(run.config.diffusion.num_steps, steps, spacing)
    path = jump_schedule(len(grid), resample, jump)  # checks --resample and --jump
    generator = torch.Generator().manual_seed(seed)
    x0 = to_model_space(inputs.images)
    keep = (~fill).to(x0.dtype)
    chunks = []
    for start in range(0, len(x0), BATCH):
        label = None if labels is None else labels[start : start + BATCH].to(run.device)
        chunks.append(repaint(denoiser, x0[start : start + BATCH].to(run.device), keep.to(run.device), grid,
                              sampler=sampler, resample=resample, jump=jump, label=label, generator=generator,
                              **sampler_options).cpu())
    filled = run.modality.to_data_space(torch.cat(chunks))
    given = inputs.images.permute(0, 2, 3, 1).numpy()
    data = np.where(fill[0].permute(1, 2, 0).numpy(), filled, given)  # the final join from the input's own bytes
    reverse = sum(b > a for a, b in zip(path, path[1:]))
    record = {"edit": "RePaint (Lugmayr et al. 2022)", "sampler": sampler, "steps": len(grid), "spacing": spacing,
              "resample": resample, "jump": jump, "nfe": reverse, "seed": seed,
              "filled_pixels": int(fill.sum()), "pixels": int(fill.numel()), **_common(inputs, labels, about),
              **sampler_options}
    files = _write_samples(run, out, data, labels)
    mask = np.repeat(pictures.mask_image(fill)[None], len(data), axis=0)
    if given.shape[-1] != 1:
        mask = np.repeat(mask, given.shape[-1], axis=-1)
        if given.shape[-1] in (2, 4):
            mask[..., -1] = 255  # an opaque mask
    files += _write_picture(out / "inpaint.png", [("input", given), ("mask\n(white: fill)", mask), ("inpainted", data)],
                            inputs.names)
    files += _write_record(out / "inpaint.json", record)
    return Edited(data, record, files)


def interpolate_pair(run: Run, a: InputImages, b: InputImages, out: Path, frames: int, *, denoiser: DenoiserLike,
                     label: torch.Tensor | None = None, steps: int | None = None, spacing: str = "linspace",
                     about: dict | None = None) -> Edited:
    """`frames` images from a to b through their DDIM latents (editing.interpolate): OUT/samples.npy
    (the frames), samples.png, interpolation.png (a, the frames, b), interpolation.gif and
    interpolation.json with the endpoints' reconstruction error in 8-bit levels."""
    T = run.config.diffusion.num_steps
    check_positive("--frames", frames)
    check_sampler("ddim", steps, T)
    check_labels(run.config, label, 0.0)
    for option, given in (("--a", a), ("--b", b)):
        if len(given.images) != 1:
            raise UserError(f"{option} takes one image, got {len(given.images)} ({given.names[0]}, ...)")
    grid = sampling_grid(run.config.diffusion.num_steps, steps, spacing)
    x_a, x_b = (to_model_space(given.images).to(run.device) for given in (a, b))
    result = interpolate(denoiser, x_a, x_b, frames, grid, label=None if label is None else label.to(run.device))
    data = run.modality.to_data_space(result.frames.cpu())
    ends = np.concatenate([a.images, b.images]).transpose(0, 2, 3, 1)  # [2, H, W, C] uint8
    error = np.abs(data[[0, -1]].astype(np.int16) - ends.astype(np.int16))  # 8-bit levels
    record = {"edit": "DDIM inversion and slerp (Song et al. 2021)", "frames": frames, "steps": len(grid),
              "spacing": spacing, "sampler": "ddim", "network_evaluations_total": (2 + frames) * len(grid),
              "weights_of_b": [round(float(w), 6) for w in result.weights],
              "reconstruction_error": {"unit": "8-bit levels (0..255)",
                                       "a": {"max": int(error[0].max()), "mean": float(error[0].mean())},
                                       "b": {"max": int(error[1].max()), "mean": float(error[1].mean())}},
              **_common(a, label, about), "inputs": [a.names[0], b.names[0]], "fitted": f"a: {a.note}; b: {b.note}"}
    files = _write_samples(run, out, data, label, rows=1)
    strip = np.concatenate([ends[:1], data, ends[1:]])
    files += _write_picture(out / "interpolation.png", [("", strip)],
                            ["input a"] + [f"w = {w:.2f}" for w in result.weights.tolist()] + ["input b"], shown=len(strip))
    pictures.frames_gif(data, out / "interpolation.gif")
    files.append(out / "interpolation.gif")
    files += _write_record(out / "interpolation.json", record)
    return Edited(data, record, files)


def _common(inputs: InputImages, labels: torch.Tensor | None, about: dict | None) -> dict:
    record = {"inputs": inputs.names, "fitted": inputs.note, **(about or {})}
    if labels is not None:
        record["labels"] = labels.tolist()
    return record


def _write_samples(run: Run, out: Path, data: np.ndarray, labels: torch.Tensor | None, rows: int | None = None) -> list[Path]:
    """What `ddpmkit sample` writes: samples.npy, labels.npy (labelled), samples.png."""
    out.mkdir(parents=True, exist_ok=True)  # once every check has passed: bad input creates nothing
    files = []
    if labels is not None:
        rundir.save_npy(out / "labels.npy", labels.numpy())
        files.append(out / "labels.npy")
    rundir.save_npy(out / "samples.npy", data)
    pictures.image_grid(data, out / "samples.png", rows=rows)
    return [*files, out / "samples.npy", out / "samples.png"]


def _write_picture(path: Path, rows: list[tuple[str, np.ndarray]], names: list[str], shown: int = SHOWN) -> list[Path]:
    pictures.image_rows([(label, images[:shown]) for label, images in rows], [n[-12:] for n in names[:shown]], path)
    return [path]


def _write_record(path: Path, record: dict) -> list[Path]:
    rundir.atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return [path]
