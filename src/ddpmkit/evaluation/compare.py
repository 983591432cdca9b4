"""compare-samplers: every sampler at every step count, measured by the run's quick quality
measure, with network evaluations and wall time per sample; everything else about how the samples
are drawn (seed, spacing, clipping, guidance, weights) is one sampling request for every cell."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from .. import pictures
from ..errors import UserError
from ..rundir import atomic_write_text
from ..sampling import Run, SamplingRequest, check_sampler, draw, network_evaluations
from .kinds import measures


def compare_samplers(run: Run, out: Path, *, samplers: list[str], steps: list[int], n: int,
                     request: SamplingRequest = SamplingRequest(), report=lambda m: None) -> list[dict]:
    """Sample with every sampler at every step count (the rest as `request` says); measure quality,
    NFE and wall time per sample; write out/compare.json, out/compare.png and print a table through
    `report`. Step counts above the run's T are dropped with a note (the default list goes to 1000)."""
    T = run.config.diffusion.num_steps
    for name in samplers:
        check_sampler(name, T, T)
    bad = [k for k in steps if k <= 0]
    if bad:
        raise UserError(f"--steps must be positive step counts, got {', '.join(map(str, bad))}")
    above = [k for k in steps if k > T]
    steps = [k for k in steps if k <= T]
    if not steps:
        raise UserError(f"every --steps count ({', '.join(map(str, above))}) is above the run's T = {T}; give counts in 1..{T}")
    if above:
        report(f"note: skipping --steps {', '.join(map(str, above))}: above the run's T = {T}")
    what, measure, metric = measures(run.modality).quick_measure(run, report)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    report(f"{'sampler':<8} {'steps':>5} {'NFE':>5} {metric:>18} {'ms/sample':>10}")
    cells = tqdm([(name, k) for name in samplers for k in steps], disable=not request.progress, unit="setting",
                 dynamic_ncols=True, desc="compare-samplers")
    for name, k in cells:
        cells.set_postfix_str(f"{name}, {k} steps")
        started = time.perf_counter()
        cell = dataclasses.replace(request, sampler=name, steps=k)
        data = draw(run, n, cell).data
        seconds = time.perf_counter() - started
        row = {"sampler": name, "steps": k, "nfe": network_evaluations(name, k),
               "ms_per_sample": 1000 * seconds / n, **measure(data)}
        if request.guidance.guide is not None or request.guidance.interval is not None:  # passes that differ by cell
            row.update({key: v for key, v in cell.record(run).items() if key in ("network_passes", "guide_passes")})
        results.append(row)
        with cells.external_write_mode():  # the table's row above the bar
            report(f"{name:<8} {k:>5} {row['nfe']:>5} {row[metric]:>18.5f} {row['ms_per_sample']:>10.2f}")
    cells.close()
    cell = dataclasses.replace(request, sampler=samplers[0], steps=steps[0])  # what every cell shares (a named sampler: no default guide)
    base = {k: v for k, v in cell.record(run).items()
            if k not in ("sampler", "steps", "nfe", "network_passes", "classifier_passes", "guide_passes", "grid")}
    base.get("guidance_interval", {}).pop("evaluations_inside", None)
    record = {"measure": what, "samples_per_setting": n, **base, "skipped_steps": above, "results": results}
    atomic_write_text(out / "compare.json", json.dumps(record, indent=2))
    pictures.sampler_comparison(results, metric, out / "compare.png", f"{run.config.data.name}: {what}, {n} samples each")
    return results
