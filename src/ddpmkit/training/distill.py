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

Each round runs on the one training loop (trainer.Trainer) with the objective `DistillRound`:
the optimiser, the schedule, clipping, gradient accumulation, precision, data parallelism under
torchrun, the EMA, the non-finite guard, checkpoints and exact resume, log.jsonl and the loggers
are the Trainer's, as for `ddpmkit train`. The rounds share one generator (t, ε, label
dropout), passed from each round's Trainer to the next.

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

from .. import build, checkpoint, process, rundir
from .._tensor import append_dims
from ..config import LOGGERS, PRECISIONS, LoggerName, Precision, RunConfig
from ..denoiser import Denoiser, DenoiserLike
from ..distributed import World
from ..errors import UserError, check_choice, check_finite, check_positive
from ..loggers import Loggers
from ..precision import Autocast, autocast_dtype
from ..samplers import ddim
from ..sampling import FixedGrid, Guidance, Run, SamplingRequest, denoiser
from ..schedules import timestep_grid
from .objective import Batch
from .trainer import Trainer

TEACHER_WEIGHTS = "teacher.safetensors"  # a checkpoint's teacher: the weights this round distils
STUDENTS = "students"  # OUT/students/steps-S.safetensors: each finished round's student (EMA), to measure or sample
SAMPLER = "ddim"  # what is distilled and what the students sample with (η = 0)
STUDENT_PREDICTION = "v"
# AdamW as torch defines it (weight decay 0.01), unfused: what every distillation has used, kept
# so that a distillation gives the same bytes as before it ran on the Trainer (whose own AdamW is fused).
ADAMW_WEIGHT_DECAY = 0.01
# How a distillation runs, not what it distils: a distillation recorded before these existed had their defaults.
RUNNING = {"grad_accum": 1, "precision": "fp32", "loggers": []}


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
    grad_accum: int = 1  # micro-batches per optimiser step (batch_size is the global batch)
    precision: Precision = "fp32"  # the student's and the teacher's forward passes: fp32, bf16, fp16 or auto
    loggers: tuple[LoggerName, ...] = ()  # where the log records also go: tensorboard, wandb (log.jsonl always)
    autoguide: str | None = None  # the first teacher autoguided (Karras et al. 2024) by this guide (build.load_guide); None: not
    autoguide_scale: float = 2.0  # its W

    def __post_init__(self) -> None:
        for option, value in (("--to-steps", self.to_steps), ("--start-steps", self.start_steps),
                              ("--rounds-steps", self.rounds_steps), ("--checkpoint-every", self.checkpoint_every),
                              ("--log-every", self.log_every), ("--grad-accum", self.grad_accum)):
            check_positive(option, value)
        check_choice("precision (--precision)", self.precision, PRECISIONS)
        for name in self.loggers:
            check_choice("logger (--logger)", name, LOGGERS)
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
        return {**dataclasses.asdict(self), "loggers": list(self.loggers)}

    @classmethod
    def from_dict(cls, record: dict) -> "DistillSettings":
        """The settings distill.json recorded (its loggers a list)."""
        return cls(**{**RUNNING, **record, "loggers": tuple(record.get("loggers", ()))})


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


class DistillRound:
    """The objective of one round (an objective.Objective): Algorithm 2 of Salimans & Ho 2022 with
    the teacher's grid `grid` (N steps) and a student of N/2 steps. Per example, drawn in this
    order for the global micro-batch: the student's step i (t = grid[2i]), ε, and the label
    dropped to the null label with probability p_uncond (conditional runs keep their
    unconditional model too). A checkpoint keeps the round and the finished rounds (state.pt)
    and the teacher (teacher.safetensors)."""

    def __init__(self, student: Denoiser, teacher: DenoiserLike, teacher_net: nn.Module, grid: torch.Tensor, *,
                 round: int, finished: list[dict], num_classes: int, p_uncond: float):
        self.student, self.teacher, self.teacher_net, self.grid = student, teacher, teacher_net, grid
        self.round, self.finished = round, finished  # `finished` is the distillation's list, shared
        self.num_classes, self.p_uncond = num_classes, p_uncond

    @property
    def student_steps(self) -> int:
        return len(self.grid) // 2

    def losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        i = batch.randint(self.student_steps)  # [b] the student's step: Algorithm 2's t = i/N
        noise = batch.randn()
        label = batch.drop_labels(self.num_classes, self.p_uncond) if self.num_classes else None
        per_example = distill_losses(self.student, self.teacher, self.grid, batch.x0, i, noise, label)
        return per_example, self.grid[2 * i].to(batch.x0.device)

    def state_dict(self) -> dict:
        return {"round": self.round, "finished": list(self.finished)}

    def load_state_dict(self, state: dict) -> None:
        self.finished[:] = state["finished"]

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        return {TEACHER_WEIGHTS: self.teacher_net.state_dict()}


