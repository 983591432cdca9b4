"""What kind of data a run models, 2-D points or images, and everything about the data that
differs between them.

`modality_for(data)` is the one place that decides the kind, from the data set's name (the
toy sets' names are points, everything else is images). The object it returns, a `Kind`,
answers the questions about data whose answer depends on the kind: how the data load and which
network shape they need; how a batch enters the model's space and samples leave it (points:
normalised by the training set's mean and scale; images: uint8 ↔ [-1, 1]); the sample shape;
whether the data are 8-bit discrete (the bound's decoder); the default clipping of x̂_0; the
likelihood's examples and units; and its `kind` name, by which measuring (evaluation/) and
drawing (pictures.py) choose what applies. What only images can do (a user's own images and
masks, the noise-aware classifier's shape, feature statistics, PNG folders) is Images' alone,
and `images_only` is the one place that refuses it for points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from . import presets
from .config import DataConfig, RunConfig
from .data import holdout_split
from .data.formats import described, find
from .data.images import dequantise, load_image_data, to_model_space, to_uint8
from .data.inputs import InputImages, read_inputs, read_mask
from .data.toy import (
    FRESH_SEED,
    TOY_CLASSES,
    TOY_DATASETS,
    PointDataset,
    canonical_toy_name,
    denormalise,
    normalisation,
    normalise,
    toy_points,
)
from .errors import UserError
from .nets.classifier import ClassifierConfig
from .nets.mlp import GatedMLPConfig, MLPConfig

TOY_NETS = {"mlp": MLPConfig, "gated-mlp": GatedMLPConfig}  # --net choices of 2-D data
UNET_OPTIONS = ("channel_mults", "blocks_per_level", "block", "attention_res", "linear_attention_res", "heads", "dropout", "groups")


class Kind(Protocol):
    """What both kinds of data answer (Points, Images); what only images do is Images' alone."""

    kind: str  # "points" or "images": how measuring and drawing choose what applies
    data: DataConfig
    discrete: bool  # 8-bit data: the bound's L_0 is the discretised decoder
    default_clip: str  # how x̂_0 is kept in range when a request does not say
    step_samples: int  # samples in each steps/step-N.png
    eval_samples: int  # samples each --eval-every measurement draws (by default)

    def preset(self) -> RunConfig: ...
    def network(self, name: str): ...
    def refuse_options(self, given: set[str]) -> None: ...
    def load(self, seed: int, report=None) -> tuple: ...
    def fit_net(self, net, outputs: int, classes: int, report=lambda message: None): ...
    def to_model_space(self, batch: torch.Tensor) -> torch.Tensor: ...
    def to_data_space(self, x: torch.Tensor) -> np.ndarray: ...
    def sample_shape(self, n: int) -> tuple[int, ...]: ...
    def likelihood_examples(self, num: int, seed: int) -> LikelihoodExamples: ...


def images_only(kind: Kind, what: str, instead: str = "") -> Images:
    """`kind` as Images for what only images can do (`what`: "edit", "--png-dir", ...), or the one
    line that refuses it for 2-D data (`instead`: what such a run offers, if anything)."""
    if isinstance(kind, Images):
        return kind
    raise UserError(f"{what} needs an image run: {kind.data.name} is 2-D data" + (f"; {instead}" if instead else ""))


def modality_for(data: DataConfig | str) -> Points | Images:
    """The modality of a data set (a DataConfig or just its name): THE place that decides
    whether a run is 2-D points or images."""
    data = data if isinstance(data, DataConfig) else DataConfig(name=str(data))
    return Points(data) if canonical_toy_name(data.name) else Images(data)


def plan_levels(channel_mults: tuple[int, ...], height: int, width: int, smallest: int = 4) -> tuple[int, ...]:
    """The first L of `channel_mults`, L the most levels (each halving the size) that the image
    fits: both sides divisible by 2^(L-1) and the last level at least `smallest` px (or one
    level). 28 px: 28 → 14 → 7 (three levels); 32 and 64 px keep four."""
    levels = 1
    while levels < len(channel_mults):
        factor = 2**levels
        if height % factor or width % factor or min(height, width) // factor < smallest:
            break
        levels += 1
    return tuple(channel_mults[:levels])


