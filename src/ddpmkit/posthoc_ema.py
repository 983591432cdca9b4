"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", EDM2: Sec. 3 and App. C): track a few power-function EMA profiles during
training, keep snapshots of them, and afterwards rebuild the EMA of any other length as a
least-squares combination of the snapshots.

Notation (App. C of the paper):
    t          -> t, training time: the number of EMA updates (optimiser steps) so far
    gamma      -> γ, the exponent of a power-function profile p_{t,γ}(τ) = (γ+1) τ^γ / t^(γ+1) on [0, t]
    sigma_rel  -> σ_rel, the profile's standard deviation relative to t (its width): Eq. 123
    beta       -> β_t = (1 − 1/t)^(γ+1), the per-update decay that tracks the profile: Eq. 127

Tracking is exact, not an approximation: with θ(τ) = θ_k on (k−1, k], the update
θ̂_t = β_t θ̂_{t−1} + (1 − β_t) θ_t gives θ_k the weight (k^(γ+1) − (k−1)^(γ+1)) / t^(γ+1) =
∫_{k−1}^{k} p_{t,γ}(τ) dτ, so the closed-form inner products between profiles below are those
of the weights the snapshots really hold.

`PowerEMA` is the tracking object (update / state_dict / load_state_dict, as ema.EMA), the rest
are pure functions but the last two: `rebuild_ema` (a run's snapshots, listed and read by
checkpoint.py, reconstructed) and `save_rebuilt_ema` (a rebuilt EMA written through checkpoint.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .checkpoint import Snapshot
from .errors import UserError
from .rundir import POSTHOC, posthoc_weights_path

DEFAULT_SIGMA_RELS = (0.05, 0.10)  # the two profiles EDM2 tracks (Sec. 3.2)
MAX_SIGMA_REL = math.sqrt(1 / 12)  # σ_rel of γ = 0, the plain average of every step's weights
SWEEP_SIGMA_RELS = (0.03, 0.05, 0.07, 0.10, 0.13, 0.16, 0.20, 0.25)  # `ddpmkit ema --sweep`'s default grid


def gamma_to_sigma_rel(gamma: float) -> float:
    """σ_rel = sqrt((γ+1) / ((γ+2)² (γ+3))) (Eq. 123)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The γ > 0 of a σ_rel in (0, sqrt(1/12)): the largest real root of
    γ³ + 7γ² + (16 − σ_rel⁻²) γ + (12 − σ_rel⁻²) = 0, Eq. 123 multiplied out (Eq. 126, Algorithm 2)."""
    check_sigma_rel(sigma_rel)
    s = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def check_sigma_rel(sigma_rel: float, option: str = "σ_rel") -> None:
    if not 0 < sigma_rel < MAX_SIGMA_REL:
        raise UserError(f"{option} must lie in (0, {MAX_SIGMA_REL:.4f}) (the width of the EMA relative to the training "
                        f"length; {MAX_SIGMA_REL:.4f} would be the plain average of all steps), got {sigma_rel!r}")


def power_beta(t: int, gamma: float) -> float:
    """β_t = (1 − 1/t)^(γ+1), the decay of update t = 1, 2, ... (Eq. 127 with a step of 1; β_1 = 0)."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


class PowerEMA:
    """Power-function EMAs of a network, one frozen copy per σ_rel (`models`), each updated
    with β_t = (1 − 1/t)^(γ+1) after every optimiser step (Sec. 3.1; EDM2 tracks 0.05 and 0.10).

    sigma_rels: the profiles' relative widths, each in (0, 0.2887), distinct.
    """

    def __init__(self, net: nn.Module, sigma_rels: Sequence[float] = DEFAULT_SIGMA_RELS):
        for s in sigma_rels:
            check_sigma_rel(s)
        if not sigma_rels or len(set(sigma_rels)) != len(sigma_rels):
            raise UserError(f"post-hoc EMA needs one or more distinct σ_rel, got {list(sigma_rels)}")
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)
        self.num_updates = 0  # t of the averages held
        self.models = [copy.deepcopy(net).eval().requires_grad_(False) for _ in self.sigma_rels]

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        t = self.num_updates + 1
        live = list(net.parameters())
        for gamma, model in zip(self.gammas, self.models):
            torch._foreach_lerp_(list(model.parameters()), live, 1.0 - power_beta(t, gamma))
            for ema_buf, buf in zip(model.buffers(), net.buffers()):
                ema_buf.copy_(buf)
        self.num_updates = t

    def state_dict(self) -> dict:
        """The counters; the averaged weights are `weights()` (a safetensors file of the checkpoint)."""
        return {"sigma_rels": list(self.sigma_rels), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        if tuple(float(s) for s in state["sigma_rels"]) != self.sigma_rels:
            raise UserError(f"the checkpoint tracks post-hoc EMA profiles σ_rel {state['sigma_rels']}, this run "
                            f"{list(self.sigma_rels)}; resume with the run's own config.json")
        self.num_updates = int(state["num_updates"])

    def weights(self) -> dict[str, torch.Tensor]:
        """Every profile's weights in one flat dict, profile i's under "i.<name>"."""
        return {f"{i}.{k}": v for i, model in enumerate(self.models) for k, v in model.state_dict().items()}

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        for i, model in enumerate(self.models):
            model.load_state_dict({k.partition(".")[2]: v for k, v in tensors.items() if k.partition(".")[0] == str(i)})


# ---- reconstruction ----------------------------------------------------------------------
def profile_inner_products(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """⟨p_{t_a,γ_a}, p_{t_b,γ_b}⟩ = ∫ p_a(τ) p_b(τ) dτ = (γ_a+1)(γ_b+1) m^(γ_a+γ_b+1) /
    ((γ_a+γ_b+1) t_a^(γ_a+1) t_b^(γ_b+1)) with m = min(t_a, t_b) (Eq. 151, Algorithm 3),
    written with the ratios m/t ≤ 1 so that no power overflows; broadcasts like numpy."""
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    m = np.minimum(t_a, t_b)
    return ((gamma_a + 1) * (gamma_b + 1) / (gamma_a + gamma_b + 1)
            * (m / t_a) ** (gamma_a + 1) * (m / t_b) ** (gamma_b + 1) / m)


def solve_coefficients(t_in, gamma_in, t_out, gamma_out) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares combination of the snapshot profiles (t_in [I], γ_in [I]) nearest each
    target profile (t_out [O], γ_out [O]) in L2 (Algorithm 3): X [I, O] solves A X = B with
    A = ⟨p_in, p_in⟩ and B = ⟨p_in, p_out⟩, each column then divided by its sum so the
    weights average to 1 (as EDM2 does). Also returns each target's relative fit error
    ‖Σ_i X_i p_i − p_out‖ / ‖p_out‖ [O] (0: the target is exactly a combination of snapshots)."""
    t_in, gamma_in = np.asarray(t_in, np.float64)[:, None], np.asarray(gamma_in, np.float64)[:, None]  # [I, 1]
    t_out, gamma_out = np.asarray(t_out, np.float64)[None, :], np.asarray(gamma_out, np.float64)[None, :]  # [1, O]
    A = profile_inner_products(t_in, gamma_in, t_in.T, gamma_in.T)  # [I, I]
    B = profile_inner_products(t_in, gamma_in, t_out, gamma_out)  # [I, O]
    X = np.linalg.lstsq(A, B, rcond=None)[0]  # least squares: tolerates two snapshots of one profile at one time
    X = X / X.sum(axis=0, keepdims=True)
    target = profile_inner_products(t_out, gamma_out, t_out, gamma_out)[0]  # [O]
    error = np.einsum("io,ij,jo->o", X, A, X) - 2 * np.einsum("io,io->o", X, B) + target
    return X, np.sqrt(np.maximum(error, 0.0) / target)


@dataclass
class Reconstruction:
    """The EMA of width `sigma_rel` at time t, rebuilt from snapshots."""

    sigma_rel: float
    gamma: float
    step: int
    t: int
    coefficients: dict[str, float]  # snapshot file name -> its weight
    fit_error: float  # relative L2 error of the combined profile (solve_coefficients)
    weights: dict[str, torch.Tensor]


def reconstruct(snapshots: Sequence[Snapshot], sigma_rels: Sequence[float],
                load: Callable[[Path], dict[str, torch.Tensor]]) -> list[Reconstruction]:
    """The EMA of each σ_rel at the time of the newest snapshot, Σ_i X_i θ̂_i over every snapshot
    (solve_coefficients), summed in float64 and cast back to the snapshots' dtypes. `load(path)`
    reads a snapshot's tensors; each snapshot is read once for all σ_rel. Tensors that are not
    floating point (e.g. counters in buffers) are the newest snapshot's."""
    if not snapshots:
        raise UserError("no post-hoc EMA snapshots to reconstruct from")
    for s in sigma_rels:
        check_sigma_rel(s, "--sigma-rel")
    newest = max(snapshots, key=lambda s: (s.t, s.step))
    gammas = [sigma_rel_to_gamma(s) for s in sigma_rels]
    X, errors = solve_coefficients([s.t for s in snapshots], [sigma_rel_to_gamma(s.sigma_rel) for s in snapshots],
                                   [newest.t] * len(sigma_rels), gammas)
    sums: list[dict[str, torch.Tensor]] = [{} for _ in sigma_rels]
    dtypes: dict[str, torch.dtype] = {}
    for i, snapshot in enumerate(snapshots):
        tensors = load(snapshot.path)
        for name, value in tensors.items():
            if not value.is_floating_point():
                continue
            dtypes[name] = value.dtype
            for r, total in enumerate(sums):
                term = value.double() * float(X[i, r])
                total[name] = term if name not in total else total[name].add_(term)
    rest = {k: v for k, v in load(newest.path).items() if not v.is_floating_point()}
    return [Reconstruction(sigma, gamma, newest.step, newest.t,
                           {s.path.name: float(X[i, r]) for i, s in enumerate(snapshots)}, float(errors[r]),
                           {**{k: v.to(dtypes[k]) for k, v in sums[r].items()}, **rest})
            for r, (sigma, gamma) in enumerate(zip(sigma_rels, gammas))]


def rebuild_ema(run_dir: Path, sigma_rels: Sequence[float]) -> list[Reconstruction]:
    """The EMA of each σ_rel at the end of a --posthoc-ema run, rebuilt (reconstruct) from the
    snapshots in its posthoc/ folder (checkpoint.snapshots); one line when it kept none."""
    run_dir = Path(run_dir)
    found = checkpoint.snapshots(run_dir)
    if not found:
        raise UserError(f"{run_dir} has no post-hoc EMA snapshots ({run_dir / POSTHOC} is empty or missing); "
                        "train the run with --posthoc-ema to keep them")
    return reconstruct(found, sigma_rels, checkpoint.load_weights)


def save_rebuilt_ema(run_dir: Path, rebuilt: Reconstruction) -> Path:
    """A rebuilt EMA as RUN/ema-posthoc-S.safetensors (rundir.posthoc_weights_path), what --weights PATH takes."""
    path = posthoc_weights_path(Path(run_dir), rebuilt.sigma_rel)
    checkpoint.save_weights(path, rebuilt.weights)
    return path
