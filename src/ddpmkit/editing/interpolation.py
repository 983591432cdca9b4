"""Interpolation between two images through the deterministic DDIM latents: each image is
inverted to x_T with DDIM at η = 0 (Sec. 4.3 and 5.4 of Song et al. 2021, "Denoising Diffusion
Implicit Models"), the latents are interpolated spherically (slerp, Shoemake 1985, as DDIM's
Sec. 5.4 does: Gaussian latents concentrate on a sphere, where a straight line would leave
it), and every frame is decoded with the same DDIM grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._tensor import append_dims
from ..denoiser import DenoiserLike
from ..errors import UserError
from ..samplers import Callback, ddim

# The interpolation's own sampling default (sampler, steps; None: all T): deterministic DDIM both ways over every step,
# since the inversion is exact only as the steps grow.
INTERPOLATION = ("ddim", None)


def slerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of a [1, ...] and b [1, ...] at weights w [K] in [0, 1] → [K, ...]:
    sin((1 − w)θ)/sin θ·a + sin(wθ)/sin θ·b, θ the angle between a and b (flattened); the straight
    line where θ is below 1e-4 rad (there both are the same)."""
    af, bf = a.flatten().double(), b.flatten().double()
    cos = (af @ bf / (af.norm() * bf.norm())).clamp(-1, 1)
    theta = torch.arccos(cos)
    w = w.double().to(a.device)
    if float(theta) < 1e-4:
        ca, cb = 1 - w, w
    else:
        ca, cb = torch.sin((1 - w) * theta) / torch.sin(theta), torch.sin(w * theta) / torch.sin(theta)
    ca, cb = append_dims(ca, a.ndim).to(a.dtype), append_dims(cb, a.ndim).to(a.dtype)
    return ca * a + cb * b


@dataclass
class Interpolation:
    frames: torch.Tensor  # [K, ...] decoded frames in model space, frames[0] ≈ a, frames[-1] ≈ b
    latents: torch.Tensor  # [K, ...] the slerped x_T each frame decodes
    weights: torch.Tensor  # [K] the interpolation weight of b in each frame
    reconstructions: torch.Tensor  # [2, ...] decode(invert(a)), decode(invert(b)): the endpoints


@torch.no_grad()
def interpolate(
    denoiser: DenoiserLike,
    a: torch.Tensor,
    b: torch.Tensor,
    frames: int,
    timesteps: torch.Tensor,
    *,
    label: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> Interpolation:
    """`frames` images from a [1, ...] to b [1, ...] (model space) through their DDIM latents on
    the descending `timesteps` (`label` [1]: a conditional run's class, for both). Deterministic;
    the first and the last frame are the endpoints' reconstructions (their error measures how
    closely inversion and decoding invert each other for this model and grid). `callback`: told of
    every step, the inversion's and then the decoding's (the sampler's protocol)."""
    if frames < 2:
        raise UserError(f"--frames must be at least 2 (the two endpoints), got {frames}")
    pair = torch.cat([a, b])
    pair_label = None if label is None else label.repeat(2)
    latent_a, latent_b = ddim.invert(denoiser, pair, timesteps, label=pair_label, callback=callback).chunk(2)
    weights = torch.linspace(0, 1, frames, dtype=torch.float64)
    latents = slerp(latent_a, latent_b, weights)
    frame_label = None if label is None else label.repeat(frames)
    decoded = ddim.sample(denoiser, latents, timesteps, label=frame_label, callback=callback)
    return Interpolation(decoded, latents, weights, decoded[[0, -1]])
