"""ddpmkit's default digits run against diffusers' UNet2DModel + DDPMScheduler, same data,
same wall time, same quality measure.

Targets (issue: image diffusion): the default `ddpmkit train` samples at least as well as a
diffusers model trained on the same digits for the same wall time; moonshot: ddpmkit reaches
that quality in half the wall time.

What runs, one after the other on this machine:
- ddpmkit: `api.default_config("digits")` trained as `ddpmkit train` does (its wall time W is
  the budget), and the same config with half the optimiser steps (about W/2);
- diffusers, hand-wired the way its `train_unconditional.py` example does it (AdamW, warm-up
  then cosine LR, gradient clipping at 1, EMAModel, `DDPMScheduler.add_noise`, MSE on ε), on a
  `UNet2DModel` of the same shape as ours (two levels 8 -> 4 px, widths 32 and 64, one block
  per level, no attention; 0.63 M parameters against our 0.69 M), batch 128 like ours, for W
  seconds (the step count is set from a timed calibration on a throw-away copy, so the cosine
  schedule ends at the budget). Two recipes, so neither side wins by its hyper-parameters
  alone: `example` = the example's defaults (lr 1e-4, 500 warm-up steps, linear β, AdamW
  β₁ 0.95 and weight decay 1e-6, EMA warm-up with power 3/4 up to 0.9999), and `ours` =
  ddpmkit's digits recipe (lr 2e-3, 100 warm-up steps, cosine β "squaredcos_cap_v2",
  EMA 0.999 with the (1+n)/(10+n) warm-up);
- every model samples with 1,000-step ancestral DDPM (diffusers: its scheduler's `step`,
  as DDPMPipeline does; both clip x̂_0 to [-1, 1]) from its EMA weights.

Quality: the Fréchet distance in the features of ddpmkit's own digits classifier (the one
`ddpmkit evaluate` trains and keeps in RUN/features/; here that of the first ddpmkit run,
used for every model) between `--num-samples` samples and the real digits ddpmkit trains on (the default
holds 180 of the 1,797 out; the diffusers model trains on the same 1,617), over
`--seeds` sample sets (mean ± sd), beside the floor that random subsets of the real digits
of that size give.

    python benchmarks/vs_diffusers_digits.py            # ~25 min on a 2-core CPU
    python benchmarks/vs_diffusers_digits.py --quick    # a smoke run, ~2 min

Needs `pip install diffusers` (a benchmark-only dependency; it does not pull torch).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddpmkit import api
from ddpmkit.build import load_run, modality
from ddpmkit.data.images import to_model_space, to_uint8
from ddpmkit.evaluation import feature_scores, image_reference, quick_scores
from ddpmkit.nets.unet import count_parameters

RECIPES = {
    "example": dict(lr=1e-4, warmup=500, beta_schedule="linear", betas=(0.95, 0.999), weight_decay=1e-6,
                    ema=dict(decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)),
    "ours": dict(lr=2e-3, warmup=100, beta_schedule="squaredcos_cap_v2", betas=(0.9, 0.999), weight_decay=0.0,
                 ema=dict(decay=0.999, use_ema_warmup=False)),
}


def peer_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False,
    )


class PeerRun:
    """diffusers' UNet2DModel + DDPMScheduler trained as the train_unconditional example does."""

    def __init__(self, recipe: dict, data: torch.Tensor, batch_size: int, seed: int):
        from diffusers import DDPMScheduler

        torch.manual_seed(seed)
        self.unet = peer_unet()
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=recipe["beta_schedule"])
        self.recipe, self.data, self.batch_size = recipe, data, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def train(self, steps: int) -> float:
        """Train `steps` optimiser steps; returns the wall time."""
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        r = self.recipe
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=r["lr"], betas=r["betas"], weight_decay=r["weight_decay"])
        lr_schedule = get_scheduler("cosine", optimizer, num_warmup_steps=r["warmup"], num_training_steps=steps)
        self.ema = EMAModel(self.unet.parameters(), **r["ema"])
        self.unet.train()
        start = time.perf_counter()
        order = torch.empty(0, dtype=torch.long)
        for _ in range(steps):
            if len(order) < self.batch_size:
                order = torch.cat([order, torch.randperm(len(self.data), generator=self.generator)])
            idx, order = order[: self.batch_size], order[self.batch_size :]
            x0 = self.data[idx]
            noise = torch.randn(x0.shape, generator=self.generator)
            t = torch.randint(0, 1000, (len(x0),), generator=self.generator)
            pred = self.unet(self.scheduler.add_noise(x0, noise, t), t).sample
            loss = F.mse_loss(pred, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            self.ema.step(self.unet.parameters())
        return time.perf_counter() - start

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> np.ndarray:
        """n images [n, 8, 8, 1] uint8 by 1000-step ancestral DDPM from the EMA weights."""
        unet = copy.deepcopy(self.unet).eval()
        self.ema.copy_to(unet.parameters())
        g = torch.Generator().manual_seed(seed)
        self.scheduler.set_timesteps(1000)
        x = torch.randn((n, 1, 8, 8), generator=g)
        for t in self.scheduler.timesteps:
            x = self.scheduler.step(unet(x, t).sample, t, x, generator=g).prev_sample
        return to_uint8(x).permute(0, 2, 3, 1).numpy()


def quality(reference, draw, num_samples: int, seeds: int) -> dict:
    """Sample `seeds` sets of `num_samples`; the Fréchet distance of each set (mean, sd) and,
    on all of them pooled, KID and precision/recall; sampling seconds per set."""
    sets, fds, seconds = [], [], 0.0
    for seed in range(seeds):
        start = time.perf_counter()
        sets.append(draw(num_samples, 1000 + seed))
        seconds += time.perf_counter() - start
        fds.append(quick_scores(reference, sets[-1])["frechet_distance"])
    pooled = np.concatenate(sets)
    scores = feature_scores(reference, reference.extractor.features(torch.from_numpy(pooled).permute(0, 3, 1, 2)))
    return {"fd": statistics.mean(fds), "fd_sd": statistics.stdev(fds) if len(fds) > 1 else float("nan"),
            "kid": scores["kid"]["mean"], "kid_sd": scores["kid"]["std"], "precision": scores["precision"],
            "recall": scores["recall"], "sample_s": seconds / seeds}


def row(name: str, params: int, steps: int, seconds: float, q: dict) -> str:
    return (f"{name:<26} {params:>8,} {steps:>6} {seconds:>7.1f} {q['fd']:>6.3f} ±{q['fd_sd']:>5.3f} "
            f"{1000 * q['kid']:>6.2f} ±{1000 * q['kid_sd']:>5.2f} {q['precision']:>5.3f} {q['recall']:>5.3f} {q['sample_s']:>8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=500, help="samples per set")
    p.add_argument("--seeds", type=int, default=2, help="sample sets per model")
    p.add_argument("--recipes", default="example,ours", help="diffusers recipes to run: example, ours")
    p.add_argument("--quick", action="store_true", help="smoke test: 150 steps, 100 samples, one seed")
    args = p.parse_args()
    recipes = args.recipes.split(",")
    config = api.default_config("digits")
    if args.quick:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=150))
        args.num_samples, args.seeds = 100, 1
    half = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=config.train.steps // 2))
    dataset, _ = modality(config).load(config.seed)
    train_data = to_model_space(dataset.images_uint8)  # [1617, 1, 8, 8] in [-1, 1]: what ddpmkit trains on
    total = args.num_samples * args.seeds

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.seeds} sets of {args.num_samples} samples "
          "per model, 1000-step ancestral sampling from EMA weights", flush=True)
    header = (f"{'model':<26} {'params':>8} {'steps':>6} {'train s':>7} {'FD':>6} {'± sd':>6} {'KID×1e3':>7} {'± sd':>6} "
              f"{'prec':>5} {'rec':>5} {'sample s':>8}")
    rows, reference = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in (("ddpmkit default", config), ("ddpmkit, half the steps", half)):
            result = api.train(cfg, Path(tmp) / name.replace(" ", "_"), progress=False, pictures=False)
            run = load_run(Path(tmp) / name.replace(" ", "_"))
            if reference is None:  # one feature network for every model (trained after the timed run)
                reference = image_reference(run)
                real = reference.dataset.images_uint8.permute(0, 2, 3, 1).numpy()
                rng = np.random.default_rng(0)
                floor = [quick_scores(reference, real[rng.choice(len(real), min(args.num_samples, len(real)), replace=False)])
                         ["frechet_distance"] for _ in range(5)]
                print(f"quality in {reference.extractor.description}, against {reference.description['what']}: FD of each set of "
                      f"{args.num_samples} (mean ± sd over sets); KID (mean ± sd over subsets), precision and recall "
                      f"(k = 3) of the {total} pooled. FD floor (random real subsets of {args.num_samples}): "
                      f"{statistics.mean(floor):.3f} ± {statistics.stdev(floor):.3f}\n")
                print(header, flush=True)
            q = quality(reference, lambda n, s: api.draw(run, n, api.SamplingRequest(seed=s, sampler="ddpm")).data, args.num_samples, args.seeds)
            rows[name] = (q, result.seconds)
            print(row(name, count_parameters(run.net), result.steps, result.seconds, q), flush=True)
    budget = rows["ddpmkit default"][1]
    for recipe in recipes:
        calibration = PeerRun(RECIPES[recipe], train_data, config.train.batch_size, seed=1)
        calibration.train(5)  # warm-up
        per_step = calibration.train(30) / 30
        steps = max(1, int(budget / per_step))
        peer = PeerRun(RECIPES[recipe], train_data, config.train.batch_size, seed=0)
        seconds = peer.train(steps)
        q = quality(reference, peer.sample, args.num_samples, args.seeds)
        name = f"diffusers, {recipe} recipe"
        rows[name] = (q, seconds)
        print(row(name, count_parameters(peer.unet), steps, seconds, q), flush=True)
    peers = {k: v[0] for k, v in rows.items() if k.startswith("diffusers")}
    best = min(peers, key=lambda k: peers[k]["fd"])
    for label, name in (("same wall time", "ddpmkit default"), ("moonshot, half the time", "ddpmkit, half the steps")):
        ours, seconds = rows[name]
        print(f"{label} ({seconds:.0f} s against {budget:.0f} s): FD {ours['fd']:.3f} vs {peers[best]['fd']:.3f} ({best}), "
              f"KID×1e3 {1000 * ours['kid']:.2f} vs {1000 * peers[best]['kid']:.2f} -> "
              f"{'met' if ours['fd'] <= peers[best]['fd'] and ours['kid'] <= peers[best]['kid'] else 'not met'}")


if __name__ == "__main__":
    main()