def fit_attention(full: tuple[int, ...], linear: tuple[int, ...], levels: list[int],
                  report=lambda message: None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Attention sizes (full, linear) on the U-Net's `levels` (px): a size that is a level stays;
    one that is not moves to the nearest level (in octaves; the smaller on a tie) that has no
    attention yet, or is dropped when every level has; each move or drop said through `report`."""
    taken = {r for r in (*full, *linear) if r in levels}
    out: dict[str, list[int]] = {"full": [r for r in full if r in levels], "linear": [r for r in linear if r in levels]}
    for kind, asked in (("full", full), ("linear", linear)):
        for r in asked:
            if r in levels:
                continue
            free = sorted((abs(np.log2(level / r)), level) for level in levels if level not in taken)
            what = "attention" if kind == "full" else "linear attention"
            if free:
                level = free[0][1]
                taken.add(level)
                out[kind].append(level)
                report(f"{what} at {r} px moved to {level} px: the U-Net's levels are {', '.join(map(str, levels))} px")
            else:
                report(f"{what} at {r} px dropped: every level of the U-Net has attention already")
    return tuple(sorted(out["full"], reverse=True)), tuple(sorted(out["linear"], reverse=True))


@dataclass
class LikelihoodExamples:
    """The examples a likelihood is measured on, as the bound and the ODE each take them."""

    model_space: torch.Tensor  # [N, ...] in model space: what the variational bound scores
    continuous: Callable[[torch.Generator], tuple[torch.Tensor, float]]  # → (examples for the ODE, log2 offset per dim)
    reference: str  # which examples, for the record
    units: dict[str, str]  # "vlb" / "ode" → the unit of the number

    def then(self, other: LikelihoodExamples) -> LikelihoodExamples:
        """These examples followed by `other`'s (of the same kind), to be scored in one pass."""
        def continuous(generator: torch.Generator) -> tuple[torch.Tensor, float]:
            (a, offset), (b, _) = self.continuous(generator), other.continuous(generator)
            return torch.cat([a, b]), offset

        return LikelihoodExamples(torch.cat([self.model_space, other.model_space]), continuous,
                                  f"{self.reference}, then {other.reference}", self.units)


class Points:
    """2-D (any D) points drawn from a toy generator, normalised to zero mean and unit scale."""

    kind = "points"
    discrete = False  # continuous data: the bound's decoder is a Gaussian density
    default_clip = "none"  # no known range to keep x̂_0 in
    step_samples = 1000  # points in each steps/step-N.png
    eval_samples = 2000  # points each --eval-every measurement draws (by default)

    def __init__(self, data: DataConfig):
        self.data = data

    def preset(self) -> RunConfig:
        return presets.points(self.data.name)

    # ---- options and data ----
    def network(self, name: str):
        """The network config class of `--net NAME`."""
        if name not in TOY_NETS:
            raise UserError(f"--net {name!r} is not available for {self.data.name}; 2-D data takes: {', '.join(TOY_NETS)}")
        return TOY_NETS[name]

    def refuse_options(self, given: set[str]) -> None:
        """One line for CLI options (argparse names) that shape what 2-D runs do not have."""
        if "grad_checkpoint" in given:
            raise UserError("--grad-checkpoint applies to the U-Net of image data, not to the 2-D networks")
        if "holdout" in given:
            raise UserError("--holdout applies to image data; 2-D runs are scored on fresh points, so drop it")
        unet = [o for o in UNET_OPTIONS if o in given]
        if unet:
            names = ", ".join("--" + o.replace("_", "-") for o in unet)
            raise UserError(f"{names} shape the U-Net of image data; 2-D data uses --net and --width")

    def load(self, seed: int, report=None) -> tuple[PointDataset, DataConfig]:
        """Draw the training points; the returned config records their normalisation."""
        name = canonical_toy_name(self.data.name)
        points, labels = toy_points(name, self.data.num_points, seed, self.data.toy_noise)
        mean, scale = normalisation(points)
        resolved = dataclasses.replace(
            self.data, name=name, mean=tuple(float(m) for m in mean), scale=scale, num_classes=TOY_CLASSES.get(name, 0))
        return PointDataset(points, labels, mean, scale), resolved

    def fit_net(self, net, outputs: int, classes: int, report=lambda message: None):
        """The network config sized for the data: D inputs, outputs·D outputs, the classes."""
        dim = len(self.data.mean)
        return dataclasses.replace(net, dim=dim, out_dim=outputs * dim, num_classes=classes)

    # ---- model space ----
    def to_model_space(self, batch: torch.Tensor) -> torch.Tensor:
        return batch  # drawn normalised already

    def to_data_space(self, x: torch.Tensor) -> np.ndarray:
        return denormalise(x, self.data.mean, self.data.scale)

    def sample_shape(self, n: int) -> tuple[int, ...]:
        return (n, len(self.data.mean))

    # ---- likelihood ----
    def likelihood_examples(self, num: int, seed: int) -> LikelihoodExamples:
        """`num` fresh points (held out by construction), seeded apart from the quality reference."""
        points = toy_points(self.data.name, num, seed=FRESH_SEED + seed, noise=self.data.toy_noise)[0]
        x0 = torch.from_numpy(normalise(points, self.data.mean, self.data.scale)).float()
        unit = "bits/dim of the density (may be negative)"
        return LikelihoodExamples(x0, lambda generator: (x0, 0.0), f"{num} fresh {self.data.name} points (held out)",
                                  {"vlb": unit, "ode": unit})


class Images:
    """Images of any size and 1-4 channels, stored as uint8 and modelled in [-1, 1]."""

    kind = "images"
    discrete = True  # 8-bit data: the bound's L_0 is the discretised decoder
    default_clip = "static"  # x̂_0 is kept in the known range [-1, 1]
    step_samples = 64  # images in each steps/step-N.png grid
    eval_samples = 1000  # images each --eval-every measurement draws (by default)

    def __init__(self, data: DataConfig):
        self.data = data

    def preset(self) -> RunConfig:
        return presets.digits() if self.data.name == "digits" else presets.images(self.data.name)

    # ---- options and data ----
    def network(self, name: str):
        raise UserError(f"--net {name!r} is not available for {self.data.name}; 2-D data takes: {', '.join(TOY_NETS)}")

    def refuse_options(self, given: set[str]) -> None:
        """Image runs take every option but the 2-D sets' noise."""
        if "toy_noise" in given:
            raise UserError(f"--toy-noise sets the noise of the 2-D toy sets ({', '.join(TOY_DATASETS)}); {self.data.name} is image data")

    def load(self, seed: int, report=None, part: str = "train"):
        """The image data set (`part` "train": the images trained on; "heldout": those
        `data.holdout` keeps out of training) and a config recording its resolved size,
        channels and classes. `report`: where a one-line note on skipped unreadable files
        goes (None: a warning). The images do not depend on `seed`."""
        name = self.data.name
        if find(name) is None and not Path(name).expanduser().exists():
            raise UserError(f"unknown dataset {name!r} (and no such file or folder); choose one of: "
                            f"{', '.join(TOY_DATASETS)} (2-D toy sets), {described()}")
        dataset = load_image_data(name, image_size=self.data.image_size, channels=self.data.channels, report=report)
        resolved = dataclasses.replace(
            self.data, image_size=tuple(dataset.image_size), channels=dataset.channels, num_classes=dataset.num_classes)
        if self.data.holdout > 0:
            train, heldout = holdout_split(len(dataset), self.data.holdout)
            dataset = dataset.subset(train if part == "train" else heldout)
        return dataset, resolved

    def load_heldout(self):
        """The images the run held out of training (`--holdout`), or None when it held out none
        (decided from the config, before any image is read)."""
        return self.load(0, part="heldout")[0] if self.data.holdout > 0 else None

    def fit_net(self, net, outputs: int, classes: int, report=lambda message: None):
        """The U-Net config sized for the data: its channels, size and classes. The preset's
        levels are a plan the image size trims (plan_levels: 28 px gets 28 → 14 → 7 where the
        preset's four levels need multiples of 8), said in one line through `report`; levels
        that differ from the preset's (--channel-mults) are kept and checked. An attention size
        that is no level of the plan moves to the nearest free level, or is dropped when none is
        free, and `report` says which (fit_attention)."""
        channels, (height, width) = self.data.channels, self.data.image_size
        mults = net.channel_mults
        if mults == self.preset().net.channel_mults:
            mults = plan_levels(mults, height, width)
            if mults != net.channel_mults:
                sizes = [min(height, width) // 2**i for i in range(len(mults))]
                report(f"U-Net levels for {height}x{width} images: {' → '.join(map(str, sizes))} px (channel mults "
                       f"{','.join(map(str, mults))}; the preset's {','.join(map(str, net.channel_mults))} needs sides "
                       f"divisible by {2 ** (len(net.channel_mults) - 1)})")
        side = min(height, width)
        levels = [side // 2**i for i in range(len(mults))]  # feature-map sizes of the U-Net
        full, linear = fit_attention(net.attention_resolutions, net.linear_attention_resolutions, levels, report)
        net = dataclasses.replace(
            net, in_channels=channels, out_channels=outputs * channels, image_size=side, num_classes=classes,
            channel_mults=mults, attention_resolutions=full, linear_attention_resolutions=linear,
        )
        net.check_image_size(height, width)
        return net

    def fit_classifier(self, config: RunConfig, options: dict) -> ClassifierConfig:
        """The noise-aware classifier of a run: the encoder half of the run's own U-Net shape
        (width, levels, blocks, attention) for its channels, size and classes, with `options`
        (ClassifierConfig fields) in place of those; refused for data without labels."""
        if not self.data.num_classes:
            raise UserError(f"train-classifier needs class labels and {self.data.name} has none; train the run on labelled "
                            "data (digits, an .npz with a 'labels' array, or a folder of class sub-folders)")
        net = config.net
        shape = {"base_width": net.base_width, "channel_mults": net.channel_mults, "blocks_per_level": net.blocks_per_level,
                 "block": net.block, "attention_resolutions": net.attention_resolutions,
                 "attention_heads": net.attention_heads, "groups": net.groups}
        return ClassifierConfig(in_channels=self.data.channels, num_classes=self.data.num_classes,
                                image_size=min(self.data.image_size), **{**shape, **options})

    # ---- model space ----
    def to_model_space(self, batch: torch.Tensor) -> torch.Tensor:
        return to_model_space(batch)

    def to_data_space(self, x: torch.Tensor) -> np.ndarray:
        return to_uint8(x).permute(0, 2, 3, 1).numpy()  # [N, H, W, C] uint8

    def sample_shape(self, n: int) -> tuple[int, ...]:
        h, w = self.data.image_size
        return (n, self.data.channels, h, w)

    # ---- likelihood ----
    def likelihood_examples(self, num: int, seed: int) -> LikelihoodExamples:
        """The first `num` held-out images, or training images when the run held none out."""
        dataset = self.load_heldout()
        name = self.data.name
        if dataset is not None:
            what = f"held-out images of {name} (never trained on)"
        else:
            dataset, _ = self.load(0)
            what = f"training images of {name} (the run held none out: train with --holdout to measure unseen images)"
        num = min(num, len(dataset))
        return self.examples_of(dataset.batch(range(num))[0], f"the first {num} {what}")

    def examples_of(self, images: torch.Tensor, what: str) -> LikelihoodExamples:
        """uint8 images [N, C, H, W] as the likelihoods take them (`what`: which images, for the record)."""
        return LikelihoodExamples(to_model_space(images), lambda generator: dequantise(images, generator), what,
                                  {"vlb": "bits/dim (discretised 8-bit decoder)", "ode": "bits/dim (uniformly dequantised 8-bit data)"})

    # ---- a user's own images (edit, inpaint, interpolate, score) ----
    def read_inputs(self, spec, option: str = "--input") -> InputImages:
        """A user's image file, folder or array fitted exactly as this run's training images
        (data.inputs.read_inputs); a grey image for a colour run, or the other way round, is refused."""
        return read_inputs(spec, self.data.image_size, self.data.channels, option)

    def read_mask(self, path, inputs: InputImages) -> torch.Tensor:
        """inpaint's mask (white: fill in) of the inputs' size, fitted as they are: bool [1, 1, H, W]."""
        return read_mask(path, inputs, self.data.image_size)
