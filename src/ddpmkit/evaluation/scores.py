"""Per-image likelihood scores: how well a run's model explains each of a user's images, in
bits/dim (the variational bound or the probability-flow ODE's likelihood, evaluation/nll.py),
beside the same score of the run's held-out images, the reference that says what "usual" is.

A score far above the held-out range flags an image the model finds unlike its training data;
far below flags one it finds unusually simple (a known trait of likelihoods: Nalisnick et al.
2019, "Do Deep Generative Models Know What They Don't Know?"). Both are flagged.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import pictures
from ..data.inputs import InputImages
from ..errors import UserError, check_choice, check_positive
from ..rundir import atomic_write_text, check_output, save_npy
from ..sampling import WEIGHT_NAMES, Run
from .nll import NLL_KINDS, bits_per_dim, check_ode_points

REFERENCE_PERCENTILES = (5, 50, 95)  # the held-out range: an image outside the 5th..95th percentile is flagged


@dataclass(frozen=True)
class ScoreSettings:
    """How `ddpmkit score` scores images (each setting is recorded beside the scores)."""

    kind: str = "vlb"  # vlb: the variational bound, all T terms; ode: the probability-flow ODE's likelihood
    num_reference: int = 256  # held-out images scored as the reference
    seed: int = 0  # the noise of each bound term (and the ODE's dequantisation and trace estimate)
    ode_points: int = 100  # ode: timesteps asked for on the ODE grid
    weights: str = "ema"  # best, last, ema, model or a .safetensors path

    def __post_init__(self) -> None:
        check_choice("--nll", self.kind, NLL_KINDS)
        check_positive("--num-reference", self.num_reference)
        check_ode_points(self.ode_points)


@dataclass
class Scores:
    """Each image's bits/dim, sorted worst (highest) first, with the held-out reference."""

    names: list[str]  # in the sorted order
    bpd: np.ndarray  # [N] bits/dim, descending
    order: np.ndarray  # [N] the input index of each row
    percentile: np.ndarray  # [N] share (%) of the held-out images that score at most this much
    flags: list[str]  # "high" (above the 95th percentile), "low" (below the 5th) or ""
    reference: dict  # kind, unit, which images, how many, median, p5, p95


def score_images(run: Run, inputs: InputImages, settings: ScoreSettings = ScoreSettings(), batch_size: int = 512) -> Scores:
    """Bits/dim of every input and of the first `settings.num_reference` held-out images of the run
    (its training images when it held none out), each by `settings.kind` with noise seeded by its seed."""
    kind, seed, ode_points = settings.kind, settings.seed, settings.ode_points
    reference = run.modality.likelihood_examples(settings.num_reference, seed)
    examples = run.modality.examples_of(inputs.images, f"{len(inputs.images)} images")
    both = bits_per_dim(run, reference.then(examples), kind, torch.Generator().manual_seed(seed), batch_size=batch_size,
                        num_points=ode_points).numpy()  # one pass over both: one network call per timestep
    ref, bpd = both[: len(reference.model_space)], both[len(reference.model_space) :]
    p5, median, p95 = np.percentile(ref, REFERENCE_PERCENTILES)
    order = np.argsort(-bpd, kind="stable")
    sorted_bpd = bpd[order]
    return Scores(
        names=[inputs.names[i] for i in order],
        bpd=sorted_bpd,
        order=order,
        percentile=np.array([100.0 * float((ref <= v).mean()) for v in sorted_bpd]),
        flags=["high" if v > p95 else "low" if v < p5 else "" for v in sorted_bpd],
        reference={"kind": kind, "unit": reference.units[kind], "images": reference.reference, "num": len(ref),
                   "median": float(median), "p5": float(p5), "p95": float(p95), "mean": float(ref.mean()),
                   "seed": seed, **({"ode_points": ode_points} if kind == "ode" else {})},
    )


def write_scores(scores: Scores, path: Path, settings: dict) -> Path:
    """path (.csv: rank, name, bits_per_dim, heldout_percentile, flag; worst first) and beside it
    path.json (the reference distribution, the settings and the flagged counts); returns the .json."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "name", "bits_per_dim", "heldout_percentile", "flag"])
    for rank, (name, v, pct, flag) in enumerate(zip(scores.names, scores.bpd, scores.percentile, scores.flags), 1):
        writer.writerow([rank, name, f"{v:.5f}", f"{pct:.1f}", flag])
    atomic_write_text(path, buffer.getvalue())
    record = {"order": "worst (highest bits/dim) first", "reference": scores.reference, **settings,
              "num_images": len(scores.names), "flagged_high": scores.flags.count("high"),
              "flagged_low": scores.flags.count("low"), "flag_rule": "high: above the held-out 95th percentile; "
              "low: below its 5th"}
    json_path = path.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    return json_path


def check_out(out: Path) -> None:
    """score's --out: a .csv file that can be written (rundir.check_output)."""
    if out.suffix != ".csv":
        raise UserError(f"--out is the .csv file of the scores; give a name ending in .csv, not {out.name!r}")
    check_output(out)


def score_into(run: Run, inputs: InputImages, out: Path, settings: ScoreSettings = ScoreSettings()) -> Scores:
    """`ddpmkit score`: the inputs scored (score_images) into `out` (.csv, worst first) and beside it
    the .json (write_scores), a .png of the images in that order (pictures.score_grid) and a .npy of
    them as scored ([N, H, W, C] uint8, sample's layout)."""
    scores = score_images(run, inputs, settings)
    out.parent.mkdir(parents=True, exist_ok=True)  # once every check has passed
    write_scores(scores, out, {"run": str(run.directory), "weights": WEIGHT_NAMES.get(settings.weights, settings.weights),
                               "fitted": inputs.note})
    scored = inputs.images[torch.from_numpy(scores.order)].permute(0, 2, 3, 1).numpy()  # [N, H, W, C], worst first
    save_npy(out.with_suffix(".npy"), scored)
    pictures.score_grid(scored, scores.bpd, scores.flags, out.with_suffix(".png"))
    return scores
