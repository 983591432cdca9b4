"""The Python API the CLI is a thin layer over: a table of contents of what ddpmkit does.

    from ddpmkit import api
    config = api.default_config("moons")
    result = api.train(config, "runs/moons")
    points = api.sample("runs/moons", 2000, "runs/moons/samples", api.SamplingRequest(seed=0))

Each function is a few calls into the rooms that do the work: presets and modality (what a
data set's run looks like), build (assembly), train (the loop), sampling (the one sampling
request and drawing), pictures, evaluation (measures and metrics.json), posthoc_ema (post-hoc
EMA), editing (SDEdit, RePaint, interpolation on the user's images), classifier (the
noise-aware classifier of classifier guidance) and rundir (the files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import build, checkpoint, classifier, distributed, editing, evaluation, modelcard, pictures, rundir, sampling
from .classifier import ClassifierTraining
from .config import DataConfig, RunConfig
from .distill import DistillSettings, check_out, recorded_settings
from .distill import distill as distill_run
from .errors import UserError
from .evaluation import QualitySettings, toy_distances  # noqa: F401  (part of the API: 2-D samples against fresh points)
from .evaluation.scores import Scores, ScoreSettings, score_images, write_scores
from .interop import diffusers as diffusers_interop
from .modality import images_only, modality_for
from .pictures import SampleFiles
from .posthoc_ema import SWEEP_SIGMA_RELS, Reconstruction, reconstruct
from .sampling import Guidance, Samples, SamplingRequest, draw  # noqa: F401  (part of the API)
from .schedules import schedule_tables
from .train import TrainResult


def default_config(data: str = "digits") -> RunConfig:
    """The preset of a data set (presets.py says why each number is what it is)."""
    return modality_for(data).preset()


def train(
    config: RunConfig,
    run_dir: Path | str,
    *,
    device: str | None = None,
    resume: bool = False,
    report=lambda message: None,
    progress: bool = True,
    pictures: bool = True,
) -> TrainResult:
    """Train `config` into `run_dir` (or continue it with resume=True: from its newest checkpoint
    that reads, or from step 0 if it has none) and, with `pictures`,
    draw the end-of-run pictures (samples, forward process, loss curve; 2-D runs also store
    their distance to fresh points in metrics.json).

    Launched by torchrun with N processes, each process calls this: they train one model
    data-parallel (config.train.batch_size is the global batch) and rank 0 alone writes
    the run directory and reports; `device` "cuda" then means each rank's own GPU."""
    run_dir = Path(run_dir)
    # A run stopped before its first checkpoint (config.json alone) restarts in place from step 0.
    restart = resume and checkpoint.newest_checkpoint(run_dir) is None
    with distributed.launch(device) as (world, dev):
        say = report if world.is_main else lambda message: None
        trainer, config, dataset = build.trainer(config, run_dir, world, device=dev, report=say, progress=progress)
        say(f"writing the run to {run_dir}")
        if restart:
            say(f"{run_dir} has no complete checkpoint (training stopped before the first one): "
                "starting it again from step 0 with its config.json")
            if world.is_main:
                rundir.truncate_log(run_dir, 0)  # the stopped attempt's records
        elif resume:  # reads and checks the checkpoint (a clear error if it does not fit config.json)
            say(f"resuming from step {trainer.resume()}")
        # config.json is written once the options, the data and any checkpoint have been checked.
        world.barrier()  # every rank has looked at run_dir (the CLI checks it) before rank 0 writes into it
        if world.is_main:
            rundir.write_config(run_dir, config)
        result = trainer.fit()
        trainer.close()  # before the process group goes
        if not world.is_main or not pictures:
            return result
    _draw_training_pictures(build.make_run(run_dir, config, trainer.ema.model), dataset)
    return result


def _draw_training_pictures(run: sampling.Run, dataset) -> None:
    pictures.loss_curve(run.directory)
    pictures.quality_curve(run.directory)  # quality.png, when the run measured its quality (--eval-every)
    samples = pictures.for_kind(run.modality).training(run, dataset, run.directory)
    measured = evaluation.measures(run.modality).end_of_training(run, samples) if samples is not None else {}
    if measured:
        evaluation.write_metrics(run.directory, measured)


