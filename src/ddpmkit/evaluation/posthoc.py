"""`ddpmkit ema --sweep`: post-hoc EMA reconstructions of several widths (posthoc_ema.py), each
measured by the run's quick quality measure (images: the Fréchet distance in the run's own
features; 2-D: MMD² to fresh points) on samples drawn as `ddpmkit sample` draws them (the
default sampling request), beside the classic EMA the run trained with."""

from __future__ import annotations

from collections.abc import Sequence

from ..checkpoint import load_matching
from ..posthoc_ema import Reconstruction, rebuild_ema, save_rebuilt_ema
from ..sampling import BALANCED, Run, SamplingRequest, draw
from .kinds import measures
from .record import write_metrics


def sweep_ema(run: Run, reconstructions: list[Reconstruction], *, num: int = 1000, seed: int = 0,
              report=lambda message: None) -> dict:
    """Measure the run's classic EMA (the weights `run` was loaded with) and each reconstruction
    on `num` samples of the same seeded noise (a conditional run's labels balanced over its
    classes); returns the record: the measure, how the samples were drawn, one row per
    candidate, and the best reconstruction's σ_rel (lower is better for both measures). The
    classic EMA is back in run.net when it returns."""
    what, measure, metric = measures(run.modality).quick_measure(run, report)
    request = SamplingRequest(seed=seed, classes=BALANCED).resolve(run)
    classic = {k: v.detach().clone() for k, v in run.net.state_dict().items()}
    candidates = [("classic EMA", None, None, classic)] + [
        (f"post-hoc σ_rel {r.sigma_rel:.3f}", r.sigma_rel, r.fit_error, r.weights) for r in reconstructions]
    report(f"{'weights':<22} {'profile fit error':>17} {metric:>18}")
    rows = []
    for name, sigma_rel, fit_error, weights in candidates:
        load_matching(run.net, weights, name)
        data = draw(run, num, request).data
        rows.append({"weights": name, "sigma_rel": sigma_rel, "fit_error": fit_error, **measure(data)})
        fit = "" if fit_error is None else f"{fit_error:.4f}"
        report(f"{name:<22} {fit:>17} {rows[-1][metric]:>18.5f}")
    best = min(rows[1:], key=lambda row: row[metric])
    load_matching(run.net, classic, "the classic EMA")
    return {"measure": what, "metric": metric, "lower_is_better": True, "num_samples": num,
            "samples": {k: v for k, v in request.record(run).items() if k != "weights"},  # the weights are the candidates
            "at_step": reconstructions[0].step, "results": rows, "best_sigma_rel": best["sigma_rel"],
            "best_beats_classic_ema": best[metric] < rows[0][metric]}


def sweep_and_keep(run: Run, sigma_rels: Sequence[float], *, num: int = 1000, seed: int = 0,
                   report=lambda message: None) -> dict:
    """`ddpmkit ema --sweep`: the EMA of each σ_rel rebuilt from the run's snapshots
    (posthoc_ema.rebuild_ema) and measured beside the classic EMA (sweep_ema); the best written
    as RUN/ema-posthoc-S.safetensors and the record to metrics.json ("posthoc_ema_sweep")."""
    built = rebuild_ema(run.directory, sigma_rels)
    record = sweep_ema(run, built, num=num, seed=seed, report=report)
    best = next(r for r in built if r.sigma_rel == record["best_sigma_rel"])
    record["written"] = str(save_rebuilt_ema(run.directory, best))
    write_metrics(run.directory, {"posthoc_ema_sweep": record})
    return record
