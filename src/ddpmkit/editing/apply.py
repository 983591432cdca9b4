"""The edits run on a loaded Run: a user's images (already read and fitted, data.inputs.
read_inputs) in, and in OUT what `ddpmkit sample` writes (samples.npy [N, H, W, C] uint8,
labels.npy for labelled edits, samples.png) plus the edit's own picture and its record (a JSON
file of every setting and measurement, with the sampling request as resolved). Every check
comes before the first file is written. SDEdit samples with `sample`'s default; RePaint and the
interpolation declare their own beside them (repaint.REPAINT, interpolation.INTERPOLATION)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import outputs, pictures, rundir
from ..data.images import to_model_space
from ..data.inputs import InputImages
from ..errors import UserError, check_positive
from ..sample_folder import write_samples
from ..sampling import ALL, Run, SamplingRequest, denoiser, grid, labels, network_evaluations
from .interpolation import INTERPOLATION, interpolate
from .repaint import REPAINT, check_inpaint_sampler, jump_schedule, repaint
from .sdedit import edit_grid, sdedit

SHOWN = 16  # images per picture of an edit (columns)


@dataclass
class Edited:
    data: np.ndarray  # [N, H, W, C] uint8: what samples.npy holds
    record: dict  # what the record file holds
    files: list[Path] = field(default_factory=list)  # written, in order

    def placed(self, into: Path, out: outputs.Output) -> Edited:
        """The result with its files where they lie once the output folder written in `into` is in place (outputs.write)."""
        return replace(self, files=[outputs.final_path(f, into, out) for f in self.files])


def edit_images(run: Run, inputs: InputImages, out: Path, strength: float, request: SamplingRequest) -> Edited:
    """SDEdit on every input (editing.sdedit), drawn as `request` says (its steps count those of a
    full draw; the edit takes about strength·steps of them): OUT/samples.npy, samples.png, edit.png
    (inputs above results) and edit.json."""
    r = _one_class(request.resolve(run))
    T = run.config.diffusion.num_steps
    steps = edit_grid(strength, T, r.steps, r.spacing)
    y = labels(run, r, len(inputs.images))
    model, generator = denoiser(run, r), torch.Generator().manual_seed(r.seed)
    x0 = to_model_space(inputs.images)
    chunks = []
    for start in range(0, len(x0), r.batch):
        label = None if y is None else y[start : start + r.batch].to(run.device)
        chunks.append(sdedit(model, x0[start : start + r.batch].to(run.device), strength, sampler=r.sampler, steps=r.steps,
                             spacing=r.spacing, label=label, generator=generator, **r.sampler_options()).cpu())
    data = run.modality.to_data_space(torch.cat(chunks))
    record = {"edit": "SDEdit (Meng et al. 2022)", "strength": strength,
              "start_timestep": int(steps[0]) if len(steps) else None, "trained_steps_T": T, "steps": len(steps),
              "nfe": network_evaluations(r.sampler, len(steps)) if len(steps) else 0, **_common(run, inputs, y, r)}
    files = _write_samples(run, out, data, y)
    rows = [("input", inputs.images.permute(0, 2, 3, 1).numpy()), (f"edited\ns = {strength:g}", data)]
    files += _write_picture(out / "edit.png", rows, inputs.names)
    files += _write_record(out / "edit.json", record)
    return Edited(data, record, files)


def inpaint_images(run: Run, inputs: InputImages, fill: torch.Tensor, out: Path, request: SamplingRequest, *,
                   resample: int = 1, jump: int = 1) -> Edited:
    """RePaint on every input where `fill` (bool [1, 1, H, W]) is True (editing.repaint), drawn as
    `request` says (its own default: REPAINT), with `resample` walks of every `jump` steps; the
    known pixels of the result are copied from the input itself, so they are its bytes exactly.
    OUT/samples.npy, samples.png, inpaint.png (input, mask, result) and inpaint.json."""
    r = _one_class(request.resolve(run, REPAINT))
    check_inpaint_sampler(r.sampler)
    steps = grid(run, r)
    path = jump_schedule(len(steps), resample, jump)  # checks --resample and --jump
    y = labels(run, r, len(inputs.images))
    model, generator = denoiser(run, r), torch.Generator().manual_seed(r.seed)
    x0 = to_model_space(inputs.images)
    keep = (~fill).to(x0.dtype)
    chunks = []
    for start in range(0, len(x0), r.batch):
        label = None if y is None else y[start : start + r.batch].to(run.device)
        chunks.append(repaint(model, x0[start : start + r.batch].to(run.device), keep.to(run.device), steps,
                              sampler=r.sampler, resample=resample, jump=jump, label=label, generator=generator,
                              **r.sampler_options()).cpu())
    filled = run.modality.to_data_space(torch.cat(chunks))
    given = inputs.images.permute(0, 2, 3, 1).numpy()
    data = np.where(fill[0].permute(1, 2, 0).numpy(), filled, given)  # the final join from the input's own bytes
    reverse = sum(b > a for a, b in zip(path, path[1:]))
    record = {"edit": "RePaint (Lugmayr et al. 2022)", "steps": len(steps), "resample": resample, "jump": jump, "nfe": reverse,
              "filled_pixels": int(fill.sum()), "pixels": int(fill.numel()), **_common(run, inputs, y, r)}
    files = _write_samples(run, out, data, y)
    mask = np.repeat(pictures.mask_image(fill)[None], len(data), axis=0)
    if given.shape[-1] != 1:
        mask = np.repeat(mask, given.shape[-1], axis=-1)
        if given.shape[-1] in (2, 4):
            mask[..., -1] = 255  # an opaque mask
    files += _write_picture(out / "inpaint.png", [("input", given), ("mask\n(white: fill)", mask), ("inpainted", data)],
                            inputs.names)
    files += _write_record(out / "inpaint.json", record)
    return Edited(data, record, files)


def interpolate_pair(run: Run, a: InputImages, b: InputImages, out: Path, frames: int, request: SamplingRequest) -> Edited:
    """`frames` images from a to b through their DDIM latents (editing.interpolate), on the grid and
    with the denoiser `request` asks for (its own default: INTERPOLATION; deterministic DDIM only):
    OUT/samples.npy (the frames), samples.png, interpolation.png (a, the frames, b),
    interpolation.gif and interpolation.json with the endpoints' reconstruction error in 8-bit levels."""
    r = _one_class(request.resolve(run, INTERPOLATION))
    if r.classes is not None and not run.config.num_classes:
        raise UserError("--class needs a conditional model here: interpolate takes no classifier guidance (a guided step "
                        "is not DDIM's inverse), and this run was trained without --conditional")
    if r.sampler != "ddim" or r.eta:
        raise UserError(f"interpolate inverts and decodes with deterministic DDIM; --sampler takes ddim only, not {r.sampler!r}")
    if r.guidance.classifier:
        raise UserError("interpolate takes no --classifier-scale: a guided step is not DDIM's inverse")
    check_positive("--frames", frames)
    for option, given in (("--a", a), ("--b", b)):
        if len(given.images) != 1:
            raise UserError(f"{option} takes one image, got {len(given.images)} ({given.names[0]}, ...)")
    steps = grid(run, r)
    label = labels(run, r, 1)
    x_a, x_b = (to_model_space(given.images).to(run.device) for given in (a, b))
    result = interpolate(denoiser(run, r), x_a, x_b, frames, steps, label=None if label is None else label.to(run.device))
    data = run.modality.to_data_space(result.frames.cpu())
    ends = np.concatenate([a.images, b.images]).transpose(0, 2, 3, 1)  # [2, H, W, C] uint8
    error = np.abs(data[[0, -1]].astype(np.int16) - ends.astype(np.int16))  # 8-bit levels
    record = {"edit": "DDIM inversion and slerp (Song et al. 2021)", "frames": frames, "steps": len(steps),
              "network_evaluations_total": (2 + frames) * len(steps),
              "weights_of_b": [round(float(w), 6) for w in result.weights],
              "reconstruction_error": {"unit": "8-bit levels (0..255)",
                                       "a": {"max": int(error[0].max()), "mean": float(error[0].mean())},
                                       "b": {"max": int(error[1].max()), "mean": float(error[1].mean())}},
              **_common(run, a, label, r), "inputs": [a.names[0], b.names[0]], "fitted": f"a: {a.note}; b: {b.note}"}
    files = _write_samples(run, out, data, label, rows=1)
    strip = np.concatenate([ends[:1], data, ends[1:]])
    files += _write_picture(out / "interpolation.png", [("", strip)],
                            ["input a"] + [f"w = {w:.2f}" for w in result.weights.tolist()] + ["input b"], shown=len(strip))
    pictures.frames_gif(data, out / "interpolation.gif")
    files.append(out / "interpolation.gif")
    files += _write_record(out / "interpolation.json", record)
    return Edited(data, record, files)


