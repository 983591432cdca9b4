"""What several test modules share besides fixtures: tiny configs, trainers assembled by hand
through the public Trainer signature (to inject faults into the network the loss calls), and
checks of what a written picture holds."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddpmkit import api, build, rundir
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.data.images import to_model_space
from ddpmkit.distributed import World
from ddpmkit.nets.unet import UNetConfig
from ddpmkit.training import Trainer, diffusion
from ddpmkit.training.diffusion import DiffusionLoss

CPU = torch.device("cpu")

# `ddpmkit train` options of the tiny runs: seconds each on a 2-core CPU
TINY_TOY = ["--steps", "30", "--timesteps", "50", "--num-points", "500", "--batch-size", "64", "--log-every", "10",
            "--no-progress"]
TINY_IMAGES = ["--steps", "3", "--timesteps", "20", "--batch-size", "8", "--width", "8", "--no-progress",
               "--guide-at", "0"]  # no guide kept: the tiny runs sample their main model alone (test_autoguidance keeps one)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`ddpmkit ARGV` in this process: (exit code, what it printed, what it wrote to stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


# ---- tiny configs ------------------------------------------------------------------------------
def toy_config(steps=40, **train) -> RunConfig:
    """moons, 2,000 points, T = 100, a batch of 64, a log record every step."""
    c = api.default_config("moons")
    return dataclasses.replace(
        c,
        data=dataclasses.replace(c.data, num_points=2000),
        diffusion=dataclasses.replace(c.diffusion, num_steps=100),
        train=dataclasses.replace(c.train, steps=steps, batch_size=64, log_every=1, **train),
    )


def tiny_digits(steps=12, **train) -> RunConfig:
    """digits (10% held out), a U-Net of base width 8 with dropout, T = 50, a batch of 16, fp32
    (not the preset's auto, so that a test means the same on every CPU)."""
    c = api.default_config("digits")
    train = {"precision": "fp32", **train}
    return dataclasses.replace(
        c,
        net=UNetConfig(base_width=8, channel_mults=(1, 2), blocks_per_level=1, dropout=0.1, groups=4),
        diffusion=dataclasses.replace(c.diffusion, num_steps=50),
        train=dataclasses.replace(c.train, steps=steps, batch_size=16, warmup_steps=3, log_every=1, **train),
    )


def digits_config(steps: int, precision: str = "fp32") -> RunConfig:
    """digits, a U-Net of base width 16 without dropout, T = 50, a batch of 32, constant LR."""
    c = api.default_config("digits")
    return dataclasses.replace(
        c,
        net=UNetConfig(base_width=16, channel_mults=(1, 2), blocks_per_level=1, groups=8),
        diffusion=dataclasses.replace(c.diffusion, num_steps=50),
        train=dataclasses.replace(c.train, steps=steps, batch_size=32, warmup_steps=5, lr_decay="constant",
                                  log_every=1, precision=precision),
    )


def with_train(config: RunConfig, **train) -> RunConfig:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


# ---- trainers ------------------------------------------------------------------------------------
def faulty_trainer(config: RunConfig, run_dir: Path, wrap) -> Trainer:
    """A Trainer assembled through its public signature whose loss calls `wrap(net)` (under
    autocast and compiled as the config asks), while the Trainer holds, checkpoints and
    averages the plain `net`: the way to inject faults into the forward pass."""
    kind = build.modality(config)
    dataset, data = kind.load(config.seed)
    config = build.resolve_config(config, data)
    net = build.build_net(config)
    model = build.training_model(wrap(net), config, CPU, World())
    rundir.write_config(run_dir, config)
    kind = build.modality(config)
    return Trainer(config, net, DiffusionLoss(config, build.build_denoiser(config, model), kind.discrete), dataset, run_dir,
                   modality=kind, device=CPU, model=model, progress=False)


def hook_trainers(monkeypatch, hook) -> None:
    """Every Trainer that training.diffusion.trainer builds (api.train's, the CLI's) calls
    hook(trainer, step) after each optimiser step, through its public on_step hook: the way
    to stop training as a kill would, or to damage its weights, from outside."""
    build_trainer = diffusion.trainer

    def hooked(*args, **kwargs):
        trainer, config, dataset = build_trainer(*args, **kwargs)
        trainer.on_step = lambda step: hook(trainer, step)
        return trainer, config, dataset

    monkeypatch.setattr(diffusion, "trainer", hooked)


def stop_at(step: int, error: BaseException):
    """A hook_trainers hook that raises `error` once optimiser step `step` and what was due at it are done."""

    def hook(trainer, now: int) -> None:
        if now == step:
            raise error

    return hook


class FaultAt(torch.nn.Module):
    """Wraps a network; on the chosen forward calls (a set of 1-based call numbers, or "all")
    its output goes through `fault`."""

    def __init__(self, net, calls, fault):
        super().__init__()
        self.net, self.calls, self.fault, self.count = net, calls, fault, 0

    def forward(self, x, t, label=None):
        self.count += 1
        out = self.net(x, t) if label is None else self.net(x, t, label)
        return self.fault(out) if self.calls == "all" or self.count in self.calls else out


def NaNAt(net, calls):  # noqa: N802 - reads as the class it builds
    """A network whose output is NaN on the chosen forward calls."""
    return FaultAt(net, calls, lambda out: out * float("nan"))


class _InfGrad(torch.autograd.Function):
    """Identity forward; +inf gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


def InfGradAt(net, calls):  # noqa: N802 - reads as the class it builds
    """On the chosen forward calls the output is unchanged but its gradient is +inf: a finite
    loss whose backward overflows, as a too-high fp16 loss scale does."""
    return FaultAt(net, calls, _InfGrad.apply)


# ---- what files hold --------------------------------------------------------------------------------
def picture(path: Path, mode: str | None = None, size: tuple[int, int] | None = None) -> Image.Image:
    """The decoded image at `path` (fully loaded), checked for its mode and (width, height)."""
    with Image.open(path) as image:
        image.load()
        assert mode is None or image.mode == mode, (path, image.mode)
        assert size is None or image.size == size, (path, image.size)
        return image.copy()


def assert_drawn(path: Path, min_share: float = 0.002) -> Image.Image:
    """A figure (matplotlib PNG) that decodes and holds a drawing: at least `min_share` of its
    pixels are neither white nor the figure's one background colour."""
    image = picture(path).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3)
    drawn = (pixels < 230).any(axis=1).mean()
    assert drawn > min_share, (path, drawn)
    return image


