"""The Python API the CLI is a thin layer over: train a run, sample from it, draw it.

    from ddpmkit import api
    config = api.default_config("moons")
    result = api.train(config, "runs/moons")
    points = api.sample("runs/moons", 2000, "runs/moons/samples", seed=0)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint, distributed, metrics, process, viz
from ._tensor import append_dims, randn_like
from .build import (
    Run,
    build_denoiser,
    build_net,
    build_schedule,
    is_toy,
    load_data,
    load_heldout,
    load_run,
    pick_device,
    toy_dataset_from_config,
)
from .config import DataConfig, DiffusionConfig, RunConfig, TrainConfig
from .data.toy import toy_points
from .errors import UserError
from .nets.mlp import MLPConfig
from .nets.unet import UNetConfig, count_parameters
from .samplers import SAMPLERS, Trajectory
from .schedules import NoiseSchedule, timestep_grid
from .train import Trainer, TrainResult, read_log

PICTURE_STEPS = 10  # scatters in the forward / reverse strips
GIF_FRAMES = 40  # reverse-process frames in a GIF
GIF_IMAGES = 16  # images shown in an image GIF


def default_config(data: str = "digits") -> RunConfig:
    """Defaults that train well on a 2-core CPU: toy 2-D data in well under a minute."""
    if is_toy(data):
        return RunConfig(
            data=DataConfig(name=data),
            net=MLPConfig(),
            diffusion=DiffusionConfig(schedule="cosine", num_steps=1000),
            train=TrainConfig(steps=3000, batch_size=256, lr=1e-3, ema_decay=0.995, log_every=100),
        )
    if data == "digits":
        # 8x8 grey digits on a CPU: a 0.7M-parameter U-Net, two levels (8 -> 4 px).
        # 10% of the digits (180) stay out of training, for the held-out likelihood.
        return RunConfig(
            data=DataConfig(name=data, holdout=0.1),
            net=UNetConfig(base_width=32, channel_mults=(1, 2), blocks_per_level=1),
            diffusion=DiffusionConfig(schedule="cosine", num_steps=1000),
            train=TrainConfig(
                steps=3000, batch_size=128, lr=2e-3, warmup_steps=100, lr_decay="cosine", ema_decay=0.999,
                log_every=100, checkpoint_every=1000,
            ),
        )
    # A user's images (32-128 px) on a GPU: the DDPM CIFAR-10 layout, attention at 16 px.
    return RunConfig(
        data=DataConfig(name=data, hflip=True),
        net=UNetConfig(base_width=64, channel_mults=(1, 2, 2, 2), blocks_per_level=2, attention_resolutions=(16,), dropout=0.1),
        diffusion=DiffusionConfig(schedule="cosine", num_steps=1000),
        train=TrainConfig(
            steps=100_000, batch_size=64, lr=2e-4, warmup_steps=1000, ema_decay=0.9999,
            log_every=100, sample_every=5000, checkpoint_every=5000,
        ),
    )


# ---- training ---------------------------------------------------------------------------
def train(
    config: RunConfig,
    run_dir: Path | str,
    *,
    device: str | None = None,
    resume: bool = False,
    report=lambda message: None,
    progress: bool = True,
    pictures: bool = True,
) -> TrainResult:
    """Train `config` into `run_dir` (or continue it with resume=True) and, with `pictures`,
    draw the end-of-run pictures (samples, forward process, loss curve).

    Launched by torchrun with N processes, each process calls this: they train one model
    data-parallel (config.train.batch_size is the global batch) and rank 0 alone writes
    the run directory and reports; `device` "cuda" then means each rank's own GPU."""
    run_dir = Path(run_dir)
    if resume and checkpoint.newest_checkpoint(run_dir) is None:  # checked before anything is written
        raise UserError(f"{run_dir} has no complete checkpoint to resume from (training stopped before the first "
                        "one was written); start a new run with --out")
    with distributed.launch(device) as (world, dev):
        if not world.is_main:
            report = lambda message: None  # noqa: E731
        dataset, data = load_data(config.data, config.seed, report)
        config = _fit_net_to_data(dataclasses.replace(config, data=data))
        net = build_net(config)
        report(f"model: {type(net).__name__} with {count_parameters(net):,} parameters; data: {len(dataset):,} examples; device: {dev}")
        trainer = Trainer(
            config,
            net,
            dataset,
            run_dir,
            device=dev,
            prepare=_preparer(config, dev),
            augment=HFlip() if config.data.hflip else None,
            on_sample=lambda step, ema_net: _step_picture(config, ema_net, run_dir, step),
            report=report,
            progress=progress,
            world=world,
        )
        if resume:  # reads and checks the checkpoint (a clear error if it does not fit config.json)
            report(f"resuming from step {trainer.resume()}")
        # config.json is written once the options, the data and any checkpoint have been checked.
        world.barrier()  # every rank has looked at run_dir (the CLI checks it) before rank 0 writes into it
        if world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write_text(run_dir / "config.json", config.to_json())
        result = trainer.fit()
        trainer.close()  # before the process group goes
        if not world.is_main or not pictures:
            return result
    viz.loss_curve(read_log(run_dir / "log.jsonl"), run_dir / "loss.png")
    if config.is_toy:
        _toy_pictures(config, trainer.ema.model, dataset, run_dir)
    else:
        _image_pictures(config, trainer.ema.model, dataset, run_dir)
    return result


