"""Progressive distillation (Algorithm 2 of Salimans & Ho 2022): a run's deterministic DDIM
sampler on N steps distilled into a student that takes N/2, round after round, down to a few.

Notation (the paper's, variance preserving: α_t² + σ_t² = 1):
    α_t -> √ᾱ_t, σ_t -> √(1 − ᾱ_t), z_t -> x_t = α_t·x + σ_t·ε (x the data),
    SNR(t) = α_t²/σ_t² = exp(λ_t), t' and t'' the teacher's two steps after t,
    x̃ -> the target: the one x̂ for which a single DDIM step t -> t'' lands on the teacher's z_t''.

One round: the student samples t from its own grid (every other point of the teacher's
grid, Algorithm 2's t = i/N), z_t from the data, the teacher takes its two DDIM steps
t -> t' -> t'', and the student learns

    x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t)          (Algorithm 2)
    L = max(SNR(t), 1)·‖x̂_student(z_t) − x̃‖²                           ("truncated SNR", Sec. 4)

After the last step of the grid the data follow (ᾱ = 1, σ = 0): there x̃ = z_t'', the
teacher's final sample. x̃ is a convex combination of the teacher's two x̂ (its weights
(α_t'' − σ_t''α_t'/σ_t')/(α_t'' − σ_t''α_t/σ_t) and the rest are ≥ 0 as SNR grows along the
path), so a teacher whose x̂ is clipped to [-1, 1] gives targets in [-1, 1] too: the students
sample with the same clipping as every image run.

Parameterisation: the students predict v (Salimans & Ho's choice; `prediction = "v"` in the
student's config.json, converted by the one adapter, denoiser.py). An ε-network cannot serve
a few-step student: at the first step t = T−1, ᾱ ≈ 2·10⁻⁹ under the cosine schedule and
x̂ = (z − σ·ε̂)/α multiplies the error of ε̂ by σ/α ≈ 2·10⁴, so the 4-step student's first
step, a quarter of its work, would be noise. v-prediction gives x̂ = α·z − σ·v̂ ≈ −v̂ there. A
student initialised from an ε-teacher keeps its network and weights (the features transfer)
and has its output read as v from the first round on; the first round (64 -> 32 steps, the
easiest halving) also re-learns the output's meaning (ε ≈ v at low noise, where α ≈ 1).
The loss is the paper's truncated SNR weighting, max(SNR, 1) on the x-space error, which for
a v-network is ‖ε − ε̂‖² at high noise and ‖x − x̂‖²·SNR at low noise, never 0 at either end.

Every student keeps an EMA of its weights (the run's EMA decay, with warm-up): the EMA is
what `sample` loads and what the next round's teacher and student start from, as the run's
EMA weights are the first teacher. With the learning rate annealed linearly to 0 over each
round (as in the paper) the EMA and the live weights end close; the EMA removes the last
steps' noise for free.

Layout of OUT (a run directory `sample`, `evaluate` and `export` take): config.json (the
student's: the teacher's with prediction v), checkpoints/step-N/ (N counts every round's steps;
each holds the teacher it distils, teacher.safetensors, so a round resumes exactly),
model/ema.safetensors and state.pt (links to the newest), students/steps-S.safetensors (each
finished round's student, EMA weights; `student_run` loads one with its grid), log.jsonl and
distill.json (the teacher, the settings, each finished round, and the sampler and grid of the
weights at the top).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import build, checkpoint, process, rundir
from ._tensor import append_dims
from .config import RunConfig
from .data import batches
from .denoiser import DenoiserLike
from .ema import EMA
from .errors import UserError, check_finite, check_positive
from .samplers import ddim
from .sampling import FixedGrid, Guidance, Run, SamplingRequest, denoiser
from .schedules import timestep_grid

TEACHER_WEIGHTS = "teacher.safetensors"  # a checkpoint's teacher: the weights this round distils
STUDENTS = "students"  # OUT/students/steps-S.safetensors: each finished round's student (EMA), to measure or sample
SAMPLER = "ddim"  # what is distilled and what the students sample with (η = 0)
STUDENT_PREDICTION = "v"


@dataclass(frozen=True)
class DistillSettings:
    """How a run is distilled (recorded in distill.json; a resume must ask for the same)."""

    to_steps: int = 4  # the last student's sampling steps
    start_steps: int = 64  # the first teacher's DDIM steps: to_steps · 2^k, at most T
    rounds_steps: int = 1000  # optimiser steps per round (per halving)
    batch_size: int | None = None  # examples per step (None: the teacher run's batch size)
    lr: float = 5e-4  # peak AdamW learning rate, annealed linearly to 0 over each round
    seed: int = 0  # seeds the batch order, t and ε
    checkpoint_every: int = 250  # steps between checkpoints inside a round (each round's end always has one)
    log_every: int = 50  # steps per log.jsonl record
    autoguide: str | None = None  # the first teacher autoguided (Karras et al. 2024) by this guide (build.load_guide); None: not
    autoguide_scale: float = 2.0  # its W

    def __post_init__(self) -> None:
        for option, value in (("--to-steps", self.to_steps), ("--start-steps", self.start_steps),
                              ("--rounds-steps", self.rounds_steps), ("--checkpoint-every", self.checkpoint_every),
                              ("--log-every", self.log_every)):
            check_positive(option, value)
        if self.batch_size is not None:
            check_positive("--batch-size", self.batch_size)
        check_positive("--lr", self.lr, integer=False)
        check_finite("--autoguide-scale", self.autoguide_scale)
        ratio = self.start_steps // self.to_steps
        if self.start_steps % self.to_steps or ratio < 2 or ratio & (ratio - 1):
            raise UserError(f"--start-steps {self.start_steps} must be --to-steps {self.to_steps} times a power of two "
                            f"(each round halves the steps), e.g. --start-steps {self.to_steps * 16}")

    @property
    def rounds(self) -> list[int]:
        """Each round's student steps: start/2, start/4, ..., to_steps."""
        return [self.start_steps >> k for k in range(1, int(math.log2(self.start_steps // self.to_steps)) + 1)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def start_grid(T: int, steps: int) -> torch.Tensor:
    """The first teacher's grid: `steps` timesteps evenly from T−1 (SNR ≈ 0, where sampling starts)
    down to 0 (the linspace spacing every sampler uses by default)."""
    if steps > T:
        raise UserError(f"--start-steps {steps} is more than the run's T = {T} timesteps; use at most {T}")
    return timestep_grid(T, steps, "linspace")


def round_grid(grid: torch.Tensor, k: int) -> torch.Tensor:
    """The grid of round k's student (k = 0 the first): every 2^(k+1)-th point of the start grid."""
    return grid[:: 2 ** (k + 1)]


def distill_target(z_t: torch.Tensor, z_t2: torch.Tensor, abar_t: torch.Tensor, abar_t2: torch.Tensor) -> torch.Tensor:
    """x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t) (Algorithm 2 of Salimans & Ho 2022):
    the x̂ whose one DDIM step from z_t reaches z_t''; ᾱ broadcast against z."""
    ratio = ((1 - abar_t2) / (1 - abar_t)).sqrt()  # σ_t''/σ_t
    return (z_t2 - ratio * z_t) / (abar_t2.sqrt() - ratio * abar_t.sqrt())


def truncated_snr_weight(abar_t: torch.Tensor) -> torch.Tensor:
    """max(SNR(t), 1) = max(ᾱ_t/(1 − ᾱ_t), 1): the "truncated SNR" weighting of Sec. 4 of Salimans & Ho 2022."""
    return (abar_t / (1 - abar_t)).clamp(min=1)


@torch.no_grad()
def teacher_two_steps(teacher: DenoiserLike, z: torch.Tensor, t: torch.Tensor, t1: torch.Tensor,
                      abar_t1: torch.Tensor, abar_t2: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
    """z_t'': two deterministic DDIM steps of the teacher, t -> t' -> t'' (per example; ᾱ of t'' is
    1 where t'' is the data)."""
    out = teacher(z, t, label)
    z1 = ddim.update(out.x0, out.eps, abar_t1)
    out = teacher(z1, t1, label)
    return ddim.update(out.x0, out.eps, abar_t2)


def distill_losses(student, teacher: DenoiserLike, grid: torch.Tensor, x0: torch.Tensor, i: torch.Tensor,
                   noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example loss [B] of one round: `grid` is the teacher's (N steps), `i` [B] each example's
    student step (0..N/2−1), so t = grid[2i], t' = grid[2i+1] and t'' = grid[2i+2] or the data.
    `student` is a Denoiser (x̂ through its prediction's adapter)."""
    abar = student.schedule.alphas_cumprod
    path_abar = torch.cat([abar[grid.to(abar.device)], abar.new_ones(1)])  # [N + 1]: ᾱ along the path, the data last
    grid = grid.to(x0.device)
    j = 2 * i.to(x0.device)
    t, t1 = grid[j], grid[j + 1]
    abar_t, abar_t1, abar_t2 = (append_dims(path_abar[k].to(x0.dtype), x0.ndim) for k in (j, j + 1, j + 2))
    z = process.q_sample(student.schedule, x0, t, noise)  # x_t at the student's grid steps
    z2 = teacher_two_steps(teacher, z, t, t1, abar_t1, abar_t2, label)
    target = distill_target(z, z2, abar_t, abar_t2)
    x_hat = student(z, t, label).x0
    err = (x_hat - target).pow(2).flatten(1).mean(1)  # [B]
    return truncated_snr_weight(abar_t.flatten()) * err


def student_weights_path(out: Path, steps: int) -> Path:
    """Where the round whose student takes `steps` steps keeps its final EMA weights."""
    return Path(out) / STUDENTS / f"steps-{steps}.safetensors"


def student_run(out: Path, steps: int, device: torch.device | None = None) -> Run:
    """The student of `steps` steps of the distillation in `out`, with its own grid: a Run to
    measure or sample (the top-level weights are the last student's; build.load_run loads those)."""
    out = Path(out)
    record = rundir.read_distill_record(out)
    found = next((r for r in (record or {}).get("finished", []) if r["student_steps"] == steps), None)
    if found is None:
        raise UserError(f"{out} holds no finished {steps}-step student")
    run = build.load_run(out, str(out / found["weights"]), device=device)
    return dataclasses.replace(run, fixed=FixedGrid(SAMPLER, tuple(found["grid"])))


def student_config(config: RunConfig) -> RunConfig:
    """The students' config: the teacher's network and schedule, predicting v, with the classic
    EMA (ema_decay with warm-up, as the rounds were measured) even where the teacher's was a
    power-function one."""
    return dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, prediction=STUDENT_PREDICTION),
                               train=dataclasses.replace(config.train, ema_sigma_rel=0.0))


def _lr_factor(step: int, total: int) -> float:
    """Linear annealing from the peak to 0 over a round."""
    return 1.0 - step / total


class Distiller:
    """The rounds of progressive distillation of `teacher_run` into `out`, with a checkpoint every
    settings.checkpoint_every steps and at the end of every round; `resume()` continues the newest."""

    def __init__(self, teacher_run: Run, out: Path, settings: DistillSettings, *, device: torch.device,
                 report: Callable[[str], None] = lambda message: None, progress: bool = True):
        self.first, self.out, self.s, self.device = teacher_run, Path(out), settings, device
        self.report, self.progress = report, progress
        self.config = student_config(teacher_run.config)
        self.T = self.config.diffusion.num_steps
        self.grid = start_grid(self.T, settings.start_steps)
        self.batch_size = settings.batch_size or teacher_run.config.train.batch_size
        self.kind = build.modality(self.config)
        self.dataset, _ = self.kind.load(teacher_run.config.seed)
        self.step = 0  # optimiser steps of every round so far
        self.round = 0
        self.finished: list[dict] = []  # the record of each finished round
        self.saved_round = 0  # the round of the newest checkpoint: the weights at the top level
        self.generator = torch.Generator().manual_seed(settings.seed)
        self._start_round(teacher_run.net)

    # ---- rounds ------------------------------------------------------------------------------
    def _start_round(self, weights: nn.Module, state: dict | None = None) -> None:
        """Round self.round: the teacher `weights` (as it samples: the run's clipping, its guidance
        at w = 0), a student and its EMA initialised from it, a fresh optimiser."""
        teacher_config = self.first.config if self.round == 0 else self.config
        teacher_net = copy.deepcopy(weights).to(self.device).eval().requires_grad_(False)
        teacher = build.make_run(self.out, teacher_config, teacher_net)
        self.teacher = teacher.denoiser
        if self.round == 0 and self.first.guide is not None:  # the first teacher as it samples autoguided
            guided = SamplingRequest(guidance=Guidance(autoguide=self.first.guide.name, autoguide_scale=self.s.autoguide_scale))
            self.teacher = denoiser(dataclasses.replace(teacher, guide=self.first.guide), guided)
        self.teacher_net = teacher_net
        self.net = copy.deepcopy(weights).to(self.device).train().requires_grad_(True)
        self.student = build.build_denoiser(self.config, self.net)
        self.ema = EMA.of(self.net, self.config.train)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.s.lr)
        self.round_step = 0

    @property
    def teacher_grid(self) -> torch.Tensor:
        return self.grid[:: 2**self.round]

    def resume(self) -> int:
        """Continue from the newest readable checkpoint of `out` (inside a round, or the next round
        when it ended one); returns its step."""
        readable = checkpoint.newest_readable(self.out, self.report)
        if readable is None:
            raise UserError(f"{self.out} has no complete checkpoint to resume from")
        found, (model, ema, state), _ = readable
        teacher = checkpoint.load_weights(found / TEACHER_WEIGHTS)
        self.round, self.finished = int(state["round"]), list(state["finished"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.saved_round = self.round
        if int(state["round_step"]) >= self.s.rounds_steps:  # a round's last checkpoint: the next round starts
            ended = build.build_net(self.config)
            checkpoint.load_matching(ended, ema, found / "ema.safetensors")
            self.round += 1
            self._start_round(ended)
        else:
            holder = build.build_net(self.config)
            checkpoint.load_matching(holder, teacher, found / TEACHER_WEIGHTS)
            self._start_round(holder)
            checkpoint.load_matching(self.net, model, found / "model.safetensors")
            checkpoint.load_matching(self.ema.model, ema, found / "ema.safetensors")
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.round_step = int(state["round_step"])
        rundir.truncate_log(self.out, self.step)
        return self.step

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Every round left, each to settings.rounds_steps steps; returns the finished rounds' records."""
        rounds = self.s.rounds
        stream = batches(self.dataset, self.batch_size, self.s.seed, self.step)
        while self.round < len(rounds):
            self._write_record()
            self._fit_round(stream, rounds[self.round])
            if self.round + 1 < len(rounds):
                self.round += 1
                self._start_round(self.ema.model)
            else:
                break
        self._write_record()
        return self.finished

    def _fit_round(self, stream, steps: int) -> None:
        grid = self.teacher_grid
        bar = tqdm(total=self.s.rounds_steps, initial=self.round_step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=f"round {self.round + 1}/{len(self.s.rounds)}: {len(grid)} -> {steps} steps")
        started, losses = time.perf_counter(), []
        try:
            while self.round_step < self.s.rounds_steps:
                losses.append(self._step(stream, grid, steps))
                bar.update(1)
                if self.round_step % self.s.log_every == 0 or self.round_step == self.s.rounds_steps:
                    loss = sum(losses) / len(losses)
                    rundir.append_log(self.out, {"step": self.step, "round": self.round + 1, "student_steps": steps,
                                                 "loss": loss, "lr": self.optimizer.param_groups[0]["lr"]})
                    bar.set_postfix_str(f"loss {loss:.4f}")
                    losses = []
                if self.round_step == self.s.rounds_steps:
                    weights = student_weights_path(self.out, steps)
                    weights.parent.mkdir(exist_ok=True)
                    checkpoint.save_weights(weights, self.ema.model.state_dict())
                    self.finished.append({"round": self.round + 1, "teacher_steps": len(grid), "student_steps": steps,
                                          "steps": self.s.rounds_steps, "seconds": round(time.perf_counter() - started, 2),
                                          "final_loss": loss, "grid": [int(t) for t in grid[::2]],
                                          "weights": str(weights.relative_to(self.out))})
                    self.save()
                elif self.round_step % self.s.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()

    def _step(self, stream, grid: torch.Tensor, steps: int) -> float:
        """One optimiser step of the round on a batch: t on the student's grid, ε from the generator."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.s.lr * _lr_factor(self.round_step, self.s.rounds_steps)
        raw, labels = next(stream)
        x0 = self.kind.to_model_space(raw.to(self.device))
        n = x0.shape[0]
        i = torch.randint(0, steps, (n,), generator=self.generator)  # the student's step: Algorithm 2's t = i/N
        noise = torch.randn(x0.shape, generator=self.generator, dtype=x0.dtype).to(self.device)
        label = None
        if self.config.num_classes:  # keep the unconditional model too (a null label with p_uncond)
            drop = torch.rand(n, generator=self.generator) < self.config.train.p_uncond
            label = torch.where(drop, torch.full_like(labels, self.config.num_classes), labels).to(self.device)
        loss = distill_losses(self.student, self.teacher, grid, x0, i, noise, label).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.train.grad_clip or float("inf"))
        self.optimizer.step()
        self.ema.update(self.net)
        self.step += 1
        self.round_step += 1
        return float(loss.detach())

    # ---- files -------------------------------------------------------------------------------
    def save(self) -> Path:
        """A checkpoint of the round (its teacher included), then distill.json."""
        state = {"step": self.step, "round": self.round, "round_step": self.round_step, "finished": self.finished,
                 "optimizer": self.optimizer.state_dict(), "ema": self.ema.state_dict(),
                 "generator": self.generator.get_state()}
        path = checkpoint.save_checkpoint(self.out, self.step, self.net.state_dict(), self.ema.model.state_dict(), state,
                                          keep=2, extra={TEACHER_WEIGHTS: self.teacher_net.state_dict()})
        self.saved_round = self.round
        self._write_record()
        return path

    def _write_record(self) -> None:
        """distill.json: the sampler and grid of the weights at the top level (the newest checkpoint's
        round; before the first, the first round's), the teacher, the settings, the finished rounds."""
        grid = round_grid(self.grid, self.saved_round)
        rundir.write_distill_record(self.out, {
            "method": "progressive distillation (Salimans & Ho 2022, Algorithm 2)",
            "teacher": str(self.first.directory), "teacher_prediction": self.first.config.diffusion.prediction,
            "student_prediction": STUDENT_PREDICTION, "weighting": "truncated SNR: max(SNR, 1)·‖x̂ − x̃‖²",
            "settings": self.s.to_dict(), "batch_size": self.batch_size,
            "sampler": SAMPLER, "steps": len(grid), "grid": [int(t) for t in grid],
            "start_grid": [int(t) for t in self.grid], "finished": self.finished,
            "complete": len(self.finished) == len(self.s.rounds),
        })


def check_out(out: Path, teacher_dir: Path | None, settings: DistillSettings) -> bool:
    """Whether `out` is a distillation to continue (True) or a new one (False); refuses a folder
    that holds anything else, or a distillation of another teacher or with other settings."""
    out = Path(out)
    rundir.check_writable(out)
    record = rundir.read_distill_record(out) if out.is_dir() else None
    if record is None:
        if out.is_dir() and any(out.iterdir()):
            what = "a run directory" if (out / rundir.CONFIG).is_file() else "not empty"
            raise UserError(f"--out {out} is {what}; distill into a new or empty folder (or --resume a distillation)")
        return False
    if teacher_dir is not None and Path(record["teacher"]).resolve() != Path(teacher_dir).resolve():
        raise UserError(f"--out {out} distils {record['teacher']}, not {teacher_dir}; choose another --out")
    differ = [k for k, v in settings.to_dict().items() if record["settings"].get(k) != v]
    if differ:
        raise UserError(f"--out {out} was distilled with other settings ({', '.join(differ)}); repeat its own options "
                        "(distill.json) or use --resume with none of them")
    return True


def recorded_settings(out: Path) -> tuple[Path, DistillSettings]:
    """The teacher and settings of the distillation in `out` (for --resume)."""
    record = rundir.read_distill_record(out)
    if record is None:
        raise UserError(f"--resume {out} holds no distillation (no distill.json); start one with --run and --out")
    return Path(record["teacher"]), DistillSettings(**record["settings"])


def distill(teacher_run: Run, out: Path, settings: DistillSettings, *, resume: bool, device: torch.device,
            report: Callable[[str], None] = lambda message: None, progress: bool = True) -> list[dict]:
    """Distil `teacher_run` (its EMA weights, as loaded) into `out`; continue it with `resume`."""
    if teacher_run.config.diffusion.prediction not in ("eps", "x0", "v"):  # the adapter takes any of them
        raise UserError(f"prediction {teacher_run.config.diffusion.prediction!r} cannot be distilled")
    distiller = Distiller(teacher_run, out, settings, device=device, report=report, progress=progress)
    if resume and checkpoint.newest_checkpoint(out) is not None:
        report(f"resuming the distillation in {out} from step {distiller.resume()}")
    else:
        rundir.write_config(out, distiller.config)
        rundir.truncate_log(out, 0)
    return distiller.fit()