def distill(run_dir: Path | str | None, out: Path | str, settings: DistillSettings = DistillSettings(), *,
            resume: bool = False, device: str | None = None, report=lambda message: None, progress: bool = True) -> list[dict]:
    """Progressive distillation (distill.py) of a run's EMA weights into a run directory `out`
    whose students sample with DDIM on settings.to_steps steps by default; `out` holding the same
    distillation (or resume=True, run_dir None: its own teacher and settings) continues it.
    Returns each finished round's record (also in out/distill.json)."""
    out = Path(out)
    if resume:
        run_dir, settings = recorded_settings(out)
    elif run_dir is None:
        raise UserError("distill needs the --run to distil (or --resume OUT)")
    again = check_out(out, Path(run_dir), settings)
    teacher = build.load_run(Path(run_dir), "ema", device=distributed.pick_device(device))
    if settings.autoguide not in (None, "none"):
        teacher = build.load_guide(teacher, settings.autoguide)
    return distill_run(teacher, out, settings, resume=resume or again, device=teacher.device, report=report,
                       progress=progress)


def sample(run_dir: Path | str, n: int, out: Path | str, request: SamplingRequest = SamplingRequest(),
           files: SampleFiles = SampleFiles(), *, device: str | None = None, report=lambda message: None) -> np.ndarray:
    """Write out/samples.npy and out/samples.png (and what `files` asks: reverse.gif, strip.png, a
    PNG folder) of n samples drawn as `request` says (n of every class for classes "all", a grid
    row each, with labels.npy), and out/sample.json, how they were drawn (the request as resolved);
    returns the data-space samples."""
    out = Path(out)
    rundir.check_output(out)
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    if files.png_dir is not None:
        images_only(run.modality, "--png-dir", "its samples are in samples.npy")
    r = request.resolve(run)
    note = sampling.off_grid_note(run, r)
    if note:
        report(note)
    gif_steps, strip_steps = pictures.kept_steps(run.config.diffusion.num_steps, sampling.grid(run, r), files, report)
    samples = draw(run, n, r, keep=sorted(set(gif_steps) | set(strip_steps)) if gif_steps or strip_steps else None)
    out.mkdir(parents=True, exist_ok=True)  # once every option has been checked: bad input creates nothing
    if samples.labels is not None:
        rundir.save_npy(out / "labels.npy", samples.labels.numpy())
    rundir.save_npy(out / "samples.npy", samples.data)
    pictures.sample_files(run, samples, out, files, gif_steps, strip_steps, rows=run.classes if r.classes == sampling.ALL else None)
    rundir.write_sample_record(out, {"num": len(samples.data), "run": str(run_dir), "sampling": r.record(run)})
    return samples.data


def sample_summary(run_dir: Path | str, data: np.ndarray) -> str | None:
    """What `ddpmkit sample` prints after the samples, by the run's kind (2-D: their distance to fresh points)."""
    config = build.run_config(Path(run_dir))
    return evaluation.measures(build.modality(config)).summary(config, data)


def train_classifier(run_dir: Path | str, settings: ClassifierTraining = ClassifierTraining(), *,
                     net_options: dict | None = None, device: str | None = None, report=lambda message: None) -> dict:
    """Train the run's noise-aware classifier p(y | x_t, t) for classifier guidance on its labelled
    training images (classifier.train; `net_options`: ClassifierConfig fields, e.g. base_width)
    and write RUN/classifier/ whole (config.json, classifier.safetensors, accuracy.json);
    returns the accuracy record (held-out accuracy at t = 0, T/4, T/2, 3T/4)."""
    run_dir = Path(run_dir)
    config = build.run_config(run_dir)
    net, saved, record = classifier.train(config, images_only(build.modality(config), "train-classifier", "2-D runs take "
                                          "classifier-free guidance (--conditional) instead"), settings, net_options,
                                          device=distributed.pick_device(device), report=report)
    classifier.save(run_dir, net, saved, record)
    return record


