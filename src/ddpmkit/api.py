"""The Python API the CLI is a thin layer over: a table of contents of what ddpmkit does.

    from ddpmkit import api
    config = api.default_config("moons")
    result = api.train(config, "runs/moons")
    points = api.sample("runs/moons", 2000, "runs/moons/samples", seed=0)

Each function is a few calls into the rooms that do the work: presets and modality (what a
data set's run looks like), build (assembly), train (the loop), sampling, pictures,
evaluation (measures and metrics.json), posthoc_ema (post-hoc EMA), editing (SDEdit, RePaint,
interpolation on the user's images), classifier (the noise-aware classifier of classifier
guidance) and rundir (the files).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from . import build, checkpoint, classifier, distributed, editing, evaluation, modelcard, pictures, rundir, sampling
from .classifier import ClassifierTraining
from .config import DataConfig, RunConfig
from .errors import UserError, check_choice, check_finite
from .evaluation.nll import NLL_KINDS
from .evaluation.scores import Scores, score_images, write_scores
from .distill import DistillSettings, check_out, recorded_settings
from .distill import distill as distill_run
from .evaluation import toy_distances  # noqa: F401  (part of the API: 2-D samples against fresh points)
from .features import OwnTraining
from .interop import diffusers as diffusers_interop
from .modality import modality_for
from .posthoc_ema import SWEEP_SIGMA_RELS, Reconstruction, reconstruct
from .schedules import schedule_tables
from .sampling import Samples, SampleSettings, draw  # noqa: F401  (part of the API)
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
    measured = run.modality.training_pictures(run, dataset, run.directory)
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
    return distill_run(teacher, out, settings, resume=resume or again, device=teacher.device, report=report,
                       progress=progress)


def sample(
    run_dir: Path | str,
    n: int,
    out: Path | str,
    *,
    seed: int = 0,
    weights: str = "ema",
    device: str | None = None,
    sampler: str | None = None,
    gif: bool = False,
    class_: str | None = None,
    guidance: float = 0.0,
    classifier_scale: float = 0.0,
    steps: int | None = None,
    spacing: str = "linspace",
    clip: str | None = None,
    percentile: float = 0.995,
    png_dir: Path | str | None = None,
    strip: list[int] | None = None,
    strip_shows: str = "xt",
    report=lambda message: None,
    **sampler_options,
) -> np.ndarray:
    """Write out/samples.npy and out/samples.png (and out/reverse.gif) for a run; returns
    the data-space samples. `class_` is a class index or "all" (then n per class, a grid
    row per class, and labels.npy beside the samples); on an unconditional run the classes are
    those of its classifier (RUN/classifier/, `train_classifier`), which `classifier_scale` s
    guides towards (classifier guidance, after classifier-free guidance `guidance` on a
    conditional run; at 0 the plain model). `weights`: best, last, ema, model or a
    path (build.weights_file). `png_dir`: also each sample as a numbered PNG there (with
    labels.csv for labelled samples), for other FID tools. `strip`: timesteps whose x_t
    (`strip_shows` "xt") or x̂_0 ("x0") out/strip.png shows for each sample, a row each (the
    progressive-generation figure); a timestep the sampler's grid lacks is replaced by the
    nearest grid step, said through `report`. `sampler` None: the run's default,
    dpm++sde on 20 steps (sampling.DEFAULT_SAMPLER), or a distilled run's own sampler and grid."""
    out = Path(out)
    rundir.check_output(out)
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    run = _classifier_if_asked(run, class_, classifier_scale)
    labels = sampling.class_labels(run.config, class_, n, sampling.classifier_classes(run))
    sampling.check_labels(run.config, labels, guidance, sampling.classifier_classes(run), classifier_scale)
    n = n if labels is None else len(labels)
    if sampler is None:
        sampler, default_steps = sampling.default_sampling(run)
        steps = default_steps if steps is None else steps
    sampling.check_sampler(sampler, steps, run.config.diffusion.num_steps)  # before the grid is built
    note = sampling.off_grid_note(run, sampler, steps)
    if note:
        report(note)
    grid = sampling.run_grid(run, sampler, steps, spacing)
    gif_steps = sampling.picture_steps(run.config.diffusion.num_steps, pictures.GIF_FRAMES, grid=grid) if gif else []
    strip_steps = _strip_steps(strip, strip_shows, grid, report) if strip else []
    keep = sorted(set(gif_steps) | set(strip_steps)) if gif or strip_steps else None
    samples = draw(run, n, seed=seed, sampler=sampler, steps=steps, spacing=spacing, keep=keep, labels=labels,
                   guidance=guidance, classifier_scale=classifier_scale, clip=clip, percentile=percentile, **sampler_options)
    out.mkdir(parents=True, exist_ok=True)  # once every option has been checked: bad input creates nothing
    if labels is not None:
        rundir.save_npy(out / "labels.npy", labels.numpy())
    if gif:  # its own frames only, whatever the strip added
        frames = dataclasses.replace(samples, trajectory=samples.trajectory.only(gif_steps))
        run.modality.reverse_gif(frames, out / "reverse.gif")
    if strip_steps:
        run.modality.strip_picture(samples, strip_steps, strip_shows, out / "strip.png")
    rundir.save_npy(out / "samples.npy", samples.data)
    if png_dir is not None:
        run.modality.png_folder(samples, labels, Path(png_dir))
    rows = run.config.num_classes or sampling.classifier_classes(run)
    run.modality.samples_picture(run.config, samples, out / "samples.png", rows=rows if class_ == "all" else None)
    return samples.data