def loop_config(config: RunConfig, settings: DistillSettings, batch_size: int) -> RunConfig:
    """What one round's Trainer runs: the student's config with the round's optimisation (a
    round of settings.rounds_steps steps, the LR annealed linearly to 0 without warm-up, as in
    the paper), the run's gradient clipping, EMA and p_uncond, and the settings' seed."""
    s = settings
    train = dataclasses.replace(
        config.train, steps=s.rounds_steps, epochs=None, batch_size=batch_size, lr=s.lr, weight_decay=ADAMW_WEIGHT_DECAY,
        warmup_steps=0, lr_decay="linear", grad_accum=s.grad_accum, num_workers=0, log_every=s.log_every, sample_every=0,
        checkpoint_every=s.checkpoint_every, keep=2, precision=s.precision, compile=False, loggers=s.loggers, eval_every=0,
        posthoc_ema=(), posthoc_every=0, guide_at=0.0, guide_width=0)  # a student keeps no guide of its own
    return dataclasses.replace(config, seed=s.seed, train=train)


class Distillation:
    """The rounds of progressive distillation of `teacher_run` into `out`, each a Trainer of a
    DistillRound, with a checkpoint every settings.checkpoint_every steps of a round and at its
    end; `fit(resume=True)` continues the newest checkpoint. Every process torchrun started
    builds the same Distillation; rank 0 alone writes."""

    def __init__(self, teacher_run: Run, out: Path, settings: DistillSettings, *, device: torch.device,
                 world: World = World(), report: Callable[[str], None] = lambda message: None, progress: bool = True):
        self.first, self.out, self.s, self.device, self.world = teacher_run, Path(out), settings, device, world
        self.report, self.progress = report, progress
        self.config = student_config(teacher_run.config)
        self.grid = start_grid(self.config.diffusion.num_steps, settings.start_steps)
        self.batch_size = settings.batch_size or teacher_run.config.train.batch_size
        self.loop = loop_config(self.config, settings, self.batch_size)
        self.kind = build.modality(self.config)
        self.dataset, _ = self.kind.load(teacher_run.config.seed)
        self.generator = torch.Generator().manual_seed(settings.seed)  # t, ε, dropout: one stream over the rounds
        self.logger = build.loggers(self.loop, self.out) if world.is_main else Loggers()
        self.finished: list[dict] = []  # the record of each finished round
        self.saved_round = 0  # the round of the newest checkpoint: the weights at the top level

    def round_trainer(self, k: int, weights: nn.Module) -> Trainer:
        """Round k's Trainer: the teacher `weights` (as it samples: the run's clipping, its guidance
        at w = 0, under the precision's autocast), a student and its EMA initialised from them, a
        fresh optimiser; on its last step it writes the student (students/steps-S.safetensors)."""
        teacher_config = self.first.config if k == 0 else self.config
        teacher_net = copy.deepcopy(weights).to(self.device).eval().requires_grad_(False)
        dtype = autocast_dtype(self.loop.train.precision, self.device)
        teacher_model = teacher_net if dtype is None else Autocast(teacher_net, self.device.type, dtype)
        teacher_run = build.make_run(self.out, teacher_config, teacher_model)
        teacher = teacher_run.denoiser
        if k == 0 and self.first.guide is not None:  # the first teacher as it samples, autoguided (Karras et al. 2024)
            guided = SamplingRequest(guidance=Guidance(autoguide=self.first.guide.name, autoguide_scale=self.s.autoguide_scale))
            teacher = denoiser(dataclasses.replace(teacher_run, guide=self.first.guide), guided)
        net = copy.deepcopy(weights).to(self.device).train().requires_grad_(True)
        model = build.training_model(net, self.loop, self.device, self.world)
        grid = self.grid[:: 2**k]
        objective = DistillRound(build.build_denoiser(self.config, model), teacher, teacher_net, grid, round=k,
                                 finished=self.finished, num_classes=self.config.num_classes,
                                 p_uncond=self.config.train.p_uncond)
        steps, started = objective.student_steps, time.perf_counter()

        def saved(step: int) -> None:
            self.saved_round = k
            self._write_record()

        trainer = Trainer(
            self.loop, net, objective, self.dataset, self.out, modality=self.kind, device=self.device, model=model,
            on_checkpoint=saved, logger=self.logger, report=self.report, progress=self.progress, world=self.world,
            optimizer=lambda params: torch.optim.AdamW(params, lr=self.s.lr, weight_decay=ADAMW_WEIGHT_DECAY),
            generator=self.generator, origin=k * self.s.rounds_steps, tags={"round": k + 1, "student_steps": steps},
            description=f"round {k + 1}/{len(self.s.rounds)}: {len(grid)} -> {steps} steps")

        def end() -> None:
            weights = student_weights_path(self.out, steps)
            if self.world.is_main:
                weights.parent.mkdir(exist_ok=True)
                checkpoint.save_weights(weights, trainer.ema.model.state_dict())
            self.finished.append({"round": k + 1, "teacher_steps": len(grid), "student_steps": steps,
                                  "steps": self.s.rounds_steps, "seconds": round(time.perf_counter() - started, 2),
                                  "final_loss": trainer.interval.last_loss, "grid": [int(t) for t in grid[::2]],
                                  "weights": str(weights.relative_to(self.out))})

        trainer.on_end = end
        return trainer

    def fit(self, resume: bool = False) -> list[dict]:
        """Every round left (with `resume`, from the newest readable checkpoint: inside a round, or
        the next round when it ended one); returns the finished rounds' records."""
        k, weights, inside = 0, self.first.net, False
        if resume:
            k, weights, inside = self._resume_point()
        while k < len(self.s.rounds):
            if self.world.is_main:
                self._write_record()
            trainer = self.round_trainer(k, weights)
            if inside:
                trainer.resume()
                inside = False
            trainer.fit()
            trainer.close()  # before the process group goes
            weights = trainer.ema.model  # the next round's teacher and student start from the EMA
            k += 1
        if self.world.is_main:
            self._write_record()
        return self.finished

    def _resume_point(self) -> tuple[int, nn.Module, bool]:
        """(round, the weights it starts from, whether it resumes inside that round) of the newest
        readable checkpoint."""
        readable = checkpoint.newest_readable(self.out, self.report)
        if readable is None:
            raise UserError(f"{self.out} has no complete checkpoint to resume from")
        found, (_, ema, state), _ = readable
        if "objective" not in state:
            raise UserError(f"{found} was written by an older ddpmkit whose distillations do not resume on the training "
                            "loop; distil again into a new --out")
        k, step = int(state["objective"]["round"]), int(state["step"])
        self.finished[:] = state["objective"]["finished"]
        self.saved_round = k
        self.report(f"resuming the distillation in {self.out} from step {step}")
        weights = build.build_net(self.config)
        if step < (k + 1) * self.s.rounds_steps:  # inside round k: its teacher; the Trainer restores the rest
            checkpoint.load_matching(weights, checkpoint.load_weights(found / TEACHER_WEIGHTS), found / TEACHER_WEIGHTS)
            return k, weights, True
        checkpoint.load_matching(weights, ema, found / "ema.safetensors")  # a round's end: the next starts from its EMA
        self.generator.set_state(state["generator"])
        if self.world.is_main:
            rundir.truncate_log(self.out, step, self.report)
        return k + 1, weights, False

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