def show_forward(data: str, out: Path | str, *, image_size=None, channels: int | None = None, num_images: int = 4,
                 T: int = 1000, seed: int = 0) -> None:
    """Draw the forward process on a few images of `data` for the linear and cosine schedules."""
    rundir.check_output(Path(out), directory=False)
    kind = images_only(modality_for(DataConfig(name=data, image_size=image_size, channels=channels)), "show-forward",
                       "for 2-D data see forward.png in a training run")
    dataset, _ = kind.load(seed)
    pictures.forward_table(dataset.batch(range(min(num_images, len(dataset))))[0], ["linear", "cosine"], T, Path(out), seed)


def show_schedule(schedules: list[str | tuple[str, float | None, float | None]], out: Path | str, *, T: int = 1000,
                  beta_start: float | None = None, beta_end: float | None = None) -> list[str]:
    """β_t, ᾱ_t and log-SNR of each schedule (a name, or (name, β_start, β_end) with None for a
    default end) at T steps, in one PNG; `beta_start`/`beta_end` are the ends of the ranged
    schedules given by name alone. Returns each schedule's label (its name and β ends)."""
    rundir.check_output(Path(out), directory=False)
    tables = schedule_tables(schedules, T, beta_start, beta_end)
    pictures.schedule_curves(tables, Path(out))
    return list(tables)


def evaluate(run_dir: Path | str, request: SamplingRequest = SamplingRequest(), settings: QualitySettings = QualitySettings(),
             *, device: str | None = None, report=lambda message: None) -> dict:
    """Measure the sample quality of a run (evaluation.evaluate_quality: samples drawn as `request`
    says, balanced over its classes) and add the record to its metrics.json; returns the record
    (evaluation.format_report prints it)."""
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    record = evaluation.evaluate_quality(run, request, settings, report=report)
    evaluation.write_quality_record(run_dir, record)
    return record


def save_reference(run_dir: Path | str, path: Path | str, *, features: str = "own", inception_weights=None,
                   device: str | None = None, report=lambda message: None) -> dict:
    """The run's real-data feature statistics (μ, Σ and the extractor's identity) as a .npz in
    the layout pytorch-fid and EDM's fid.py read; returns the reference's description."""
    run = build.load_run(Path(run_dir), device=distributed.pick_device(device))
    images_only(run.modality, "--save-ref", "its measures are distances to fresh points")
    return evaluation.write_reference(run, Path(path), features, inception_weights, report)


def export(run_dir: Path | str, out: Path | str, *, format: str = "diffusers", weights: str = "ema",
           license: str = "other", device: str | None = None) -> list[Path]:
    """A run as a diffusers DDPMPipeline folder `out` (interop.diffusers) with its model card
    README.md and a sample grid drawn as `ddpmkit sample` draws (modelcard.py); `weights`: ema,
    model or a .safetensors path."""
    if format != "diffusers":
        raise UserError(f"--format {format!r} is not known; ddpmkit exports --format diffusers")
    rundir.check_output_folder(Path(out), keep="model_index.json")
    request = SamplingRequest(weights=weights)
    run = build.load_for(Path(run_dir), request, device=distributed.pick_device(device))  # with its kept guide, as sample
    files = diffusers_interop.write_pipeline(Path(out), run.config, run.net.state_dict())
    return [*files, *modelcard.write_card(run, Path(out), request, license=license)]


def import_run(source: Path | str, out: Path | str, *, format: str = "diffusers", data: str | None = None) -> RunConfig:
    """A saved diffusers pipeline whose UNet2DModel fits ddpmkit's U-Net as a run directory
    `out` (config.json, ema.safetensors = model.safetensors) that sample and evaluate take;
    `data`: the data set it was trained on (what evaluate measures against). Returns its config."""
    if format != "diffusers":
        raise UserError(f"--from {format!r} is not known; ddpmkit imports --from diffusers")
    rundir.check_output_folder(Path(out), keep=None)
    net, diffusion, size, weights = diffusers_interop.read_pipeline(Path(source))
    config = RunConfig(data=DataConfig(name=data or f"diffusers:{source}", image_size=size, channels=net.in_channels,
                                       num_classes=net.num_classes), net=net, diffusion=diffusion,
                       conditional=net.num_classes > 0)
    checkpoint.load_matching(build.build_net(config), weights, Path(source))  # the weights fit the config
    rundir.write_config(Path(out), config)
    for name in ("ema", "model"):
        checkpoint.save_weights(build.weights_file(Path(out), name), weights)
    return config


