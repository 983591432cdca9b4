"""Negative log-likelihood of a run's held-out data in bits per dimension: the variational
bound (likelihood.vlb_bpd) or the probability-flow ODE's exact likelihood
(likelihood.ode_log_likelihood). Which examples and in which units is the modality's to say:
fresh points for 2-D data, the held-out images (8-bit, discrete) for image runs."""

from __future__ import annotations

import math

import torch

from ..denoiser import for_sampling
from ..errors import UserError, check_choice
from ..likelihood import lambda_grid, ode_log_likelihood, vlb_bpd
from ..sampling import Run
from .record import write_metrics

NLL_KINDS = ("vlb", "ode")


def check_ode_points(points: int) -> None:
    """--ode-points of the ODE likelihood (evaluate --nll ode, score --nll ode): at least 2 points of the λ grid."""
    if points < 2:
        raise UserError(f"--ode-points must be at least 2, got {points}")


def evaluate_nll(run: Run, num: int = 256, seed: int = 0, batch_size: int = 256, kind: str = "vlb", num_points: int = 100) -> dict:
    """NLL in bits/dim on `num` examples: fresh points for 2-D data (held out by
    construction); for images the first `num` of the images the run held out of training
    (`DataConfig.holdout`), or of its training images when it held none out. `kind`: "vlb",
    the variational bound; "ode", the exact likelihood of the probability-flow ODE on a grid
    of about `num_points` timesteps (images dequantised uniformly within their 8-bit bins).
    `nll_{kind}_steps` is the number of timesteps used: T for the bound, and for the ODE the
    distinct timesteps of `lambda_grid` (fewer than `num_points` where λ-spacing asks for
    the same step twice, e.g. 69 of 100 for the cosine schedule at T = 1000)."""
    check_choice("--nll", kind, NLL_KINDS)
    generator = torch.Generator().manual_seed(seed)
    examples = run.modality.likelihood_examples(num, seed)
    total = bits_per_dim(run, examples, kind, generator, batch_size=batch_size, num_points=num_points)
    steps = run.config.diffusion.num_steps if kind == "vlb" else len(lambda_grid(run.base.schedule, num_points))
    return {
        f"nll_{kind}_bpd": float(total.mean()),
        f"nll_{kind}_stderr": float(total.std() / len(total) ** 0.5) if len(total) > 1 else float("nan"),
        f"nll_{kind}_examples": len(total),
        f"nll_{kind}_unit": examples.units[kind],
        f"nll_{kind}_reference": examples.reference,
        f"nll_{kind}_steps": steps,
    }


def record_nll(run: Run, kinds: tuple[str, ...] = ("vlb",), num: int = 256, seed: int = 0, num_points: int = 100) -> list[dict]:
    """evaluate_nll by each of `kinds`, each record added to the run's metrics.json as it is measured."""
    results = []
    for kind in kinds:
        results.append(evaluate_nll(run, num, seed=seed, kind=kind, num_points=num_points))
        write_metrics(run.directory, results[-1])
    return results


def bits_per_dim(run: Run, examples, kind: str, generator: torch.Generator, *, batch_size: int = 256,
                 num_points: int = 100) -> torch.Tensor:
    """The NLL of each example [N] in bits/dim by `kind` (see evaluate_nll), float64 on the CPU;
    `examples`: a modality's LikelihoodExamples."""
    check_choice("--nll", kind, NLL_KINDS)
    totals = []
    if kind == "vlb":
        x0 = examples.model_space
        for i in range(0, len(x0), batch_size):
            batch = x0[i : i + batch_size].to(run.device)
            totals.append(vlb_bpd(run.denoiser, batch, discrete=run.modality.discrete, generator=generator).total)
    else:
        denoiser = for_sampling(run.base, run.config.num_classes, 0.0, "none")  # the ODE of the network itself
        x0, offset = examples.continuous(generator)
        dims = x0[0].numel()
        for i in range(0, len(x0), batch_size):
            ll = ode_log_likelihood(denoiser, x0[i : i + batch_size].to(run.device), num_points=num_points, generator=generator)
            totals.append(-ll.log_density / (dims * math.log(2)) + offset)
    return torch.cat(totals).double().cpu()
