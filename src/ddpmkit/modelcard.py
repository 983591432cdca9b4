"""The model card of an exported run: OUT/README.md, with Hugging Face's YAML front matter,
built from what the run recorded: its data (name, count, size, sha256), its training recipe
(config.json), every record of metrics.json with what makes it comparable, a sample grid
(OUT/samples.png) and how to load the model in ddpmkit and in diffusers.

Nothing here is typed in by hand: a number on the card is a number the run measured, so
an unmeasured run's card says so (diffusers #1021: unconditional cards came out empty)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from . import pictures
from .errors import UserError
from .evaluation.record import read_metrics
from .evaluation.reference import dataset_fingerprint
from .rundir import LOG, atomic_write_text
from .sampling import BALANCED, Run, SamplingRequest, draw

GRID = "samples.png"
GRID_SAMPLES = 16  # images on the card's grid, drawn as `ddpmkit sample` draws (balanced over a conditional run's classes)
# How to load an export in diffusers (README.md's "Share a model" holds the same lines; a test runs them).
DIFFUSERS_SNIPPET = """import torch
from diffusers import DDPMPipeline
pipe = DDPMPipeline.from_pretrained("{path}")  # the folder ddpmkit export wrote
out = pipe(batch_size=4, num_inference_steps=pipe.scheduler.config.num_train_timesteps, generator=torch.Generator().manual_seed(0))
out.images[0].save("sample.png")"""
# A class-conditional export: DDPMPipeline passes no labels, so the loop is written out.
CONDITIONAL_SNIPPET = """import torch
from diffusers import DDPMScheduler, UNet2DModel
unet = UNet2DModel.from_pretrained("{path}", subfolder="unet")
scheduler = DDPMScheduler.from_pretrained("{path}", subfolder="scheduler")
labels = torch.tensor([0, 1, 2, 3])  # class ids; {null} is the null label (the unconditional model)
g = torch.Generator().manual_seed(0)
x = torch.randn(len(labels), unet.config.in_channels, *{size}, generator=g)
scheduler.set_timesteps(scheduler.config.num_train_timesteps)
with torch.no_grad():
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t, class_labels=labels).sample, t, x, generator=g).prev_sample
images = (x / 2 + 0.5).clamp(0, 1)  # [N, C, H, W] in [0, 1]"""


def data_record(run: Run) -> dict:
    """Name, image count, size, channels, classes and sha256 of the images the run trained on,
    or the name alone (and why) when they cannot be read here."""
    data = run.config.data
    record = {"name": data.name, "image_size": list(data.image_size or ()), "channels": data.channels,
              "classes": data.num_classes}
    try:
        dataset, _ = run.modality.load(run.config.seed)
    except (UserError, OSError) as e:
        return {**record, "unavailable": str(e)}
    return {**record, "count": len(dataset), "sha256": dataset_fingerprint(dataset, np.arange(len(dataset)))}


def _quality_row(r: dict) -> str:
    s, f = r["samples"], r.get("features", {})
    fd = "FID" if f.get("name", "").startswith("inception") else "FD"
    kid = r.get("kid", {})
    copies = r.get("memorisation", {}).get("near_copy_fraction")
    cells = [f"{fd} {r['frechet_distance']:.4f}" if "frechet_distance" in r else "",
             f"{kid['mean']:.5f} ± {kid['std']:.5f}" if kid else "",
             f"{r['precision']:.3f}" if "precision" in r else "", f"{r['recall']:.3f}" if "recall" in r else "",
             f"{100 * copies:.1f}%" if copies is not None else "",
             f"{s['num']:,}", f"{s['sampler']}, {s['steps']} steps ({s['nfe']} NFE), seed {s['seed']}, {s['weights']}"
             + (f", guidance {s['guidance']:g}" if "guidance" in s else ""),
             f"{f.get('name', r['kind'])} (sha256 {str(f.get('sha256', ''))[:12]})" if f else r["kind"],
             r.get("reference", {}).get("what", "")]
    return "| " + " | ".join(cells) + " |"