def train_classifier(run_dir: Path | str, settings: ClassifierTraining = ClassifierTraining(), *,
                     net_options: dict | None = None, device: str | None = None, report=lambda message: None) -> dict:
    """Train the run's noise-aware classifier p(y | x_t, t) for classifier guidance on its labelled
    training images (classifier.train; `net_options`: ClassifierConfig fields, e.g. base_width)
    and write RUN/classifier/ whole (config.json, classifier.safetensors, accuracy.json);
    returns the accuracy record (held-out accuracy at t = 0, T/4, T/2, 3T/4)."""
    run_dir = Path(run_dir)
    config = build.run_config(run_dir)
    net, saved, record = classifier.train(config, build.modality(config), settings, net_options,
                                          device=distributed.pick_device(device), report=report)
    classifier.save(run_dir, net, saved, record)
    return record


def _strip_steps(strip: list[int], shows: str, grid, report) -> list[int]:
    """The steps of the sampler's `grid` a --strip shows, in sampling order (sampling.nearest_grid_steps), each move said."""
    if shows not in ("xt", "x0"):
        raise UserError(f"--strip-shows takes xt (the noisy state x_t) or x0 (the prediction x̂_0), got {shows!r}")
    pairs = sampling.nearest_grid_steps(list(strip), grid)
    for asked, used in pairs:
        if asked != used:
            report(f"--strip {asked}: the sampler's grid has no step {asked}; showing its nearest step, {used}")
    return sorted(dict.fromkeys(used for _, used in pairs), reverse=True)


def show_forward(data: str, out: Path | str, *, image_size=None, channels: int | None = None, num_images: int = 4,
                 T: int = 1000, seed: int = 0) -> None:
    """Draw the forward process on a few images of `data` for the linear and cosine schedules."""
    rundir.check_output(Path(out), directory=False)
    modality_for(DataConfig(name=data, image_size=image_size, channels=channels)).forward_picture(Path(out), num_images, T, seed)


def show_schedule(schedules: list[str | tuple[str, float | None, float | None]], out: Path | str, *, T: int = 1000,
                  beta_start: float | None = None, beta_end: float | None = None) -> list[str]:
    """β_t, ᾱ_t and log-SNR of each schedule (a name, or (name, β_start, β_end) with None for a
    default end) at T steps, in one PNG; `beta_start`/`beta_end` are the ends of the ranged
    schedules given by name alone. Returns each schedule's label (its name and β ends)."""
    rundir.check_output(Path(out), directory=False)
    tables = schedule_tables(schedules, T, beta_start, beta_end)
    pictures.schedule_curves(tables, Path(out))
    return list(tables)


def evaluate(run_dir: Path | str, settings: SampleSettings = SampleSettings(), *, device: str | None = None,
             features: str = "own", inception_weights=None, training: OwnTraining = OwnTraining(),
             ref: Path | str | None = None, report=lambda message: None) -> dict:
    """Measure the sample quality of a run (evaluation.evaluate_quality) and add the record to
    its metrics.json; returns the record (evaluation.format_report prints it). `ref`: a
    reference .npz (mu, sigma) the Fréchet distance is measured against instead of the run's data."""
    run = build.load_run(Path(run_dir), settings.weights, device=distributed.pick_device(device))
    if settings.classifier_scale:
        run = build.with_classifier(run, "--classifier-scale needs the run's classifier")
    record = evaluation.evaluate_quality(run, settings, features=features, inception_weights=inception_weights,
                                         training=training, report=report, ref=None if ref is None else Path(ref))
    evaluation.write_quality_record(run_dir, record)
    return record


def save_reference(run_dir: Path | str, path: Path | str, *, features: str = "own", inception_weights=None,
                   device: str | None = None, report=lambda message: None) -> dict:
    """The run's real-data feature statistics (μ, Σ and the extractor's identity) as a .npz in
    the layout pytorch-fid and EDM's fid.py read; returns the reference's description."""
    run = build.load_run(Path(run_dir), device=distributed.pick_device(device))
    return run.modality.save_reference(run, Path(path), features=features, inception_weights=inception_weights,
                                       report=report)


