"""The default configuration of each kind of data set, and why it is what it is.

Every number here was chosen by measurement on a 2-core CPU (the README's tables): the
digits preset is the main job (`ddpmkit train`), the 2-D preset trains in well under a
minute, and the images preset is the DDPM CIFAR-10 layout for a user's folder on a GPU.
A preset is a RunConfig before the data are read: the network's data-dependent sizes
(channels, image size, classes, D) are filled in by build.resolve_config.
"""

from __future__ import annotations

from .config import DataConfig, DiffusionConfig, RunConfig, TrainConfig
from .nets.mlp import MLPConfig
from .nets.unet import UNetConfig


def points(name: str) -> RunConfig:
    """2-D toy data: a residual MLP (128 wide, 3 blocks) on 20,000 points, 3,000 steps of
    256 at lr 1e-3; EMA 0.995, a window of ~200 steps, settles within the short run.

    - v-prediction (Salimans & Ho 2022, Sec. 4), not ε: the few-step grids that start at t = T−1
      (linspace, trailing) meet the cosine schedule's ᾱ ≈ 2·10⁻⁹ there, where an ε-network's
      x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ multiplies its ε error by 1/√ᾱ ≈ 2·10⁴ (median |x̂_0| 446 for
      pure noise, the points within 2.5): ε-trained moons put 85-97% of their points beyond
      radius 5 with ddim, dpm++ and heun at 20 and 10 steps, 11-58% with dpm++sde, 23-70% with
      ddpm (3 training seeds). v's x̂_0 = √ᾱ x_t − √(1−ᾱ) v̂ stays bounded at every SNR: the
      same runs predicting v put none there with any sampler, step count or spacing, and
      DDPM-1000 scores the same (docs/sampling.md, "Few steps on 2-D data";
      benchmarks/points_samplers.py). Images keep ε: their static clipping bounds x̂_0."""
    return RunConfig(
        data=DataConfig(name=name),
        net=MLPConfig(),
        diffusion=DiffusionConfig(schedule="cosine", num_steps=1000, prediction="v"),
        train=TrainConfig(steps=3000, batch_size=256, lr=1e-3, ema_decay=0.995, log_every=100),
    )


def digits() -> RunConfig:
    """scikit-learn's 8×8 grey digits on a CPU, the main job (docs/speed.md has the measurements).

    - U-Net, 0.69 M parameters (base width 32, levels 8 → 4 px, one residual block per level,
      no attention): at 8×8 two levels suffice, and a 2.7-3.9 M-parameter net costs 3-4× the
      time per step (78 ms against 221-318 ms per batch of 128).
    - cosine schedule, T = 1000 (Nichol & Dhariwal 2021): on tiny images the linear schedule
      destroys the signal early; the cosine one spreads the work over the whole range of t.
    - 3,000 steps of batch 128 (about 240 epochs), AdamW at 2e-3 with 100 warm-up steps and
      cosine decay: the small net tolerates a high rate; the decay to 0 lets the last few
      hundred steps settle. Issue 20 cut the run to 950 steps (0.30x the old wall time) at an
      own-feature FD within the spread of the old one, but precision fell and an independent
      measure saw the loss; autoguidance did not win it back on average (issue 31), so the
      default went back up to the shortest run that holds the old default's FD and precision.
      Over 3 training seeds x 3 sampling seeds (docs/speed.md, benchmarks/steps_digits.py):
      950 steps FD 0.175 ± 0.017, precision 0.876; 1,500 steps 0.165 ± 0.013, 0.909; 2,000
      steps 0.169 ± 0.019, 0.924; 3,000 steps (this) 0.151 ± 0.018, 0.949; the old default
      0.155 ± 0.019, 0.957. Precision grows with the steps and no EMA width buys it back.
      Wall time side by side (benchmarks/main_job_digits.py): 223.4 s against the old 233.4 s.
    - EMA: the power-function profile of relative width σ_rel = 0.2 (Karras et al. 2024), an
      average centred three quarters of the way through the run, with a spread of a fifth of it.
      On a short run it beats the classic EMA 0.999 with warm-up (1 + n)/(10 + n), which averages only the
      last ~100 steps: at 950 steps FD 0.175 ± 0.017 against 0.208 ± 0.022 over 3 training
      seeds. σ_rel 0.16-0.25 scored best in `ddpmkit ema --sweep` of 950-step runs.
    - precision fp32: `--precision auto` (bf16 autocast where the CPU has native bf16, AVX-512
      bf16 or AMX, else fp32) is offered, but its sample quality on this job is not measured
      yet, so it is not the default.
    - 10% of the digits (180) are held out of training, for the held-out likelihood.
    - the EMA weights at half the steps (step 1,500) are kept as RUN/guide.safetensors, the guide of
      autoguidance (Karras et al. 2024) for `sample --autoguide auto`; `sample` does not use it by
      default, since on 950-step runs it did not measure better (docs/guidance.md,
      benchmarks/guidance_digits.py)."""
    return RunConfig(
        data=DataConfig(name="digits", holdout=0.1),
        net=UNetConfig(base_width=32, channel_mults=(1, 2), blocks_per_level=1),
        diffusion=DiffusionConfig(schedule="cosine", num_steps=1000),
        train=TrainConfig(
            steps=3000, batch_size=128, lr=2e-3, warmup_steps=100, lr_decay="cosine", ema_sigma_rel=0.2,
            log_every=100, checkpoint_every=1000, guide_at=0.5,
        ),
    )


def images(name: str) -> RunConfig:
    """A user's images (32-128 px) on a GPU: the DDPM CIFAR-10 layout (Ho et al. 2020, App. B:
    base width 64, four levels, two residual blocks each, attention at 16 px, dropout 0.1),
    horizontal flips, lr 2e-4 with 1,000 warm-up steps, EMA 0.9999 over 100,000 steps, a
    sample grid and a checkpoint every 5,000."""
    return RunConfig(
        data=DataConfig(name=name, hflip=True),
        net=UNetConfig(base_width=64, channel_mults=(1, 2, 2, 2), blocks_per_level=2, attention_resolutions=(16,), dropout=0.1),
        diffusion=DiffusionConfig(schedule="cosine", num_steps=1000),
        train=TrainConfig(
            steps=100_000, batch_size=64, lr=2e-4, warmup_steps=1000, ema_decay=0.9999,
            log_every=100, sample_every=5000, checkpoint_every=5000,
        ),
    )
