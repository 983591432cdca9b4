"""How long the main job must train: the default recipe at several lengths beside the old default,
over training seeds (issue 31 item 5's fallback, decision 1 of the brief).

For each length N in --steps and each training seed S in --seeds, `ddpmkit train --seed S --steps N`
(this checkout's defaults otherwise: the digits recipe of presets.digits, whose cosine decay and
power-function EMA follow N) into ROOT/sN-S; with --old, the old default too (`ddpmkit train --seed S`
of commit 580b258: 3,000 steps with the classic EMA 0.999, run from that commit's own src/) into
ROOT/old-S. Trainings run --parallel at a time with one torch thread each (only their quality is
compared here, not their time: benchmarks/main_job_digits.py times the default side by side).

Every run is then measured as `sample` draws by default (dpm++sde, 20 steps, the EMA weights):
3 sampling seeds (1000-1002) × 1,000 samples in the run's own features (the conv classifier
`ddpmkit evaluate` uses; one classifier and one reference, the 1,617 training digits, for every
run), FD, precision and recall at 1,000, and P180 / R180 at the 180 held-out digits' set size,
whose real-data level is printed beside (benchmarks/guidance_digits.py's `measure`). The table:
per length, the mean over training seeds of each seed's mean over its 3 sampling seeds, ± their sd.

    python benchmarks/steps_digits.py --root /work/steps --steps 950,1500,2000,3000 --seeds 0,1,2 --old
    python benchmarks/steps_digits.py --table        # the table of --out only

Rows already in --out (JSON lines) are not measured again, and finished runs in ROOT are not trained again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from guidance_digits import measure  # noqa: E402  (one measure for the guidance and the length benchmarks)
from main_job_digits import OLD_COMMIT, old_source, train  # noqa: E402  (the old default's source, one training)

SAMPLING_SEEDS = (1000, 1001, 1002)


def train_once(src: Path, out: Path, seed: int, steps: int | None) -> None:
    """`ddpmkit train --seed S [--steps N] --out OUT` with ddpmkit from `src` on one thread (main_job_digits.train),
    unless OUT holds a finished run; a half-written OUT stops the script with the training's own message."""
    if not (out / "ema.safetensors").is_file():
        train(src, out, 1, ["--seed", str(seed), *(["--steps", str(steps)] if steps else [])])


def label(name: str) -> str:
    kind = name.rsplit("-", 1)[0]
    return f"old default ({OLD_COMMIT}: 3,000 steps, classic EMA 0.999)" if kind == "old" else f"{int(kind[1:]):,} steps"


def table(lines: list[dict]) -> None:
    per_run: dict[str, list[dict]] = {}
    for line in lines:
        per_run.setdefault(line["run"], []).append(line)
    groups: dict[str, list[list[dict]]] = {}
    for name, found in per_run.items():
        groups.setdefault(label(name), []).append(found)
    print("| training | seeds | FD | per training seed | P | R | P180 | R180 |\n| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for what, runs in sorted(groups.items(), key=lambda kv: (kv[0].startswith("old"), int(kv[0].split()[0].replace(",", "")) if kv[0][0].isdigit() else 0)):
        cells = []
        for m in ("FD", "P", "R", "P180", "R180"):
            means = [statistics.mean(x[m] for x in found) for found in runs]
            cells.append(f"{statistics.mean(means):.3f}" + (f" ± {statistics.stdev(means):.3f}" if len(means) > 1 else ""))
            if m == "FD":
                cells.append(", ".join(f"{v:.3f}" for v in means))
        print(f"| {what} | {len(runs)} | " + " | ".join(cells) + " |")
    print("\nheld-out real digits at set size 180 (the real-data level): P180 0.928, R180 0.911")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, help="where the runs are trained (ROOT/sN-S, ROOT/old-S)")
    p.add_argument("--steps", default="950,1500,2000,3000", help="comma-separated lengths of the default recipe")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--old", action="store_true", help=f"also the old default of commit {OLD_COMMIT}")
    p.add_argument("--parallel", type=int, default=2, help="trainings at a time, one thread each")
    p.add_argument("--out", type=Path, default=HERE / "steps_digits.jsonl", help="the rows measured (JSON lines)")
    p.add_argument("--table", action="store_true", help="only print the table of --out")
    args = p.parse_args()
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.is_file() else []
    if not args.table:
        if args.root is None:
            p.error("--root is required unless --table")
        seeds = [int(s) for s in args.seeds.split(",")]
        jobs = [(HERE.parent / "src", args.root / f"s{n}-{s}", s, int(n)) for n in args.steps.split(",") for s in seeds]
        with tempfile.TemporaryDirectory() as tmp:
            if args.old:
                old_src = old_source(Path(tmp))
                jobs += [(old_src, args.root / f"old-{s}", s, None) for s in seeds]
            with ThreadPoolExecutor(args.parallel) as pool:
                list(pool.map(lambda job: train_once(*job), jobs))
        import torch

        from ddpmkit.build import load_run
        from ddpmkit.evaluation import image_reference
        from ddpmkit.evaluation.quality import nhwc_to_nchw
        from ddpmkit.sampling import SamplingRequest, draw

        torch.set_num_threads(1)
        reference = image_reference(load_run(jobs[0][1]), "own", report=print)
        for _, run_dir, _, _ in jobs:
            run = load_run(run_dir)
            for seed in SAMPLING_SEEDS:
                if any(d["run"] == run_dir.name and d["seed"] == seed for d in done):
                    continue
                data = draw(run, 1000, SamplingRequest(sampler="dpm++sde", steps=20, seed=seed)).data
                line = {"run": run_dir.name, "seed": seed, **measure(reference, reference.extractor.features(nhwc_to_nchw(data)))}
                done.append(line)
                with args.out.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                print(json.dumps(line), flush=True)
    table(done)


if __name__ == "__main__":
    main()
