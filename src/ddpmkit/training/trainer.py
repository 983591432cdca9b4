"""One training loop for every objective (objective.py: the diffusion loss of Algorithm 1 of
Ho et al. 2020, a round of progressive distillation, the noise-aware classifier), with the
engineering around it: AdamW, LR warm-up and decay, gradient clipping, EMA and post-hoc EMA
profiles, gradient accumulation, non-finite guards, logs and atomic checkpoints, on one process
or data-parallel over the processes torchrun starts, in fp32 or mixed precision, eager or compiled.

Data parallelism keeps one process's arithmetic: the global batch k is the same BatchStream batch whatever
the number of processes N, t, ε and augmentation are drawn for the whole global batch from the one shared
generator, and each rank keeps its contiguous rows. Without dropout, N processes therefore compute what one
process would, up to the order of floating-point sums, and a checkpoint resumes exactly with any N. (Every
rank draws the whole batch's noise, small beside the network.) Dropout masks are the exception: the network
draws them from torch's global RNG, which each rank seeds on its own, so with dropout > 0 N processes train an
equally good but not an identical model, and a checkpoint resumes exactly only with the same N (each rank's
RNG states are in state.pt). Built objects come in (network, objective, data, kind, augmentation, post-hoc EMA
profiles, autoguidance's narrow guide): diffusion.trainer, distill.distill and classifier.fit assemble them.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import checkpoint, rundir
from ..config import RunConfig, lr_factor
from ..data import batches
from ..distributed import World
from ..ema import EMA
from ..errors import UserError
from ..loggers import Logger, Loggers
from ..posthoc_ema import PowerEMA
from ..training_log import LogInterval, quality_text
from .guide import NarrowGuide
from .objective import Augmentation, Batch, Objective, ReplicasDiverged, TrainingDiverged, TrainResult

__all__ = ["Augmentation", "ReplicasDiverged", "TrainResult", "Trainer", "TrainingDiverged", "lr_factor"]


class Trainer:
    """Train `net` on `dataset` by `objective` as `config` says, writing into `run_dir`.

    net: the plain network on `device` (its state_dict is what checkpoints hold).
    objective: the loss (objective.Objective), calling `model`.
    model: `net` as training runs it (under autocast, data-parallel, compiled:
        build.training_model); the objective's networks call it. Default: `net`.
    modality: the run's kind of data: turns a raw batch into model space.
    augment: optional Augmentation of each micro-batch.
    posthoc: optional PowerEMA profiles of `net` (post-hoc EMA), updated after every step like
        the EMA, snapshotted into run_dir/posthoc/ every config.train.snapshot_every steps and
        at the end, and saved in each checkpoint (posthoc.safetensors) so that --resume continues them exactly.
    guide: optional guide.NarrowGuide, autoguidance's narrow guide trained beside `net` (the objective adds its loss;
        guide.py says how); at train.guide_step its EMA, not `net`'s, is kept as RUN/guide.safetensors.
    on_sample: called as on_sample(step, ema_net) every `sample_every` steps; returns the
        picture it wrote, or None (the caller draws the final pictures).
    on_eval: called as on_eval(step, ema_net) every `eval_every` steps and at the last step;
        returns the quality fields of a log.jsonl record (evaluation.during.measure_quality_now).
        The step whose measure is lowest keeps its weights in RUN/best/.
    on_step: called as on_step(step) after every optimiser step and what is due at it (log
        record, measurement, checkpoint, picture), on every rank: a caller's hook (tests stop
        training there as a kill would).
    on_end: called as on_end() once the last step is taken, before the last checkpoint.
    on_checkpoint: called as on_checkpoint(step) after each checkpoint is written (rank 0).
    logger: where the log records, measurements and pictures also go (loggers.Logger; rank 0).
    report: where one-line messages go (the CLI passes print).
    optimizer: makes the optimiser of the parameter groups, `net`'s and the guide's (default: AdamW
        at config.train's lr and weight decay, fused on CPU and CUDA).
    generator: the generator every rank shares for t, ε, augmentation and label dropout
        (default: a fresh one seeded by config.seed); a caller that runs several Trainers
        one after the other (the rounds of a distillation) passes one on.
    origin: the step this Trainer's schedule starts at: it trains to origin + train.steps,
        and its LR schedule, log records and checkpoints count from there (a distillation's
        round k starts at k·steps; a training run at 0).
    tags: fields added to every log record (a distillation's round).
    description: the progress bar's label.
    world: the data-parallel processes (World(): one process). Every rank builds the same
    Trainer and calls fit(); rank 0 alone logs, samples and writes the run directory.
    """

    def __init__(
        self, config: RunConfig, net: nn.Module, objective: Objective, dataset: torch.utils.data.Dataset, run_dir: Path, *,
        modality, device: torch.device, model: nn.Module | None = None, augment: Augmentation | None = None,
        posthoc: PowerEMA | None = None, guide: NarrowGuide | None = None, on_sample: Callable[[int, nn.Module], Path | None] | None = None,
        on_eval: Callable[[int, nn.Module], dict] | None = None, on_step: Callable[[int], None] | None = None,
        on_end: Callable[[], None] | None = None, on_checkpoint: Callable[[int], None] | None = None,
        logger: Logger | None = None, report: Callable[[str], None] = lambda message: None, progress: bool = True,
        world: World = World(), optimizer: Callable[[list[dict]], torch.optim.Optimizer] | None = None,
        generator: torch.Generator | None = None, origin: int = 0, tags: dict | None = None, description: str | None = None,
    ):
        self.config, self.train, self.world = config, config.train, world
        self.run_dir = Path(run_dir)
        self.device = device
        self.net, self.objective, self.model = net, objective, net if model is None else model
        self.dataset, self.modality, self.augment = dataset, modality, augment
        self.posthoc, self.guide = posthoc, guide
        self.on_sample, self.on_eval, self.report = on_sample, on_eval, report if world.is_main else lambda message: None
        self.on_step, self.on_end, self.on_checkpoint = on_step, on_end, on_checkpoint
        self.tags, self.description = dict(tags or {}), description
        self.logger = logger if logger is not None and world.is_main else Loggers()
        self.best: dict | None = checkpoint.best_meta(run_dir) if world.is_main else None  # best/'s record
        self.logged = 0  # the last step an interrupted session logged (set by resume)
        self.progress = progress and world.is_main
        if self.train.batch_size % (self.train.grad_accum * world.size):
            raise UserError(f"--batch-size {self.train.batch_size} is the global batch and must be divisible by "
                            f"--grad-accum × processes = {self.train.grad_accum} × {world.size}")
        # Dropout and anything else on the global RNG: its own stream on each rank (so with
        # dropout N ranks do not draw the masks one process would; see the module docstring).
        torch.manual_seed(config.seed if world.is_main else hash((config.seed, world.rank)) % 2**63)
        self.ema = EMA.of(self.net, self.train)
        params = [{"params": list(m.parameters())} for m in (self.net, *([guide.net] if guide else []))]  # a group each
        self.optimizer = optimizer(params) if optimizer is not None else torch.optim.AdamW(
            params, lr=self.train.lr, weight_decay=self.train.weight_decay,
            fused=True if device.type in ("cuda", "cpu") else None)  # one kernel for the whole update
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.train))
        # fp16's narrow range needs the loss scaled up and the gradients back down (Micikevicius et al. 2018).
        fp16 = self.train.precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type) if fp16 else None
        # t, ε, augmentation and label dropout: shared by all ranks
        self.generator = torch.Generator().manual_seed(config.seed) if generator is None else generator
        self.origin = origin  # the step the schedule starts at
        self.step = origin  # optimiser steps completed
        self.saved_step: int | None = None  # step of the checkpoint last written or resumed from
        self.interval = LogInterval(track_overflow=fp16)  # the log record being summed
        self.nonfinite_total = 0
        self.overflow_total = 0  # fp16 steps the loss scaler skipped
        if world.active:
            backend = "nccl" if device.type == "cuda" else "gloo"
            self.report(f"data parallel over {world.size} processes ({backend}): {self.train.batch_size} examples per step, "
                        f"{self.train.batch_size // world.size} per process")

    # ---- state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The training state; a collective when data-parallel (every rank must call it)."""
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict(),
            **({"posthoc": self.posthoc.state_dict()} if self.posthoc is not None else {}),
            **({"guide": self.guide.state_dict()} if self.guide is not None else {}),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "nonfinite_total": self.nonfinite_total,
            "overflow_total": self.overflow_total,
            "processes": self.world.size,
            "log_interval": self.interval.state_dict(),  # a log record that straddles the checkpoint
            "origin": self.origin,
            "objective": self.objective.state_dict(),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.world.active:  # each rank's dropout stream, so that the same N resumes exactly
            state["torch_rng_ranks"] = list(self.world.all_gather(torch.get_rng_state().to(self.device)).cpu())
        if self.device.type == "cuda":  # dropout on a GPU draws from the device's own generator
            mine = torch.cuda.get_rng_state(self.device)
            state["cuda_rng_ranks"] = list(self.world.all_gather(mine.to(self.device)).cpu())
        return state

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0; the others return None). Data-parallel, a collective
        that first checks every rank holds bit-identical weights and EMA weights and
        records their digests in the state."""
        state = self.state_dict()
        if self.world.active:
            mine = torch.stack([checkpoint.weights_digest(self.net), checkpoint.weights_digest(self.ema.model)])  # [2, 32]
            digests = self.world.all_gather(mine.to(self.device)).cpu()  # [N, 2, 32]
            if not bool((digests == digests[0]).all()):
                raise ReplicasDiverged(f"at step {self.step} the {self.world.size} processes hold different weights; "
                                       "this is a bug in ddpmkit, please report it")
            state["replica_digests"] = {
                name: [bytes(d[i].tolist()).hex() for d in digests] for i, name in enumerate(("model", "ema"))
            }
        path = None
        if self.world.is_main:
            extra = {**self.objective.files(), **(self.guide.files() if self.guide is not None else {}),
                     **({checkpoint.POSTHOC_WEIGHTS: self.posthoc.weights()} if self.posthoc is not None else {})}
            path = checkpoint.save_checkpoint(
                self.run_dir, self.step, self.net.state_dict(), self.ema.model.state_dict(), state, self.train.keep,
                extra or None,
            )
        self.saved_step = self.step
        if path is not None and self.on_checkpoint is not None:
            self.on_checkpoint(self.step)
        return path

    def resume(self) -> int:
        """Load the newest complete checkpoint of run_dir/checkpoints that reads (every rank
        reads it; the top-level weight files are not read); returns its step. A newer one that
        cannot be read (checkpoint.newest_readable) is reported, skipped and set aside unchanged
        as damaged-step-N, so that training writes its step again. The number of processes
        may differ from the run that wrote it."""
        readable = checkpoint.newest_readable(self.run_dir, self.report)
        if readable is None:
            raise UserError(f"{self.run_dir} has no complete checkpoint to resume from")
        found, (model, ema, state), damaged = readable
        for module, weights, name in ((self.net, model, "model.safetensors"), (self.ema.model, ema, "ema.safetensors")):
            checkpoint.load_matching(module, weights, found / name)
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # not the state this trainer writes
            raise checkpoint.DamagedCheckpoint(f"{found / 'state.pt'} does not hold a ddpmkit training state that "
                                               f"fits this run ({type(e).__name__}: {e})") from None
        if self.posthoc is not None:
            if "posthoc" not in state:
                raise UserError(f"{found} holds no post-hoc EMA profiles (the run was trained without --posthoc-ema); "
                                "resume it with its own config.json")
            self.posthoc.load_state_dict(state["posthoc"])
            self.posthoc.load_weights(checkpoint.load_weights(found / checkpoint.POSTHOC_WEIGHTS))
        if self.guide is not None:
            self.guide.load(found, state)
        if self.world.is_main:
            self.logged = rundir.last_logged_step(self.run_dir)  # before the records after the checkpoint go
            rundir.truncate_log(self.run_dir, self.step, self.report)
            checkpoint.remove_snapshots_after(self.run_dir, self.step)  # taken again, from the same state
            rundir.copy_top_level(self.run_dir, found)  # mends top-level files a crash left a step apart
        self.world.barrier()  # every rank has read the checkpoint before rank 0 may write the next or set one aside
        if self.world.is_main:
            for path in damaged:
                self.report(f"{path.name} is kept, unchanged, as {checkpoint.set_aside(path).name}")
        self.world.barrier()
        return self.step

    def _load_state(self, state: dict) -> None:
        """Restore the optimiser, schedule, EMA, generators and counters of a state.pt."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        rank_states = state.get("torch_rng_ranks", [state["torch_rng"]])
        if self.world.rank < len(rank_states):  # a rank the writing run did not have keeps its fresh stream
            torch.set_rng_state(rank_states[self.world.rank])
        cuda_states = state.get("cuda_rng_ranks", [])  # absent when the writing run was on a CPU
        if self.device.type == "cuda" and self.world.rank < len(cuda_states):
            torch.cuda.set_rng_state(cuda_states[self.world.rank], self.device)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.overflow_total = int(state.get("overflow_total", 0))
        self.interval.load_state_dict(state.get("log_interval", {}))  # older checkpoints: start a fresh record
        self.origin = int(state.get("origin", 0))
        self.objective.load_state_dict(state.get("objective", {}))
        self.saved_step = self.step

    # ---- the loop --------------------------------------------------------------------
    def close(self) -> None:
        """Training is over: drop the wrappers of the network (data-parallel, compiled, autocast) and the
        objective's networks over them (the narrow guide's among them), while the process group is still up.
        A DDP wrapper left for interpreter shutdown holds the group's communication threads, and a gloo rank
        was now and then aborted there ("terminate called without an active exception"). The plain network,
        its EMA and the optimiser stay."""
        import gc

        self.model = self.objective = None
        gc.collect()

    def fit(self) -> TrainResult:
        """Train from the current step to origin + config.train.steps: one `_step` per optimiser
        step, then the log record, checkpoint and sample picture when they are due."""
        train = self.train
        end = self.origin + train.steps
        # Every checkpoint this call writes is of a later step than any already on disk:
        # a complete checkpoint is never overwritten.
        newer = [p for p in checkpoint.complete_checkpoints(self.run_dir) if checkpoint.checkpoint_step(p) > self.step]
        if newer:
            raise UserError(f"{self.run_dir} already holds checkpoints up to {newer[-1].name}, beyond step {self.step}; "
                            "resume that run, or train into a new directory")
        micro = train.batch_size // train.grad_accum  # global micro-batch
        stream = batches(self.dataset, micro, self.config.seed, self.step * train.grad_accum, train.num_workers,
                         shard=(self.world.rank, self.world.size))
        self._consecutive_bad = 0
        self._started = self._last_log_time = time.perf_counter()
        self._last_log_step = first = self.step
        bar = tqdm(total=train.steps, initial=self.step - self.origin, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=self.description)
        self.model.train()
        loss, quality = None, None  # what the progress bar shows: the latest loss and quality measurement
        try:
            self.logger.start(self.config.to_dict(), self.step, max(self.logged, self.step))
            while self.step < end:
                lr = self._step(stream, micro)
                bar.update(1)
                last, done = self.step == end, self.step - self.origin
                logs = done % train.log_every == 0 or last
                evaluates = bool(train.eval_every) and (done % train.eval_every == 0 or last)
                if logs:
                    loss = self._log(lr)["loss"]
                if evaluates:
                    quality = self._evaluate() or quality
                if (logs or evaluates) and loss is not None:
                    bar.set_postfix_str(self._epoch_text() + f"loss {loss:.4f}" + (f", {quality}" if quality else ""))
                if self.step == train.guide_step and self.world.is_main:  # autoguidance's guide (Karras et al. 2024)
                    kept = self.ema if self.guide is None else self.guide.ema  # the narrow guide's, when one trains
                    checkpoint.save_guide(self.run_dir, self.step, kept.model.state_dict())
                if self.posthoc is not None and done % train.snapshot_every == 0:
                    self._snapshot()  # before the checkpoint of the same step: a checkpoint implies its snapshots
                if train.checkpoint_every and done % train.checkpoint_every == 0 and not last:
                    self.save()
                if train.sample_every and done % train.sample_every == 0 and not last:
                    self._sample()
                if self.on_step is not None:
                    self.on_step(self.step)
            if self.step != self.saved_step:  # a resumed run that had no steps left writes nothing
                if self.posthoc is not None and (self.step - self.origin) % train.snapshot_every:
                    self._snapshot()  # the end of training: what `ddpmkit ema` reconstructs at
                if self.on_end is not None:
                    self.on_end()
                self.save()
        finally:
            bar.close()
            self.logger.close()
        return TrainResult(self.step, time.perf_counter() - self._started, self.interval.last_loss, self.nonfinite_total,
                           best=self.best, first_step=first)

    def _epoch_text(self) -> str:
        """'epoch 2.50/10, ' on the progress line of an --epochs run ('' otherwise)."""
        if self.train.epochs is None:
            return ""
        return f"epoch {self.train.epoch_at(self.step, len(self.dataset)):.2f}/{self.train.epochs}, "

    def _step(self, stream, micro: int) -> float:
        """One optimiser step: the gradients of train.grad_accum micro-batches, then the
        update, skipped when any rank's loss or gradient is not finite; returns the step's
        learning rate."""
        losses, ts, grad_norms = self._gradients(stream, micro)
        loss_ok, grad_ok = bool(torch.isfinite(losses).all()), bool(torch.isfinite(grad_norms).all())
        finite = loss_ok and grad_ok
        overflow = self.scaler is not None and loss_ok and not grad_ok  # fp16 loss scale too high: not divergence
        if finite:
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
            self.ema.update(self.net)  # on every rank, from identical weights: identical EMA
            if self.posthoc is not None:
                self.posthoc.update(self.net)
            if self.guide is not None:
                self.guide.update(self.step)
            self._consecutive_bad = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            if overflow:
                self.overflow_total += 1
            else:
                self.nonfinite_total += 1
                self._consecutive_bad += 1
        if self.scaler is not None:
            self.scaler.update()  # halves the scale after an overflow, grows it after a run of good steps
        lr = self.optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():
            # A skipped first update makes torch warn that the schedule steps before the optimiser: that is meant.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        self.step += 1
        self.interval.add(losses, ts, self.config.diffusion.num_steps, float(grad_norms[0, 0]), finite, overflow)
        if self._consecutive_bad >= self.train.max_nonfinite:
            self._log(lr)
            last = checkpoint.newest_checkpoint(self.run_dir)
            kept = f"the last good checkpoint ({last.name}) is untouched" if last else "no checkpoint was written"
            raise TrainingDiverged(
                f"training stopped at step {self.step}: {self._consecutive_bad} steps in a row had a non-finite "
                f"loss or gradient; {kept}. Train a new run (--out) with a lower --lr or --grad-clip"
            )
        return lr

    def _gradients(self, stream, micro: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Accumulate the gradients of one step's micro-batches (clipped, unscaled under fp16) and gather
        every rank's per-example losses [A·B], timesteps [A·B] and gradient norms [N, G] (per parameter
        group, `net`'s first), so the log and the decision to skip a step are the global ones on every rank."""
        train, world = self.train, self.world
        rows = world.rows(micro)  # this rank's rows of each global micro-batch
        self.optimizer.zero_grad(set_to_none=True)
        step_losses, step_t = [], []
        for i in range(train.grad_accum):
            raw, labels = next(stream)  # this rank's rows of the global micro-batch
            x0 = self.modality.to_model_space(raw.to(self.device))  # [b, ...] model space on the device
            # Randomness for the whole global micro-batch from the shared generator, this
            # rank's rows kept: N processes draw exactly what one process would.
            if self.augment is not None:
                x0 = self.augment(x0, self.augment.draw(micro, self.generator)[rows])
            batch = Batch(x0, labels, micro, rows, self.generator, self.step)
            # Gradients are averaged over the ranks once per step, after the last micro-batch.
            last = i == train.grad_accum - 1
            with contextlib.nullcontext() if last or not world.active else self.model.no_sync():
                per_sample, t = self.objective.losses(batch)  # [b], [b]
                loss = per_sample.mean() / train.grad_accum
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            step_losses.append(per_sample.detach())
            step_t.append(t)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # true gradients, for clipping and the norm
        norms = torch.stack([torch.nn.utils.clip_grad_norm_(group["params"], train.grad_clip or float("inf")).float().to(
            self.device) for group in self.optimizer.param_groups])  # [G]: each network clipped on its own norm
        mine = torch.cat([torch.cat(step_losses).float(), torch.cat(step_t).float(), norms])
        everything = world.all_gather(mine)  # [N, 2·A·b + G]: one collective
        n = (everything.shape[1] - len(norms)) // 2
        return everything[:, :n].reshape(-1), everything[:, n : 2 * n].reshape(-1).long(), everything[:, 2 * n :]

    def _log(self, lr: float) -> dict:
        """Close the log interval: its record (with the examples trained on per second since
        the last one), appended to log.jsonl and given to the loggers by rank 0."""
        now = time.perf_counter()
        record = self.interval.record(self.step, lr, now - self._started)
        record["examples_per_s"] = round((self.step - self._last_log_step) * self.train.batch_size / max(now - self._last_log_time, 1e-9), 2)
        record["epoch"] = round(self.train.epoch_at(self.step, len(self.dataset)), 4)  # passes over the training set so far
        record.update(self.tags)
        self._last_log_time, self._last_log_step = now, self.step
        if self.world.is_main:
            rundir.append_log(self.run_dir, record)
            self.logger.log_scalars(self.step, {f"train/{k}": v for k, v in record.items() if k not in ("step", "elapsed_s")})
        return record

    def _evaluate(self) -> str | None:
        """Measure the EMA weights' sample quality (rank 0): a log.jsonl record, the loggers, and
        RUN/best/ when the measure is the lowest so far. Returns the measurement in short."""
        if self.on_eval is None or not self.world.is_main:
            return None
        was_training = self.ema.model.training
        record = {"step": self.step, **self.on_eval(self.step, self.ema.model)}
        self.ema.model.train(was_training)
        rundir.append_log(self.run_dir, record)
        s = record["samples"]
        beside = f" ({s['num']} samples, {s['sampler']} {s['steps']} steps)"
        self.logger.log_scalars(self.step, {**{f"quality/{k}{beside}": v for k, v in record["quality"].items()},
                                            "quality/eval_s": record["eval_s"]})
        value = record["quality"][record["metric"]]
        if math.isfinite(value) and (self.best is None or value < self.best["quality"][self.best["metric"]]):
            checkpoint.save_best(self.run_dir, self.step, self.net.state_dict(), self.ema.model.state_dict(),
                                 {k: v for k, v in record.items() if k != "step"})
            self.best = record
        return quality_text(record)

    def _snapshot(self) -> None:
        """Each post-hoc EMA profile as it is now, into run_dir/posthoc/ (rank 0)."""
        if self.world.is_main:
            for sigma_rel, model in zip(self.posthoc.sigma_rels, self.posthoc.models):
                checkpoint.save_snapshot(self.run_dir, self.step, self.posthoc.num_updates, sigma_rel, model.state_dict())

    def _sample(self) -> None:
        if self.on_sample is not None and self.world.is_main:
            picture = self.on_sample(self.step, self.ema.model)
            if picture is not None:
                self.logger.log_image(self.step, "samples", picture)