def export(run_dir: Path | str, out: Path | str, *, format: str = "diffusers", weights: str = "ema",
           license: str = "other", device: str | None = None) -> list[Path]:
    """A run as a diffusers DDPMPipeline folder `out` (interop.diffusers) with its model card
    README.md and a sample grid (modelcard.py); `weights`: ema, model or a .safetensors path."""
    if format != "diffusers":
        raise UserError(f"--format {format!r} is not known; ddpmkit exports --format diffusers")
    rundir.check_output_folder(Path(out), keep="model_index.json")
    run = build.load_run(Path(run_dir), weights=weights, device=distributed.pick_device(device))
    files = diffusers_interop.write_pipeline(Path(out), run.config, run.net.state_dict())
    return [*files, *modelcard.write_card(run, Path(out), weights=weights, license=license)]


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


def compare(run_dir: Path | str, out: Path | str, *, samplers: list[str], steps: list[int], n: int, seed: int = 0,
            spacing: str = "linspace", weights: str = "ema", device: str | None = None,
            report=lambda message: None) -> list[dict]:
    """Every sampler at every step count (evaluation.compare_samplers): out/compare.json and compare.png."""
    rundir.check_output(Path(out))
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    return evaluation.compare_samplers(run, Path(out), samplers=samplers, steps=steps, n=n, seed=seed, spacing=spacing,
                                       report=report)


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


def edit(run_dir: Path | str, input: Path | str, out: Path | str, *, strength: float = 0.5, seed: int = 0,
         weights: str = "ema", device: str | None = None, sampler: str = "ddpm", steps: int | None = None,
         spacing: str = "linspace", class_: str | None = None, guidance: float = 0.0, clip: str | None = None,
         percentile: float = 0.995, classifier_scale: float = 0.0, **sampler_options) -> editing.apply.Edited:
    """SDEdit (Meng et al. 2022) of an image file, folder or array `input`, read and fitted like the
    run's training data: each image noised to t = strength·T and denoised by `sampler` (strength 0:
    the input, 1: a plain sample). Writes out/samples.npy, samples.png, edit.png and edit.json.
    `class_`, `guidance`, `classifier_scale`, `clip`, `steps` and `sampler_options` mean what they
    mean for `sample` (classifier guidance steers the denoising towards `class_`)."""
    out = Path(out)
    rundir.check_output(out)
    editing.start_step(strength, 1)  # the strength's range, before the run is loaded
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    inputs = run.modality.read_inputs(input)
    run, labels = _edit_labels(run, class_, len(inputs.images), guidance, classifier_scale)
    denoiser = sampling.sampling_denoiser(run, guidance, clip, percentile, classifier_scale)
    return editing.edit_images(run, inputs, out, strength, denoiser=denoiser, labels=labels, seed=seed, sampler=sampler,
                               steps=steps, spacing=spacing, about=_about(run_dir, weights, guidance, classifier_scale),
                               **sampler_options)


def inpaint(run_dir: Path | str, input: Path | str, mask: Path | str, out: Path | str, *, resample: int = 1, jump: int = 1,
            seed: int = 0, weights: str = "ema", device: str | None = None, sampler: str = "ddpm",
            steps: int | None = None, spacing: str = "linspace", class_: str | None = None, guidance: float = 0.0,
            clip: str | None = None, percentile: float = 0.995, classifier_scale: float = 0.0,
            **sampler_options) -> editing.apply.Edited:
    """RePaint (Lugmayr et al. 2022): fill in the white pixels of `mask` (an image of the input's
    size; black: keep) in each input, with `resample` walks of every `jump` steps; the kept pixels
    of the result are the input's exactly. `sampler`: ddpm (RePaint's ancestral step) or ddim;
    `classifier_scale` steers the filled part towards `class_` as in `edit`. Writes
    out/samples.npy, samples.png, inpaint.png and inpaint.json."""
    out = Path(out)
    rundir.check_output(out)
    editing.check_inpaint_sampler(sampler)
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    inputs = run.modality.read_inputs(input)
    fill = run.modality.read_mask(mask, inputs)
    run, labels = _edit_labels(run, class_, len(inputs.images), guidance, classifier_scale)
    denoiser = sampling.sampling_denoiser(run, guidance, clip, percentile, classifier_scale)
    return editing.inpaint_images(run, inputs, fill, out, denoiser=denoiser, labels=labels, seed=seed, sampler=sampler,
                                  steps=steps, spacing=spacing, resample=resample, jump=jump,
                                  about=_about(run_dir, weights, guidance, classifier_scale), **sampler_options)