def _one_class(request: SamplingRequest) -> SamplingRequest:
    """An edit's request: one class K for every image, or none."""
    if request.classes == ALL:
        raise UserError("--class all draws every class; an edit takes one class K (or none)")
    return request


def _common(run: Run, inputs: InputImages, labels: torch.Tensor | None, request: SamplingRequest) -> dict:
    """What every edit's record holds: the inputs, how they were fitted, the run, their labels and
    the sampling request as resolved."""
    record = {"inputs": inputs.names, "fitted": inputs.note, "run": str(run.directory)}
    if labels is not None:
        record["labels"] = labels.tolist()
    return {**record, "sampling": request.record(run)}


def _write_samples(run: Run, out: Path, data: np.ndarray, labels: torch.Tensor | None, rows: int | None = None) -> list[Path]:
    """What `ddpmkit sample` writes (sample_folder.write_samples: samples.npy, labels.npy when labelled) and samples.png."""
    files = write_samples(out, data, labels)
    pictures.image_grid(data, out / "samples.png", rows=rows)
    return [*files, out / "samples.png"]


def _write_picture(path: Path, rows: list[tuple[str, np.ndarray]], names: list[str], shown: int = SHOWN) -> list[Path]:
    pictures.image_rows([(label, images[:shown]) for label, images in rows], [n[-12:] for n in names[:shown]], path)
    return [path]


def _write_record(path: Path, record: dict) -> list[Path]:
    rundir.atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return [path]