def measurements(metrics: dict) -> list[str]:
    """Every record of metrics.json as markdown: the sample-quality records in one table, the
    scalar measurements (likelihoods, 2-D distances) in another, each with its settings."""
    if not metrics:
        return ["This run has no measurements yet: `ddpmkit evaluate --run RUN` (sample quality) and "
                "`ddpmkit evaluate --run RUN --nll both` (likelihood) record them in metrics.json; export again after."]
    lines = []
    quality = metrics.get("sample_quality", [])
    if quality:
        lines += ["Sample quality (`ddpmkit evaluate`); compare a number only with one of the same sample count, "
                  "sampler, steps, features and reference:", "",
                  "| Fréchet distance | KID | precision | recall | near-copies | samples | sampler | features | reference |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *map(_quality_row, quality), ""]
        lines += [f"- {r['note']}" for r in quality if "note" in r]
        lines.append("")
    scalars = {k: v for k, v in metrics.items() if k != "sample_quality"}
    if scalars:
        lines += ["Other measurements (likelihood in bits/dim with their terms and reference set; 2-D distances):", "",
                  "| measurement | value |", "| --- | --- |",
                  *(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {json.dumps(v)} |" for k, v in scalars.items()), ""]
    return lines


def diffusers_snippet(run: Run, path: str = "THIS_FOLDER") -> str:
    """How to sample the export in diffusers: DDPMPipeline, or the written-out loop for a
    class-conditional model (DDPMPipeline passes no class labels)."""
    if not run.config.num_classes:
        return DIFFUSERS_SNIPPET.format(path=path)
    h, w = run.config.data.image_size
    return CONDITIONAL_SNIPPET.format(path=path, null=run.config.num_classes, size=(h, w))


def weights_words(weights: str) -> str:
    """How the card names the weights of a request's record (sampling.WEIGHT_NAMES) or a path."""
    return {"EMA": "EMA", "live": "live (not averaged)"}.get(weights) or f"{Path(weights).name}'s"


def model_card(run: Run, data: dict, metrics: dict, grid: dict, *, license: str) -> str:
    """The card's markdown: front matter, data, recipe, measurements, samples (`grid`: how the grid
    was drawn, SamplingRequest.record), loading."""
    c = run.config
    weights = weights_words(grid["weights"])
    d, t = c.diffusion, c.train
    task = "class-conditional image generation" if c.num_classes else "unconditional image generation"
    size = "x".join(map(str, data["image_size"]))
    classes = f", {data['classes']} classes" if data["classes"] else ""
    if "unavailable" in data:
        data_line = f"- data: {data['name']}, {size} px, {data['channels']} channel(s) (not readable at export: {data['unavailable']})"
    else:
        data_line = (f"- data: {data['name']}, {data['count']:,} training images of {size} px, {data['channels']} channel(s)"
                     f"{classes}; data fingerprint (sha256 of the size, every image's bytes and the labels) `{data['sha256']}`")
    recipe = [
        f"- network: U-Net, base width {c.net.base_width}, channel multipliers {list(c.net.channel_mults)}, "
        f"{c.net.blocks_per_level} block(s) per level, attention at {list(c.net.attention_resolutions) or 'no level'}, "
        f"dropout {c.net.dropout:g}" + (f", {c.num_classes} classes plus a null label" if c.num_classes else ""),
        f"- diffusion: {d.schedule} schedule, T = {d.num_steps}, predicts {d.prediction}, variance {d.variance}, loss {d.loss}"
        + (f", min-SNR-γ {d.min_snr_gamma:g}" if d.min_snr_gamma else ""),
        f"- optimisation: {t.steps:,} steps of batch {t.batch_size}, AdamW lr {t.lr:g} ({t.lr_decay}, {t.warmup_steps} warm-up "
        f"steps), weight decay {t.weight_decay:g}, "
        + (f"power-function EMA σ_rel {t.ema_sigma_rel:g}" if t.ema_sigma_rel else f"EMA decay {t.ema_decay:g}")
        + f", {t.precision}, seed {c.seed}"
        if (run.directory / LOG).is_file() else
        "- optimisation: not recorded (the run was imported, not trained by ddpmkit: no log.jsonl)",
    ]
    lines = [
        "---", "library_name: diffusers", "pipeline_tag: unconditional-image-generation", f"license: {license}", "tags:",
        "- ddpmkit", "- diffusers", "- ddpm", f"- {task.replace(' ', '-')}", "---", "",
        f"# {Path(data['name']).name} — a DDPM trained with ddpmkit", "",
        f"A denoising diffusion model ({task}) trained and exported by ddpmkit; the folder is a diffusers "
        f"`DDPMPipeline` ({weights} weights).", "",
        "## Data", "", data_line, "",
        "## Training recipe", "",
        *recipe,
        "", "<details><summary>config.json</summary>", "", "```json", c.to_json(), "```", "", "</details>", "",
        "## Measurements", "", *measurements(metrics), "",
        "## Samples", "",
        f"![samples]({GRID})", "",
        f"{GRID_SAMPLES} samples drawn at export with {grid['sampler']}, {grid['steps']} steps, seed {grid['seed']}, "
        f"{weights} weights" + (f", autoguided by {grid['guide']} (W = {grid['autoguide_scale']:g}; the guide is not part "
                                "of the export: diffusers samples the main model alone)" if "autoguide" in grid else "")
        + ".", "",
        "## Use", "",
        "In diffusers (ancestral DDPM over all T steps, ddpmkit's `--sampler ddpm`; `DDIMPipeline` with "
        "`use_clipped_model_output=True` is ddpmkit's `--sampler ddim --spacing leading`):", "", "```python",
        diffusers_snippet(run), "```", "",
        "In ddpmkit: `ddpmkit import --from diffusers THIS_FOLDER --out RUN`, then `ddpmkit sample --run RUN`.", "",
        "Upload: `huggingface-cli upload USER/NAME THIS_FOLDER .`", "",
    ]
    return "\n".join(lines)


def write_card(run: Run, out: Path, request: SamplingRequest = SamplingRequest(), *, license: str) -> list[Path]:
    """OUT/samples.png (a grid drawn now as `request` says, balanced over a conditional run's
    classes) and OUT/README.md, the card of the run; returns both paths."""
    out = Path(out)
    request = dataclasses.replace(request, classes=BALANCED)
    samples = draw(run, GRID_SAMPLES, request)
    pictures.image_grid(samples.data, out / GRID)
    card = model_card(run, data_record(run), read_metrics(run.directory), request.record(run), license=license)
    atomic_write_text(out / "README.md", card)
    return [out / GRID, out / "README.md"]