def interpolate(run_dir: Path | str, a: Path | str, b: Path | str, out: Path | str, *, frames: int = 8,
                weights: str = "ema", device: str | None = None, steps: int | None = None, spacing: str = "linspace",
                class_: str | None = None, guidance: float = 0.0, clip: str | None = None,
                percentile: float = 0.995) -> editing.apply.Edited:
    """`frames` images between the images `a` and `b`: both inverted to x_T by deterministic DDIM,
    the latents interpolated spherically, each frame decoded by DDIM with the same denoiser
    (`clip` None: the modality's, static for images; without it x̂_0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ near
    ᾱ_T ≈ 0 amplifies the network's errors and decoding diverges). Writes out/samples.npy (the
    frames), samples.png, interpolation.png, interpolation.gif and interpolation.json (the
    endpoints' reconstruction error in 8-bit levels)."""
    out = Path(out)
    rundir.check_output(out)
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    inputs = [run.modality.read_inputs(path, option) for path, option in ((a, "--a"), (b, "--b"))]
    run, label = _edit_labels(run, class_, 1, guidance, guided=False)  # guidance would break DDIM's inversion
    denoiser = sampling.sampling_denoiser(run, guidance, clip, percentile)
    return editing.interpolate_pair(run, *inputs, out, frames, denoiser=denoiser, label=label, steps=steps,
                                    spacing=spacing, about=_about(run_dir, weights, guidance))


def score(run_dir: Path | str, images: Path | str, out: Path | str, *, kind: str = "vlb", num_reference: int = 256,
          seed: int = 0, ode_points: int = 100, weights: str = "ema", device: str | None = None) -> Scores:
    """Bits/dim of each image of a file, folder or .npy/.npz array (evaluation.score_images; `kind`
    "vlb" or "ode"), beside the run's held-out images as the reference (median, 5th and 95th
    percentile; outside that range an image is flagged). Writes `out` (a .csv, worst first) and
    beside it the .json (the reference and settings), a .png of the images in that order and a
    .npy of them as scored ([N, H, W, C] uint8, sample's layout)."""
    out = Path(out)
    if out.suffix != ".csv":
        raise UserError(f"--out is the .csv file of the scores; give a name ending in .csv, not {out.name!r}")
    rundir.check_output(out, directory=False)
    check_choice("--nll", kind, NLL_KINDS)
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    inputs = run.modality.read_inputs(images, "--images")
    scores = score_images(run, inputs, kind, num_reference=num_reference, seed=seed, ode_points=ode_points)
    out.parent.mkdir(parents=True, exist_ok=True)  # once every check has passed
    write_scores(scores, out, _about(run_dir, weights, 0.0) | {"fitted": inputs.note})
    scored = inputs.images[torch.from_numpy(scores.order)].permute(0, 2, 3, 1).numpy()  # [N, H, W, C], worst first
    rundir.save_npy(out.with_suffix(".npy"), scored)
    pictures.score_grid(scored, scores.bpd, scores.flags, out.with_suffix(".png"))
    return scores


def _classifier_if_asked(run: sampling.Run, class_: str | None, classifier_scale: float) -> sampling.Run:
    """The run with its classifier loaded when classifier guidance is asked for, or a class of an
    unconditional run (the classifier's classes); one line when it has none."""
    if classifier_scale or (class_ is not None and not run.config.num_classes):
        return build.with_classifier(run, "--classifier-scale needs the run's classifier" if classifier_scale else
                                     "--class needs a conditional model; this run was trained without --conditional and has no classifier")
    return run


def _edit_labels(run: sampling.Run, class_: str | None, n: int, guidance: float, classifier_scale: float = 0.0, *,
                 guided: bool = True):
    """The run an edit of n images uses (with its classifier when classifier guidance can apply,
    `guided`) and the labels: None, or class K for each (`--class all` is sample's only)."""
    if class_ == "all":
        raise UserError("--class all draws every class; an edit takes one class K (or none)")
    check_finite("--classifier-scale", classifier_scale)
    if guided:
        run = _classifier_if_asked(run, class_, classifier_scale)
    labels = sampling.class_labels(run.config, class_, n, sampling.classifier_classes(run))
    sampling.check_labels(run.config, labels, guidance, sampling.classifier_classes(run), classifier_scale)
    return run, labels


def _about(run_dir, weights: str, guidance: float, classifier_scale: float = 0.0) -> dict:
    """What an edit's record says of the model: the run, its weights, classifier-free guidance and
    classifier guidance (each only when used)."""
    return {"run": str(run_dir), "weights": sampling.WEIGHT_NAMES.get(weights, weights),
            **({"guidance": guidance} if guidance else {}),
            **({"classifier_scale": classifier_scale} if classifier_scale else {})}
