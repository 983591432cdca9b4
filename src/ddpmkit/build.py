"""The only place that maps names (strings) to objects: data sets, networks,
schedules and denoisers from a RunConfig, and runs rebuilt from their directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .config import DataConfig, RunConfig
from .data.toy import TOY_CLASSES, TOY_DATASETS, PointDataset, canonical_toy_name, normalisation, toy_points
from .denoiser import CLIPS, ClippedDenoiser, Denoiser, DenoiserLike, GuidedDenoiser
from .errors import UserError
from .nets.mlp import MLP, GatedMLP, GatedMLPConfig, MLPConfig
from .nets.unet import UNet, UNetConfig
from .schedules import NoiseSchedule

NETS: dict[type, type[nn.Module]] = {MLPConfig: MLP, GatedMLPConfig: GatedMLP, UNetConfig: UNet}


def is_toy(data_name: str) -> bool:
    return canonical_toy_name(data_name) is not None


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA, then Apple MPS, then CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but CUDA is not available here; use --device cpu")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UserError("--device mps was asked for but Apple MPS is not available here; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ---- data -----------------------------------------------------------------------------
def load_toy(data: DataConfig, seed: int) -> tuple[PointDataset, DataConfig]:
    """Draw the training points; records their normalisation in the returned config."""
    name = canonical_toy_name(data.name)
    points, labels = toy_points(name, data.num_points, seed)
    mean, scale = normalisation(points)
    dataset = PointDataset(points, labels, mean, scale)
    resolved = dataclasses.replace(
        data, name=name, mean=tuple(float(m) for m in mean), scale=scale, num_classes=TOY_CLASSES.get(name, 0)
    )
    return dataset, resolved


HOLDOUT_SEED = 0  # one split per data set, whatever the run's seed: held-out scores compare across runs


def holdout_split(n: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices, each sorted: round(share·n) images chosen by a fixed
    seeded permutation are held out; at least one is kept for training."""
    if share <= 0:
        return np.arange(n), np.arange(0)
    held = min(max(1, round(share * n)), n - 1)
    if held <= 0:
        raise UserError(f"--holdout {share} leaves no image to train on: the data set has {n} image(s); use --holdout 0")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def load_images(data: DataConfig, part: str = "train", report=None):
    """The image data set (`part` "train": the images trained on; "heldout": those
    `data.holdout` keeps out of training, see load_heldout) and a config recording its
    resolved size, channels and classes. `report`: where a one-line note on skipped
    unreadable files goes (None: a warning)."""
    from .data.images import load_image_data

    dataset = load_image_data(data.name, image_size=data.image_size, channels=data.channels, report=report)
    resolved = dataclasses.replace(
        data, image_size=tuple(dataset.image_size), channels=dataset.channels, num_classes=dataset.num_classes
    )
    if data.holdout > 0:
        train, heldout = holdout_split(len(dataset), data.holdout)
        dataset = dataset.subset(train if part == "train" else heldout)
    return dataset, resolved


def load_heldout(data: DataConfig):
    """The images a run held out of training (`--holdout`), or None when it held out none
    (decided from the config, before any image is read)."""
    if data.holdout <= 0:
        return None
    return load_images(data, part="heldout")[0]


def load_data(data: DataConfig, seed: int, report=None):
    if is_toy(data.name):
        return load_toy(data, seed)
    if data.name != "digits" and not data.name.startswith("hf:") and not Path(data.name).exists():
        raise UserError(
            f"unknown dataset {data.name!r} (and no such file or folder); choose one of: "
            f"{', '.join(TOY_DATASETS)}, digits, a folder of images, a .npy/.npz file, or hf:NAME"
        )
    return load_images(data, report=report)


def toy_dataset_from_config(data: DataConfig) -> PointDataset:
    """An empty PointDataset carrying a run's normalisation (to map samples to data space)."""
    return PointDataset(np.zeros((0, len(data.mean)), np.float32), None, np.array(data.mean), data.scale)


# ---- model ---------------------------------------------------------------------------
def build_net(config: RunConfig) -> nn.Module:
    """The network of a config, its initial weights drawn from the run's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return NETS[type(config.net)](config.net)


def build_schedule(config: RunConfig) -> NoiseSchedule:
    return NoiseSchedule.from_name(config.diffusion.schedule, config.diffusion.num_steps)


def build_denoiser(
    config: RunConfig, net: nn.Module, guidance: float = 0.0, clip: str | None = None, percentile: float = 0.995
) -> DenoiserLike:
    """The denoiser for sampling: classifier-free guidance of strength `guidance` for a
    conditional model, then x̂_0 kept in range: `clip` static, dynamic (Imagen's thresholding
    at `percentile`) or none; default static for images (known range [-1, 1]), none for 2-D data."""
    denoiser: DenoiserLike = Denoiser(net, build_schedule(config), config.diffusion.prediction, config.diffusion.variance)
    if config.num_classes:
        denoiser = GuidedDenoiser(denoiser, guidance, null_label=config.num_classes)
    clip = clip or ("none" if config.is_toy else "static")
    if clip not in CLIPS:
        raise UserError(f"unknown clipping {clip!r}; choose one of: {', '.join(CLIPS)}")
    return denoiser if clip == "none" else ClippedDenoiser(denoiser, clip, percentile)


@dataclass
class Run:
    """A trained run loaded back from its directory."""

    directory: Path
    config: RunConfig
    net: nn.Module
    denoiser: DenoiserLike

    def sample_shape(self, n: int) -> tuple[int, ...]:
        if self.config.is_toy:
            return (n, self.config.net.dim)
        h, w = self.config.data.image_size
        return (n, self.config.data.channels, h, w)


def load_run(run_dir: Path, ema: bool = True, device: torch.device | None = None) -> Run:
    """Rebuild a run's network from config.json and load its (EMA) weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass the --out directory of a finished training run")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{run_dir} has no config.json, so it is not a ddpmkit run; pass the --out directory of ddpmkit train")
    config = RunConfig.load(config_path)
    net = build_net(config)
    path = run_dir / ("ema.safetensors" if ema else "model.safetensors")
    checkpoint.load_matching(net, checkpoint.load_weights(path), path)
    net = net.to(device or torch.device("cpu")).eval().requires_grad_(False)
    return Run(run_dir, config, net, build_denoiser(config, net))