def _fit_net_to_data(config: RunConfig) -> RunConfig:
    """Set the network's data-dependent sizes (dims, channels, classes) from the data."""
    net = config.net
    if config.conditional and config.data.num_classes == 0:
        raise UserError(
            f"--conditional needs class labels, and {config.data.name} has none; use labelled data "
            "(digits, sub-folders of images, an .npz with labels, moons, circles or 8gaussians) or drop --conditional"
        )
    classes = config.data.num_classes if config.conditional else 0
    outputs = 2 if config.diffusion.variance == "learned_range" else 1  # mean and variance
    if config.is_toy:
        dim = len(config.data.mean)
        return dataclasses.replace(config, net=dataclasses.replace(net, dim=dim, out_dim=outputs * dim, num_classes=classes))
    channels, side = config.data.channels, min(config.data.image_size)
    levels = {side // 2**i for i in range(len(net.channel_mults))}  # feature-map sizes of the U-Net
    net = dataclasses.replace(
        net,
        in_channels=channels,
        out_channels=outputs * channels,
        image_size=side,
        num_classes=classes,
        # the preset's attention sizes (e.g. 16 px) apply where the data has such a level
        attention_resolutions=tuple(r for r in net.attention_resolutions if r in levels),
        linear_attention_resolutions=tuple(r for r in net.linear_attention_resolutions if r in levels),
    )
    net.check_image_size(*config.data.image_size)
    return dataclasses.replace(config, net=net)


def _preparer(config: RunConfig, device: torch.device):
    if config.is_toy:
        return lambda x: x.to(device)
    from .data.images import to_model_space

    return lambda x: to_model_space(x.to(device))


class HFlip:
    """Flip each image left-right with probability 1/2 (an Augmentation: the coin flips
    are drawn for the global batch, each rank applies its rows)."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=generator) < 0.5  # [n] bool

    def __call__(self, x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        return torch.where(append_dims(flip.to(x.device), x.ndim), x.flip(-1), x)


# ---- sampling -------------------------------------------------------------------------
@dataclass
class Samples:
    model: torch.Tensor  # [N, ...] in model space
    data: np.ndarray  # points [N, D] float in data space, or images [N, H, W, C] uint8
    trajectory: Trajectory | None


def draw(
    run: Run,
    n: int,
    *,
    seed: int = 0,
    sampler: str = "ddpm",
    steps: int | None = None,
    spacing: str = "linspace",
    keep: list[int] | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 0.0,
    clip: str | None = None,
    percentile: float = 0.995,
    batch_size: int = 4096,
    **sampler_options,
) -> Samples:
    """n samples from a loaded run, in model space and data space, on `steps` of the T
    trained timesteps (default: all T) chosen by `spacing` (linspace, leading or trailing). A conditional run takes `labels` [n] (None: unconditional)
    and a classifier-free `guidance` strength w (0: the plain conditional model).
    `clip`: static, dynamic (thresholding at `percentile`) or none; None is the run's
    default (static for images). `sampler_options` go to the sampler (e.g. eta=1.0 for ddim)."""
    check_labels(run.config, labels, guidance)
    if n <= 0:
        raise UserError(f"the number of samples must be positive, got {n}")
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if sampler_options.get("eta", 0) < 0:
        raise UserError(f"--eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like), got {sampler_options['eta']}")
    T = run.config.diffusion.num_steps
    if steps is not None and not 0 < steps <= T:
        raise UserError(f"--steps must lie in 1..{T} (the trained T), got {steps}")
    device = next(run.net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    trajectory = Trajectory(keep) if keep is not None else None
    grid = run.denoiser.schedule.full_grid() if steps is None else timestep_grid(T, steps, spacing)
    custom = guidance or clip is not None
    denoiser = build_denoiser(run.config, run.net, guidance, clip, percentile) if custom else run.denoiser
    chunks = []
    for start in range(0, n, batch_size):
        shape = run.sample_shape(min(batch_size, n - start))
        x_T = randn_like(torch.empty(shape, device=device), generator)
        label = None if labels is None else labels[start : start + shape[0]].to(device)
        callback = trajectory if start == 0 else None
        chunks.append(
            SAMPLERS[sampler](denoiser, x_T, grid, label=label, generator=generator, callback=callback, **sampler_options).cpu()
        )
    x = torch.cat(chunks)
    return Samples(x, to_data_space(run.config, x), trajectory)


def check_labels(config: RunConfig, labels: torch.Tensor | None, guidance: float) -> None:
    """Clear errors for labels or guidance a run cannot take."""
    if not config.num_classes:
        if labels is not None or guidance:
            raise UserError(f"{'--class' if labels is not None else '--guidance'} needs a conditional model; "
                            "this run was trained without --conditional")
        return
    if labels is not None and len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= config.num_classes):
        bad = int(labels.max()) if int(labels.max()) >= config.num_classes else int(labels.min())
        raise UserError(f"class {bad} is outside the trained labels 0..{config.num_classes - 1}")


def class_labels(config: RunConfig, which: str | None, n: int) -> torch.Tensor | None:
    """Labels for `--class`: None (unconditional), one class index, or "all" (n per class,
    class after class)."""
    if which is None:
        return None
    if which == "all":
        if not config.num_classes:
            raise UserError("--class needs a conditional model; this run was trained without --conditional")
        return torch.arange(config.num_classes).repeat_interleave(n)
    try:
        k = int(which)
    except ValueError:
        raise UserError(f"--class takes a class index or 'all', got {which!r}") from None
    labels = torch.full((n,), k, dtype=torch.long)
    check_labels(config, labels, 0.0)
    return labels


def to_data_space(config: RunConfig, x: torch.Tensor) -> np.ndarray:
    if config.is_toy:
        return toy_dataset_from_config(config.data).to_data_space(x)
    from .data.images import to_uint8

    return to_uint8(x).permute(0, 2, 3, 1).numpy()


def sample(
    run_dir: Path | str,
    n: int,
    out: Path | str,
    *,
    seed: int = 0,
    ema: bool = True,
    device: str | None = None,
    sampler: str = "ddpm",
    gif: bool = False,
    class_: str | None = None,
    guidance: float = 0.0,
    steps: int | None = None,
    spacing: str = "linspace",
    clip: str | None = None,
    percentile: float = 0.995,
    **sampler_options,
) -> np.ndarray:
    """Write out/samples.npy and out/samples.png (and out/reverse.gif) for a run; returns
    the data-space samples. `class_` is a class index or "all" (then n per class, a grid
    row per class, and labels.npy beside the samples)."""
    run = load_run(Path(run_dir), ema=ema, device=pick_device(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    T = run.config.diffusion.num_steps
    labels = class_labels(run.config, class_, n)
    check_labels(run.config, labels, guidance)
    n = n if labels is None else len(labels)
    keep = _picture_steps(T, GIF_FRAMES, steps, spacing) if gif else None
    samples = draw(run, n, seed=seed, sampler=sampler, steps=steps, spacing=spacing, keep=keep, labels=labels, guidance=guidance,
                   clip=clip, percentile=percentile, **sampler_options)
    if labels is not None:
        _save_npy(out / "labels.npy", labels.numpy())
    if gif:
        _reverse_gif(run.config, samples, out / "reverse.gif")
    _save_npy(out / "samples.npy", samples.data)
    if run.config.is_toy:
        reference, _ = toy_points(run.config.data.name, min(n, 5000), seed=_FRESH_SEED)
        viz.scatter(samples.data, out / "samples.png", f"{n} samples", reference=reference)
    else:
        rows = run.config.num_classes if class_ == "all" else None
        _save_grid(samples.data, out / "samples.png", rows=rows)
    return samples.data


def _save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically (through an open file: given a name, np.save would append .npy)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    checkpoint.atomic_write(path, write)


_FRESH_SEED = 10_000_019  # toy data for metrics is drawn with a seed no training run uses by default


def toy_distances(config: RunConfig, points: np.ndarray, seed: int = _FRESH_SEED) -> dict[str, float]:
    """MMD² (RBF, median bandwidth) and sliced Wasserstein between samples and fresh data,
    both in the normalised space so numbers compare across data sets."""
    fresh, _ = toy_points(config.data.name, len(points), seed=seed)
    ds = toy_dataset_from_config(config.data)
    a, b = (points - ds.mean) / ds.scale, (fresh - ds.mean) / ds.scale
    return {"mmd": metrics.mmd_rbf(a, b), "sliced_wasserstein": metrics.sliced_wasserstein(a, b)}


# ---- pictures ---------------------------------------------------------------------------
def _save_grid(images: np.ndarray, path: Path, rows: int | None = None) -> None:
    picture = viz.image_grid(images, rows=rows, scale=viz.grid_scale(images.shape[1], images.shape[2]))
    checkpoint.atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def _step_picture(config: RunConfig, ema_net: nn.Module, run_dir: Path, step: int) -> None:
    """Samples from the EMA network during training: samples/step-N.png."""
    was_training = ema_net.training
    run = Run(run_dir, config, ema_net.eval(), build_denoiser(config, ema_net))
    samples = draw(run, 1000 if config.is_toy else 64, seed=config.seed)
    (run_dir / "samples").mkdir(exist_ok=True)
    path = run_dir / "samples" / f"step-{step:08d}.png"
    if config.is_toy:
        viz.scatter(samples.data, path, f"step {step}")
    else:
        _save_grid(samples.data, path)
    ema_net.train(was_training)


def _picture_steps(T: int, count: int, steps: int | None = None, spacing: str = "linspace") -> list[int]:
    """About `count` timesteps, evenly spread over the sampling grid (all T, or `steps` of them)."""
    grid = torch.arange(T) if steps is None else timestep_grid(T, steps, spacing)
    return sorted({int(grid[int(round(v))]) for v in np.linspace(0, len(grid) - 1, count)})


def _toy_pictures(config: RunConfig, ema_net: nn.Module, dataset, run_dir: Path, n: int = 2000) -> None:
    """forward.png, reverse.png, diffusion.gif (forward then reverse) and samples.png,
    all in the normalised space the model sees."""
    T = config.diffusion.num_steps
    schedule = build_schedule(config)
    x0 = dataset.points[:n]
    generator = torch.Generator().manual_seed(config.seed)
    forward_t = _picture_steps(T, PICTURE_STEPS - 1)
    gif_t = _picture_steps(T, 24)

    def forward_frames(ts):
        noise = randn_like(x0, generator)  # one ε for every frame: each point drifts smoothly
        return [process.q_sample(schedule, x0, torch.full((len(x0),), t), noise).numpy() for t in ts]

    titles = lambda ts: [f"t = {t}" for t in ts]  # noqa: E731
    viz.scatter_strip([x0.numpy(), *forward_frames(forward_t)], ["data", *titles(forward_t)], run_dir / "forward.png")

    run = Run(run_dir, config, ema_net.eval(), build_denoiser(config, ema_net))
    samples = draw(run, len(x0), seed=config.seed, keep=sorted(set(forward_t) | set(gif_t)))
    traj = dict(zip(samples.trajectory.steps, samples.trajectory.xs))
    final = samples.model.numpy()
    rev_t = forward_t[::-1]
    viz.scatter_strip([traj[t].numpy() for t in rev_t] + [final], [*titles(rev_t), "samples"], run_dir / "reverse.png")
    frames = [x0.numpy(), *forward_frames(gif_t), *[traj[t].numpy() for t in gif_t[::-1]], final]
    names = ["data", *[f"forward t = {t}" for t in gif_t], *[f"reverse t = {t}" for t in gif_t[::-1]], "samples"]
    viz.scatter_gif(frames, names, run_dir / "diffusion.gif")
    viz.scatter(samples.data, run_dir / "samples.png", f"{len(x0)} samples (EMA)", reference=toy_dataset_from_config(config.data).to_data_space(x0))
    checkpoint.atomic_write_text(run_dir / "metrics.json", json.dumps(toy_distances(config, samples.data), indent=2))


def _image_pictures(config: RunConfig, ema_net: nn.Module, dataset, run_dir: Path, n: int = 64) -> None:
    """samples.png (a grid from the EMA weights) and forward.png (q(x_t) on a few training images)."""
    run = Run(run_dir, config, ema_net.eval(), build_denoiser(config, ema_net))
    _save_grid(draw(run, n, seed=config.seed).data, run_dir / "samples.png")
    first = torch.stack([dataset[i][0] for i in range(min(4, len(dataset)))])
    forward_table(first, [config.diffusion.schedule], config.diffusion.num_steps, run_dir / "forward.png", config.seed)


def forward_table(images_uint8: torch.Tensor, schedules: list[str], T: int, path: Path, seed: int = 0) -> None:
    """Rows of x_t ~ q(x_t | x_0) at PICTURE_STEPS values of t, for each image and schedule
    (the same ε for every schedule, so rows differ only by the schedule)."""
    from .data.images import to_model_space, to_uint8

    x0 = to_model_space(images_uint8)  # [K, C, H, W]
    noise = randn_like(x0, torch.Generator().manual_seed(seed))
    steps = _picture_steps(T, PICTURE_STEPS)
    rows, labels = [], []
    for name in schedules:
        sched = NoiseSchedule.from_name(name, T)
        frames = [process.q_sample(sched, x0, torch.full((len(x0),), t), noise) for t in steps]
        for k in range(len(x0)):
            rows.append([to_uint8(f[k : k + 1]).permute(0, 2, 3, 1)[0].numpy() for f in frames])
            labels.append(f"{name} #{k}")
    viz.image_table(rows, labels, [f"t = {t}" for t in steps], path)


def show_forward(data: str, out: Path | str, *, image_size=None, channels: int | None = None, num_images: int = 4, T: int = 1000, seed: int = 0) -> None:
    """Draw the forward process on a few images of `data` for the linear and cosine schedules."""
    if is_toy(data):
        raise UserError(f"show-forward draws images; for 2-D data such as {data} see forward.png in a training run")
    dataset, _ = load_data(DataConfig(name=data, image_size=image_size, channels=channels), seed)
    first = torch.stack([dataset[i][0] for i in range(min(num_images, len(dataset)))])
    forward_table(first, ["linear", "cosine"], T, Path(out), seed)


def _reverse_gif(config: RunConfig, samples: Samples, path: Path) -> None:
    """The reverse process: x_t (left) beside the predicted x̂_0 (right) for images; the
    moving point cloud for 2-D data."""
    traj = samples.trajectory
    if config.is_toy:
        frames = [x.numpy() for x in traj.xs] + [samples.model.numpy()]
        viz.scatter_gif(frames, [f"t = {t}" for t in traj.steps] + ["samples"], path)
        return
    from .data.images import to_uint8

    as_images = lambda x: to_uint8(x[:GIF_IMAGES]).permute(0, 2, 3, 1).numpy()  # noqa: E731
    final = as_images(samples.model)
    viz.side_by_side_gif([*map(as_images, traj.xs), final], [*map(as_images, traj.x0s), final], path)


# ---- evaluation ---------------------------------------------------------------------------
def evaluate_nll(run: Run, num: int = 256, seed: int = 0, batch_size: int = 256, kind: str = "vlb", num_points: int = 100) -> dict:
    """NLL in bits/dim on `num` examples: fresh points for 2-D data (held out by
    construction); for images the first `num` of the images the run held out of training
    (`DataConfig.holdout`), or of its training images when it held none out. `kind`: "vlb",
    the variational bound; "ode", the exact likelihood of the probability-flow ODE on a grid
    of about `num_points` timesteps (images dequantised uniformly within their 8-bit bins).
    `nll_{kind}_steps` is the number of timesteps used: T for the bound, and for the ODE the
    distinct timesteps of `lambda_grid` (fewer than `num_points` where λ-spacing asks for
    the same step twice, e.g. 69 of 100 for the cosine schedule at T = 1000)."""
    from .likelihood import lambda_grid, ode_log_likelihood, vlb_bpd

    if kind not in ("vlb", "ode"):
        raise UserError(f"unknown --nll {kind!r}; choose vlb or ode")
    device = next(run.net.parameters()).device
    if run.config.is_toy:
        ds = toy_dataset_from_config(run.config.data)
        points, _ = toy_points(run.config.data.name, num, seed=_FRESH_SEED + seed)
        x0 = torch.from_numpy((points - ds.mean) / ds.scale).float()
        reference = f"{num} fresh {run.config.data.name} points (held out)"
    else:
        dataset = load_heldout(run.config.data)
        if dataset is not None:
            what = f"held-out images of {run.config.data.name} (never trained on)"
        else:
            dataset, _ = load_data(run.config.data, run.config.seed)
            what = f"training images of {run.config.data.name} (the run held none out: train with --holdout to measure unseen images)"
        num = min(num, len(dataset))
        images = dataset.batch(range(num))[0]
        reference = f"the first {num} {what}"
    generator = torch.Generator().manual_seed(seed)
    if kind == "vlb":
        if not run.config.is_toy:
            from .data.images import to_model_space

            x0 = to_model_space(images)
        totals = [
            vlb_bpd(run.denoiser, x0[i : i + batch_size].to(device), discrete=not run.config.is_toy, generator=generator).total
            for i in range(0, len(x0), batch_size)
        ]
        steps = run.config.diffusion.num_steps
    else:
        denoiser = build_denoiser(run.config, run.net, clip="none")  # the ODE of the network itself
        if run.config.is_toy:
            x0, offset = x0, 0.0
        else:  # uniform dequantisation within the bin of width 2/255 around each 8-bit value
            x0 = (images.double() + torch.rand(images.shape, generator=generator, dtype=torch.float64) - 0.5) / 127.5 - 1
            x0, offset = x0.float(), math.log2(127.5)  # P(bin) ≈ p(x)·(2/255)^D
        dims = x0[0].numel()
        totals = []
        for i in range(0, len(x0), batch_size):
            ll = ode_log_likelihood(denoiser, x0[i : i + batch_size].to(device), num_points=num_points, generator=generator)
            totals.append(-ll.log_density / (dims * math.log(2)) + offset)
        steps = len(lambda_grid(denoiser.schedule, num_points))
    total = torch.cat(totals)
    unit = "bits/dim of the density (may be negative)" if run.config.is_toy else (
        "bits/dim (discretised 8-bit decoder)" if kind == "vlb" else "bits/dim (uniformly dequantised 8-bit data)")
    return {
        f"nll_{kind}_bpd": float(total.mean()),
        f"nll_{kind}_stderr": float(total.std() / len(total) ** 0.5) if len(total) > 1 else float("nan"),
        f"nll_{kind}_examples": len(total),
        f"nll_{kind}_unit": unit,
        f"nll_{kind}_reference": reference,
        f"nll_{kind}_steps": steps,
    }


def write_metrics(run_dir: Path, new: dict) -> dict:
    """Merge `new` into run_dir/metrics.json (atomically) and return the whole record."""
    path = Path(run_dir) / "metrics.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(new)
    checkpoint.atomic_write_text(path, json.dumps(record, indent=2))
    return record


def network_evaluations(sampler: str, steps: int) -> int:
    """Network evaluations per sample (NFE, denoiser calls): one per step, except Heun's corrector (2n − 2)."""
    return max(2 * steps - 2, 1) if sampler == "heun" else steps


def network_passes(sampler: str, steps: int, guidance: float = 0.0) -> int:
    """Rows of a sample the network runs through: the NFE, doubled under classifier-free
    guidance w ≠ 0 (each evaluation runs the conditional and the unconditional pass as one batch)."""
    return network_evaluations(sampler, steps) * (2 if guidance else 1)


def quality_measure(run: Run, report=lambda message: None):
    """(what is measured, function data-space samples -> {metric: value}, the metric to plot).
    2-D runs: MMD² and sliced Wasserstein to fresh points. Image runs: the Fréchet distance in
    the run's own features (trained on its data on first use, saved in RUN/features/) to the
    whole data set, plus the own classifier's confidence and class entropy where it has labels."""
    if run.config.is_toy:
        return "distance to fresh points", lambda data: toy_distances(run.config, data), "mmd"
    from .evaluation import image_reference, quick_scores

    reference = image_reference(run, "own", report=report)
    what = f"Fréchet distance in {reference.extractor.name} features (sha256 {reference.extractor.sha256[:12]}) to {reference.description['what']}"
    return what, lambda data: quick_scores(reference, data), "frechet_distance"


def compare_samplers(
    run: Run, out: Path, *, samplers: list[str], steps: list[int], n: int, seed: int = 0, spacing: str = "linspace",
    report=lambda m: None,
) -> list[dict]:
    """Sample with every sampler at every step count; measure quality, NFE and wall time per
    sample; write out/compare.json, out/compare.png and print a table through `report`.
    Step counts above the run's T are dropped with a note (the default list goes to 1000)."""
    import time

    for name in samplers:
        if name not in SAMPLERS:
            raise UserError(f"unknown sampler {name!r}; choose from: {', '.join(SAMPLERS)}")
    T = run.config.diffusion.num_steps
    bad = [k for k in steps if k <= 0]
    if bad:
        raise UserError(f"--steps must be positive step counts, got {', '.join(map(str, bad))}")
    above = [k for k in steps if k > T]
    steps = [k for k in steps if k <= T]
    if not steps:
        raise UserError(f"every --steps count ({', '.join(map(str, above))}) is above the run's T = {T}; give counts in 1..{T}")
    if above:
        report(f"note: skipping --steps {', '.join(map(str, above))}: above the run's T = {T}")
    what, measure, metric = quality_measure(run, report)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    report(f"{'sampler':<8} {'steps':>5} {'NFE':>5} {metric:>18} {'ms/sample':>10}")
    for name in samplers:
        for k in steps:
            started = time.perf_counter()
            data = draw(run, n, seed=seed, sampler=name, steps=k, spacing=spacing).data
            seconds = time.perf_counter() - started
            row = {"sampler": name, "steps": k, "nfe": network_evaluations(name, k),
                   "ms_per_sample": 1000 * seconds / n, **measure(data)}
            results.append(row)
            report(f"{name:<8} {k:>5} {row['nfe']:>5} {row[metric]:>18.5f} {row['ms_per_sample']:>10.2f}")
    record = {"measure": what, "samples_per_setting": n, "seed": seed, "spacing": spacing, "skipped_steps": above,
              "results": results}
    checkpoint.atomic_write_text(out / "compare.json", json.dumps(record, indent=2))
    viz.quality_vs_steps(results, metric, out / "compare.png", f"{run.config.data.name}: {what}, {n} samples each")
    return results
