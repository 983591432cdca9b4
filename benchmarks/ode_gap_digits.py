"""Where the digits ODE's gap to the stochastic samplers comes from (issue 31 item 4, second half).

On the default digits run the deterministic samplers score far worse than the stochastic ones
(DDIM or dpm++ on 64 steps against dpm++sde on 20). Each row below removes one suspect, on the
same run, the same noise (sampling seed 0) and 1,000 samples, measured in the run's own features
against the 1,617 training digits as benchmarks/guidance_digits.py measures (FD, precision and
recall at 1,000; P180 and R180 at the held-out set's size):

- the EMA: the raw weights (RUN/model.safetensors) instead of the EMA, ODE and stochastic;
- the first step from t = T − 1, where the cosine schedule's ᾱ is 2.4·10⁻⁹ (the 2-D defect):
  `--spacing leading` (its grid never visits t = 999), and the ODE without clipping x̂₀;
- where along the grid the ODE loses: DDIM on 64 steps, η = 1 (ancestral-like noise) for the
  first k steps and η = 0 (the ODE) after, and the reverse, for k = 4, 8, 16, 32, 48;
- the ODE's own discretisation: DDIM on 256 steps.

    python benchmarks/ode_gap_digits.py --run RUN --out ode_gap.jsonl      # about 25 min on one thread

Rows already in --out for the run are not measured again; the table is printed from --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ddpmkit._tensor import randn_like
from ddpmkit.build import load_run
from ddpmkit.evaluation import image_reference
from ddpmkit.evaluation.quality import nhwc_to_nchw
from ddpmkit.samplers import ddim
from ddpmkit.sampling import SamplingRequest, denoiser, draw, grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guidance_digits import measure  # noqa: E402  (one measure for both benchmarks)

N = 1000


def ddim_hybrid(run, steps: int, eta_at, *, spacing: str = "linspace", clip: str | None = None, seed: int = 0):
    """DDIM (Eq. 12 of Song et al. 2021) down `steps` of the grid with η = eta_at(i) at the i-th step: N samples, data space."""
    r = SamplingRequest(sampler="ddim", steps=steps, seed=seed, spacing=spacing, **({"clip": clip} if clip else {})).resolve(run)
    model, timesteps = denoiser(run, r), grid(run, r)
    generator = torch.Generator().manual_seed(seed)
    x = randn_like(torch.empty(run.modality.sample_shape(N)), generator)
    for i, t in enumerate(timesteps.tolist()):
        s = int(timesteps[i + 1]) if i + 1 < len(timesteps) else None
        x, _ = ddim.step(model, x, t, s, generator=generator, eta=eta_at(i))
    return run.modality.to_data_space(x)


def rows(ema, raw) -> list[tuple[str, object]]:
    """(label, function drawing N samples) of every row, the baselines first."""
    sde = lambda run: (lambda: draw(run, N, SamplingRequest(sampler="dpm++sde", steps=20, seed=0)).data)  # noqa: E731
    table = [("EMA, dpm++sde 20", sde(ema)),
             ("EMA, DDIM 64, η=0 (the ODE)", lambda: ddim_hybrid(ema, 64, lambda i: 0.0)),
             ("EMA, DDIM 64, η=1", lambda: ddim_hybrid(ema, 64, lambda i: 1.0)),
             ("raw weights, DDIM 64, η=0 (the ODE)", lambda: ddim_hybrid(raw, 64, lambda i: 0.0)),
             ("raw weights, DDIM 64, η=1", lambda: ddim_hybrid(raw, 64, lambda i: 1.0)),
             ("raw weights, dpm++sde 20", sde(raw))]
    for k in (4, 8, 16, 32, 48):
        table.append((f"EMA, DDIM 64: η=1 for the first {k} steps, then the ODE", lambda k=k: ddim_hybrid(ema, 64, lambda i: float(i < k))))
        table.append((f"EMA, DDIM 64: the ODE for the first {k} steps, then η=1", lambda k=k: ddim_hybrid(ema, 64, lambda i: float(i >= k))))
    table += [("EMA, DDIM 64, η=0, --spacing leading (no t = 999)", lambda: ddim_hybrid(ema, 64, lambda i: 0.0, spacing="leading")),
              ("EMA, DDIM 64, η=0, --clip none", lambda: ddim_hybrid(ema, 64, lambda i: 0.0, clip="none")),
              ("EMA, DDIM 256, η=0 (the ODE)", lambda: ddim_hybrid(ema, 256, lambda i: 0.0))]
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a default digits run (ddpmkit train)")
    p.add_argument("--out", type=Path, default=Path("ode_gap_digits.jsonl"), help="the rows measured (JSON lines)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.is_file() else []
    measured = {d["row"] for d in done if d["run"] == str(args.run)}
    ema, raw = load_run(args.run, "ema"), load_run(args.run, "model")
    reference = image_reference(ema, "own", report=print)
    for label, draw_rows in rows(ema, raw):
        if label in measured:
            continue
        t0 = time.perf_counter()
        data = draw_rows()
        line = {"run": str(args.run), "row": label, **measure(reference, reference.extractor.features(nhwc_to_nchw(data))),
                "seconds": round(time.perf_counter() - t0, 1)}
        done.append(line)
        with args.out.open("a") as f:
            f.write(json.dumps(line) + "\n")
    print(f"\n{args.run}: 1,000 samples of sampling seed 0, own features\n")
    print("| row | FD | P | R | P180 | R180 |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for d in done:
        if d["run"] == str(args.run):
            print(f"| {d['row']} | {d['FD']:.3f} | {d['P']:.3f} | {d['R']:.3f} | {d['P180']:.3f} | {d['R180']:.3f} |")


if __name__ == "__main__":
    main()