def bluish_share(image: Image.Image) -> float:
    """Share of pixels coloured like the samples of a scatter (viz.POINT_STYLE's blue)."""
    p = np.asarray(image.convert("RGB")).astype(int)
    return float(((p[..., 2] - p[..., 0] > 40) & (p[..., 2] > 120)).mean())


def gif_frames(path: Path) -> int:
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        return gif.n_frames


def grid_tile(grid: Image.Image, index: int, tile: tuple[int, int], cols: int, scale: int, pad: int = 1) -> np.ndarray:
    """Tile `index` of a viz.image_grid picture, shrunk back by its `scale`: [h, w, C] uint8."""
    h, w = tile
    r, c = divmod(index, cols)
    y, x = (pad + r * (h + pad)) * scale, (pad + c * (w + pad)) * scale
    a = np.asarray(grid)
    a = a[..., None] if a.ndim == 2 else a
    return a[y : y + h * scale : scale, x : x + w * scale : scale]


def agreement(judge, images: np.ndarray, labels: np.ndarray | int) -> float:
    """The share of uint8 images [N, H, W, C] the judge (a features.OwnFeatures: its classifier
    network) classifies as `labels` (one per image, or one class for all)."""
    with torch.no_grad():
        predicted = judge.net(to_model_space(torch.from_numpy(images).permute(0, 3, 1, 2))).argmax(1).numpy()
    return float((predicted == labels).mean())


def one_line_error(err: str, pattern: str) -> None:
    """A CLI error: one line, no traceback, matching `pattern`."""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and re.search(pattern, err), err
