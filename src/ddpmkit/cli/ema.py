"""`ddpmkit ema`: rebuild the EMA of another length from a --posthoc-ema run (post-hoc EMA,
Karras et al. 2024), or sweep several lengths by the run's quality measure."""

from __future__ import annotations

import time

from ..errors import UserError, check_positive
from ..posthoc_ema import SWEEP_SIGMA_RELS
from ..rundir import posthoc_weights_path
from .options import DEVICE_HELP, DefaultsUnlessNone, command


def add_ema(sub) -> None:
    """rebuild the EMA of another length after training (post-hoc EMA)

    Post-hoc EMA (Karras et al. 2024, EDM2): a run trained with --posthoc-ema keeps snapshots of
    two power-function EMA profiles in RUN/posthoc/. This rebuilds the EMA of relative width
    --sigma-rel (its standard deviation as a share of the training length) at the end of training as
    the least-squares combination of those snapshots, and writes RUN/ema-posthoc-S.safetensors. With
    --sweep it rebuilds each of several widths, measures each beside the classic EMA by the run's
    quick quality measure (images: Fréchet distance in the run's own features; 2-D: MMD² to fresh
    points) on samples from dpm++sde with 20 steps, writes the best one and records the sweep in
    RUN/metrics.json.
    """
    p = command(sub, "ema", add_ema, run=True, formatter_class=DefaultsUnlessNone)
    p.add_argument("--sigma-rel", metavar="S[,S...]", help="relative EMA width(s) in (0, 0.2887), e.g. 0.08 "
                   f"(with --sweep default: {','.join(f'{s:g}' for s in SWEEP_SIGMA_RELS)})")
    p.add_argument("--sweep", action="store_true", help="measure each width and the classic EMA; write the best")
    p.add_argument("-n", "--num-samples", type=int, default=1000, help="--sweep: samples measured per width")
    p.add_argument("--seed", type=int, default=0, help="--sweep: seed of the sampling noise (the same for every width)")
    p.add_argument("--device", help=DEVICE_HELP)


def _sigma_rels(text: str | None) -> list[float]:
    if text is None:
        return list(SWEEP_SIGMA_RELS)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--sigma-rel takes comma-separated numbers such as 0.08, got {text!r}") from None
    if not values:
        raise UserError("--sigma-rel needs at least one value, e.g. --sigma-rel 0.08")
    return values


def run_ema(args) -> int:
    from ..api import posthoc_ema, sweep_posthoc_ema

    started = time.perf_counter()
    if not args.sweep:
        if args.sigma_rel is None:
            raise UserError("give --sigma-rel S (e.g. 0.08), or --sweep to measure several widths")
        for r in posthoc_ema(args.run, _sigma_rels(args.sigma_rel)):
            print(f"σ_rel {r.sigma_rel:.3f} (γ = {r.gamma:.2f}) at step {r.step}: {len(r.coefficients)} snapshots combined, "
                  f"profile fit error {r.fit_error:.2e}; wrote {posthoc_weights_path(args.run, r.sigma_rel)}")
        print(f"{time.perf_counter() - started:.1f} s; sample or evaluate those weights with --weights PATH")
        return 0
    check_positive("--num-samples", args.num_samples)
    if args.num_samples < 2:
        raise UserError(f"--num-samples must be at least 2 for the quality measure, got {args.num_samples}")
    record = sweep_posthoc_ema(args.run, _sigma_rels(args.sigma_rel), num=args.num_samples, seed=args.seed,
                               device=args.device, report=print)
    best = next(row for row in record["results"] if row["sigma_rel"] == record["best_sigma_rel"])
    metric, classic = record["metric"], record["results"][0][record["metric"]]
    verdict = "better than" if record["best_beats_classic_ema"] else "not better than"
    print(f"best: σ_rel {record['best_sigma_rel']:.3f}, {metric} {best[metric]:.5f}, {verdict} the classic EMA's "
          f"{classic:.5f} ({record['measure']}; {record['num_samples']:,} samples, {record['samples']['sampler']} "
          f"{record['samples']['steps']} steps, seed {record['samples']['seed']})")
    print(f"{time.perf_counter() - started:.1f} s; wrote {record['written']} (sample or evaluate it with --weights PATH) "
          f"and the sweep to {args.run}/metrics.json (posthoc_ema_sweep)")
    return 0