def likelihood(run_dir: Path | str, kinds: tuple[str, ...] = ("vlb",), *, num: int = 256, seed: int = 0,
               ode_points: int = 100, weights: str = "ema", device: str | None = None) -> list[dict]:
    """The NLL of a run's held-out data in bits/dim by each of `kinds` ("vlb", "ode";
    evaluation.evaluate_nll), each stored in metrics.json as it is measured."""
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    results = []
    for kind in kinds:
        results.append(evaluation.evaluate_nll(run, num, seed=seed, kind=kind, num_points=ode_points))
        evaluation.write_metrics(run_dir, results[-1])
    return results


def compare(run_dir: Path | str, out: Path | str, samplers: list[str], steps: list[int], n: int,
            request: SamplingRequest = SamplingRequest(), *, device: str | None = None, report=lambda message: None) -> list[dict]:
    """Every sampler at every step count, the rest drawn as `request` says (evaluation.compare_samplers):
    out/compare.json and compare.png."""
    rundir.check_output(Path(out))
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    return evaluation.compare_samplers(run, Path(out), samplers=samplers, steps=steps, n=n, request=request, report=report)


def posthoc_ema(run_dir: Path | str, sigma_rels: list[float]) -> list[Reconstruction]:
    """The EMA of each relative width σ_rel at the end of a --posthoc-ema run, rebuilt from its
    snapshots (posthoc_ema.reconstruct), each written as RUN/ema-posthoc-S.safetensors (its path:
    rundir.posthoc_weights_path)."""
    run_dir = Path(run_dir)
    built = reconstruct(_snapshots(run_dir), sigma_rels, checkpoint.load_weights)
    for r in built:
        checkpoint.save_weights(rundir.posthoc_weights_path(run_dir, r.sigma_rel), r.weights)
    return built


def sweep_posthoc_ema(run_dir: Path | str, sigma_rels: list[float] = list(SWEEP_SIGMA_RELS), *, num: int = 1000,
                      seed: int = 0, device: str | None = None, report=lambda message: None) -> dict:
    """Rebuild the EMA of each σ_rel, measure each beside the classic EMA (evaluation.sweep_ema),
    write the best as RUN/ema-posthoc-S.safetensors and the record to metrics.json
    ("posthoc_ema_sweep"); returns the record."""
    run_dir = Path(run_dir)
    run = build.load_run(run_dir, device=distributed.pick_device(device))
    built = reconstruct(_snapshots(run_dir), sigma_rels, checkpoint.load_weights)
    record = evaluation.sweep_ema(run, built, num=num, seed=seed, report=report)
    best = next(r for r in built if r.sigma_rel == record["best_sigma_rel"])
    record["written"] = str(rundir.posthoc_weights_path(run_dir, best.sigma_rel))
    checkpoint.save_weights(Path(record["written"]), best.weights)
    evaluation.write_metrics(run_dir, {"posthoc_ema_sweep": record})
    return record


def _snapshots(run_dir: Path) -> list[checkpoint.Snapshot]:
    found = checkpoint.snapshots(run_dir)
    if not found:
        raise UserError(f"{run_dir} has no post-hoc EMA snapshots ({run_dir / rundir.POSTHOC} is empty or missing); "
                        "train the run with --posthoc-ema to keep them")
    return found