def check_out(out: Path, teacher_dir: Path | None, settings: DistillSettings, overwrite: bool = False) -> bool:
    """Whether `out` is a distillation to continue (True) or a new one (False); refuses a folder
    that holds anything else (unless `overwrite`: a folder that is no run, emptied by api.distill
    once the teacher has loaded), or a distillation of another teacher or with other settings."""
    out = Path(out)
    rundir.check_writable(out)
    record = rundir.read_distill_record(out) if out.is_dir() else None
    if record is None:
        if out.is_dir() and any(out.iterdir()) and (not overwrite or (out / rundir.CONFIG).is_file()):
            what = "a run directory" if (out / rundir.CONFIG).is_file() else "not empty"
            way = "" if what == "a run directory" else ", or pass --overwrite to replace it as a whole"
            raise UserError(f"--out {out} is {what}; distill into a new or empty folder (or --resume a distillation){way}")
        return False
    if teacher_dir is not None and Path(record["teacher"]).resolve() != Path(teacher_dir).resolve():
        raise UserError(f"--out {out} distils {record['teacher']}, not {teacher_dir}; choose another --out")
    recorded = {**RUNNING, **record["settings"]}
    differ = [k for k, v in settings.to_dict().items() if recorded.get(k) != v]
    if differ:
        raise UserError(f"--out {out} was distilled with other settings ({', '.join(differ)}); repeat its own options "
                        "(distill.json) or use --resume with none of them")
    return True


def recorded_settings(out: Path) -> tuple[Path, DistillSettings]:
    """The teacher and settings of the distillation in `out` (for --resume)."""
    record = rundir.read_distill_record(out)
    if record is None:
        raise UserError(f"--resume {out} holds no distillation (no distill.json); start one with --run and --out")
    return Path(record["teacher"]), DistillSettings.from_dict(record["settings"])


def distill(teacher_run: Run, out: Path, settings: DistillSettings, *, resume: bool, device: torch.device,
            world: World = World(), report: Callable[[str], None] = lambda message: None, progress: bool = True) -> list[dict]:
    """Distil `teacher_run` (its EMA weights, as loaded) into `out`; continue it with `resume`.
    Under torchrun every process calls it with its `world`; rank 0 alone writes."""
    if teacher_run.config.diffusion.prediction not in ("eps", "x0", "v"):  # the adapter takes any of them
        raise UserError(f"prediction {teacher_run.config.diffusion.prediction!r} cannot be distilled")
    distillation = Distillation(teacher_run, out, settings, device=device, world=world, report=report, progress=progress)
    again = resume and checkpoint.newest_checkpoint(out) is not None
    world.barrier()  # every rank has looked at `out` before rank 0 writes into it
    if not again and world.is_main:
        rundir.write_config(out, distillation.config)
        rundir.truncate_log(out, 0)
    return distillation.fit(resume=again)