def edit(run_dir: Path | str, input: Path | str, out: Path | str, strength: float = 0.5,
         request: SamplingRequest = SamplingRequest(), *, device: str | None = None) -> editing.apply.Edited:
    """SDEdit (Meng et al. 2022) of an image file, folder or array `input`, read and fitted like the
    run's training data: each image noised to t = strength·T and denoised as `request` says
    (strength 0: the input, 1: a plain sample). Writes out/samples.npy, samples.png, edit.png and edit.json."""
    out = Path(out)
    rundir.check_output(out)
    editing.start_step(strength, 1)  # the strength's range, before the run is loaded
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    inputs = images_only(run.modality, "edit").read_inputs(input)
    return editing.edit_images(run, inputs, out, strength, request)


def inpaint(run_dir: Path | str, input: Path | str, mask: Path | str, out: Path | str,
            request: SamplingRequest = SamplingRequest(), *, resample: int = 1, jump: int = 1,
            device: str | None = None) -> editing.apply.Edited:
    """RePaint (Lugmayr et al. 2022): fill in the white pixels of `mask` (an image of the input's
    size; black: keep) in each input, with `resample` walks of every `jump` steps, drawn as
    `request` says (its own default: ddpm, RePaint's ancestral step, on every step); the kept pixels
    of the result are the input's exactly. Writes out/samples.npy, samples.png, inpaint.png and inpaint.json."""
    out = Path(out)
    rundir.check_output(out)
    if request.sampler is not None:
        editing.check_inpaint_sampler(request.sampler)
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    kind = images_only(run.modality, "inpaint")
    inputs = kind.read_inputs(input)
    return editing.inpaint_images(run, inputs, kind.read_mask(mask, inputs), out, request, resample=resample, jump=jump)


def interpolate(run_dir: Path | str, a: Path | str, b: Path | str, out: Path | str, frames: int = 8,
                request: SamplingRequest = SamplingRequest(), *, device: str | None = None) -> editing.apply.Edited:
    """`frames` images between the images `a` and `b`: both inverted to x_T by deterministic DDIM,
    the latents interpolated spherically, each frame decoded by DDIM with the same denoiser (the
    kind's clipping by default: without it x̂_0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ near ᾱ_T ≈ 0 amplifies the
    network's errors and decoding diverges). Writes out/samples.npy (the frames), samples.png,
    interpolation.png, interpolation.gif and interpolation.json (the endpoints' reconstruction error)."""
    out = Path(out)
    rundir.check_output(out)
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    kind = images_only(run.modality, "interpolate")
    inputs = [kind.read_inputs(path, option) for path, option in ((a, "--a"), (b, "--b"))]
    return editing.interpolate_pair(run, *inputs, out, frames, request)


def score(run_dir: Path | str, images: Path | str, out: Path | str, settings: ScoreSettings = ScoreSettings(), *,
          device: str | None = None) -> Scores:
    """Bits/dim of each image of a file, folder or .npy/.npz array (evaluation.score_images), beside
    the run's held-out images as the reference (median, 5th and 95th percentile; outside that range
    an image is flagged). Writes `out` (a .csv, worst first) and beside it the .json (the reference
    and settings), a .png of the images in that order and a .npy of them as scored ([N, H, W, C]
    uint8, sample's layout)."""
    out = Path(out)
    if out.suffix != ".csv":
        raise UserError(f"--out is the .csv file of the scores; give a name ending in .csv, not {out.name!r}")
    rundir.check_output(out, directory=False)
    run = build.load_run(Path(run_dir), settings.weights, device=distributed.pick_device(device))
    inputs = images_only(run.modality, "score").read_inputs(images, "--images")
    scores = score_images(run, inputs, settings)
    out.parent.mkdir(parents=True, exist_ok=True)  # once every check has passed
    write_scores(scores, out, {"run": str(run_dir), "weights": sampling.WEIGHT_NAMES.get(settings.weights, settings.weights),
                               "fitted": inputs.note})
    scored = inputs.images[torch.from_numpy(scores.order)].permute(0, 2, 3, 1).numpy()  # [N, H, W, C], worst first
    rundir.save_npy(out.with_suffix(".npy"), scored)
    pictures.score_grid(scored, scores.bpd, scores.flags, out.with_suffix(".png"))
    return scores
