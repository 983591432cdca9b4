"""The Python API the CLI is a thin layer over: a table of contents of what ddpmkit does.

    from ddpmkit import api
    config = api.default_config("moons")
    result = api.train(config, "runs/moons")
    points = api.sample("runs/moons", 2000, "runs/moons/samples", api.SamplingRequest(seed=0))

Each function is a few calls into the rooms that do the work: presets, modality, build, training,
classifier, sampling, sample_folder, outputs, evaluation, editing, interop, modelcard, posthoc_ema, rundir.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import build, classifier, distributed, editing, evaluation, modelcard, outputs, pictures, rundir, sample_folder, sampling
from .classifier import ClassifierTraining
from .config import DataConfig, RunConfig
from .errors import UserError
from .evaluation import QualitySettings, toy_distances  # noqa: F401  (part of the API: 2-D samples against fresh points)
from .evaluation.scores import Scores, ScoreSettings, check_out as check_scores_out, score_into
from .interop import diffusers as diffusers_interop
from .modality import images_only, modality_for
from .pictures import SampleFiles
from .posthoc_ema import SWEEP_SIGMA_RELS, Reconstruction, rebuild_ema, save_rebuilt_ema
from .sampling import Guidance, Samples, SamplingRequest, draw  # noqa: F401  (part of the API)
from .schedules import schedule_tables
from .training import TrainResult, diffusion
from .training import classifier as noise_aware, distill as distillation
from .training.distill import DistillSettings


def default_config(data: str = "digits") -> RunConfig:
    """The preset of a data set (presets.py says why each number is what it is)."""
    return modality_for(data).preset()


def train(config: RunConfig, run_dir: Path | str, *, device: str | None = None, resume: bool = False,
          report=lambda message: None, progress: bool = True, pictures: bool = True, overwrite: bool = False) -> TrainResult:
    """Train `config` into `run_dir` (or continue it with resume=True: from its newest checkpoint
    that reads, or from step 0 if it has none; training.diffusion.train) and, with `pictures`,
    draw the end-of-run pictures (samples, forward process, loss curve; 2-D runs also store
    their distance to fresh points in metrics.json).

    Launched by torchrun with N processes, each process calls this: they train one model
    data-parallel (config.train.batch_size is the global batch) and rank 0 alone writes
    the run directory and reports; `device` "cuda" then means each rank's own GPU. `overwrite`:
    a folder that holds other files (never a run) is emptied first (outputs.claim_run_directory)."""
    run_dir = Path(run_dir)
    with distributed.launch(device) as (world, dev):
        say = report if world.is_main else lambda message: None
        result, ema_net, config, dataset = diffusion.train(config, run_dir, world, dev, resume=resume, overwrite=overwrite,
                                                           report=say, progress=progress)
        if not world.is_main or not pictures:
            return result
    drawn = _draw_training_pictures(build.make_run(run_dir, config, ema_net), dataset, progress)
    return dataclasses.replace(result, pictures=tuple(path.name for path in drawn))


def _draw_training_pictures(run: sampling.Run, dataset, progress: bool) -> list[Path]:
    files, samples = pictures.end_of_run(run, dataset, progress)
    measured = evaluation.measures(run.modality).end_of_training(run, samples) if samples is not None else {}
    if measured:
        evaluation.write_metrics(run.directory, measured)
    return files


def distill(run_dir: Path | str | None, out: Path | str, settings: DistillSettings = DistillSettings(), *, resume: bool = False,
            device: str | None = None, report=lambda message: None, progress: bool = True, overwrite: bool = False) -> list[dict]:
    """Progressive distillation (training/distill.py) of a run's EMA weights into a run directory
    `out` whose students sample with DDIM on settings.to_steps steps by default; `out` holding the
    same distillation (or resume=True, run_dir None: its own teacher and settings) continues it;
    `overwrite`: a folder that holds other files (no run) is emptied first. Launched by torchrun
    with N processes, each process calls this, as for `train`. Returns each finished round's record."""
    out = Path(out)
    if resume:
        run_dir, settings = distillation.recorded_settings(out)
    elif run_dir is None:
        raise UserError("distill needs the --run to distil (or --resume OUT)")
    with distributed.launch(device) as (world, dev):
        again = distillation.check_out(out, Path(run_dir), settings, overwrite=overwrite and not resume)
        teacher = build.load_run(Path(run_dir), "ema", device=dev)
        if settings.autoguide not in (None, "none"):  # the teacher autoguided (Karras et al. 2024)
            teacher = build.load_guide(teacher, settings.autoguide)
        world.barrier()  # every rank has looked at `out` before rank 0 empties it
        if overwrite and not (resume or again) and world.is_main:  # --overwrite: the folder's contents go once the teacher has loaded
            outputs.empty(out)
        say = report if world.is_main else lambda message: None
        return distillation.distill(teacher, out, settings, resume=resume or again, device=dev, world=world, report=say,
                                    progress=progress)


def sample(run_dir: Path | str, n: int, out: Path | str | outputs.Output, request: SamplingRequest = SamplingRequest(),
           files: SampleFiles = SampleFiles(), *, device: str | None = None, report=lambda message: None) -> np.ndarray:
    """n samples drawn as `request` says, written whole to `out` (sample_folder: new, empty or earlier sample output,
    replaced whole; outputs.overwrite(path) allows replacing any folder); returns them in data space."""
    folders = sample_folder.claim(out, files)  # before any work
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    return sample_folder.sample_into(run, n, folders, request, files, report)


def sample_summary(run_dir: Path | str, data: np.ndarray) -> str | None:
    """What `ddpmkit sample` prints after the samples, by the run's kind (2-D: their distance to fresh points)."""
    config = build.run_config(Path(run_dir))
    return evaluation.measures(build.modality(config)).summary(config, data)


def train_classifier(run_dir: Path | str, settings: ClassifierTraining = ClassifierTraining(), *,
                     net_options: dict | None = None, device: str | None = None, report=lambda message: None) -> dict:
    """The run's noise-aware classifier for classifier guidance (training/classifier.py) in RUN/classifier/; returns its accuracy."""
    config = build.run_config(Path(run_dir))
    kind = images_only(build.modality(config), "train-classifier", "2-D runs take classifier-free guidance (--conditional) instead")
    net, saved, record = noise_aware.train(config, kind, settings, net_options, run_dir=Path(run_dir),
                                           device=distributed.pick_device(device), report=report)
    classifier.save(Path(run_dir), net, saved, record)
    return record


def show_forward(data: str, out: Path | str, *, image_size=None, channels: int | None = None, num_images: int = 4,
                 T: int = 1000, seed: int = 0) -> None:
    """Draw the forward process on a few images of `data` for the linear and cosine schedules."""
    rundir.check_output(Path(out))
    kind = images_only(modality_for(DataConfig(name=data, image_size=image_size, channels=channels)), "show-forward",
                       "for 2-D data see forward.png in a training run")
    dataset, _ = kind.load(seed)
    pictures.forward_table(dataset.batch(range(min(num_images, len(dataset))))[0], ["linear", "cosine"], T, Path(out), seed)


def show_schedule(schedules: list[str | tuple[str, float | None, float | None]], out: Path | str, *, T: int = 1000,
                  beta_start: float | None = None, beta_end: float | None = None) -> list[str]:
    """β_t, ᾱ_t and log-SNR of each schedule (schedules.schedule_tables) in one PNG; returns their labels."""
    rundir.check_output(Path(out))
    tables = schedule_tables(schedules, T, beta_start, beta_end)
    pictures.schedule_curves(tables, Path(out))
    return list(tables)


def evaluate(run_dir: Path | str, request: SamplingRequest = SamplingRequest(), settings: QualitySettings = QualitySettings(),
             *, device: str | None = None, report=lambda message: None) -> dict:
    """The sample quality of a run (evaluation.evaluate_quality), added to its metrics.json; returns the record."""
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    record = evaluation.evaluate_quality(run, request, settings, report=report)
    evaluation.write_quality_record(run_dir, record)
    return record


def save_reference(run_dir: Path | str, path: Path | str, *, features: str = "own", inception_weights=None,
                   device: str | None = None, report=lambda message: None, overwrite: bool = False) -> dict:
    """The run's real-data feature statistics as a .npz that pytorch-fid and EDM's fid.py read (evaluation.write_reference)."""
    outputs.claim_file(path, "--save-ref", evaluation.is_reference_file, overwrite=overwrite)  # before any work
    run = build.load_run(Path(run_dir), device=distributed.pick_device(device))
    return evaluation.write_reference(run, Path(path), features, inception_weights, report)


def export(run_dir: Path | str, out: Path | str | outputs.Output, *, format: str = "diffusers", weights: str = "ema",
           license: str = "other", device: str | None = None, progress: bool = False) -> list[Path]:
    """A run as a diffusers DDPMPipeline folder (interop.diffusers) with its model card and sample grid (modelcard.py;
    `progress`: a bar while the grid is drawn)."""
    diffusers_interop.check_format(format, "--format")
    out = outputs.claim(out, "export")  # new, empty, or an earlier export (replaced whole)
    request = SamplingRequest(weights=weights, progress=progress)
    run = build.load_for(Path(run_dir), request, device=distributed.pick_device(device))  # with the guide it names, as sample
    with outputs.write(out, {"run": str(run_dir), "weights": weights}) as into:
        files = diffusers_interop.write_pipeline(into, run.config, run.net.state_dict())
        files += modelcard.write_card(run, into, request, license=license)
    return [outputs.final_path(f, into, out) for f in files]


def import_run(source: Path | str, out: Path | str, *, format: str = "diffusers", data: str | None = None) -> RunConfig:
    """A saved diffusers pipeline as a run directory that sample and evaluate take (interop.diffusers.import_run)."""
    diffusers_interop.check_format(format, "--from")
    return diffusers_interop.import_run(Path(source), Path(out), data)


def likelihood(run_dir: Path | str, kinds: tuple[str, ...] = ("vlb",), *, num: int = 256, seed: int = 0,
               ode_points: int = 100, weights: str = "ema", device: str | None = None) -> list[dict]:
    """The NLL of a run's held-out data in bits/dim by each of `kinds` (evaluation.evaluate_nll), each stored in metrics.json."""
    run = build.load_run(Path(run_dir), weights, device=distributed.pick_device(device))
    return evaluation.record_nll(run, kinds, num, seed, ode_points)


def compare(run_dir: Path | str, out: Path | str | outputs.Output, samplers: list[str], steps: list[int], n: int,
            request: SamplingRequest = SamplingRequest(), *, device: str | None = None, report=lambda message: None) -> list[dict]:
    """Every sampler at every step count (evaluation.compare_samplers): out/compare.json and compare.png, written whole."""
    out = outputs.claim(out, "compare")
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    with outputs.write(out, {"run": str(run_dir)}) as into:
        results = evaluation.compare_samplers(run, into, samplers=samplers, steps=steps, n=n, request=request, report=report)
    return results


def posthoc_ema(run_dir: Path | str, sigma_rels: list[float]) -> list[Reconstruction]:
    """The EMA of each σ_rel rebuilt from a --posthoc-ema run's snapshots, each written as RUN/ema-posthoc-S.safetensors."""
    built = rebuild_ema(Path(run_dir), sigma_rels)
    for r in built:
        save_rebuilt_ema(Path(run_dir), r)
    return built


def sweep_posthoc_ema(run_dir: Path | str, sigma_rels: list[float] = list(SWEEP_SIGMA_RELS), *, num: int = 1000,
                      seed: int = 0, device: str | None = None, report=lambda message: None) -> dict:
    """Each σ_rel's EMA measured beside the classic EMA, the best kept (evaluation.sweep_and_keep); returns the record."""
    run = build.load_run(Path(run_dir), device=distributed.pick_device(device))
    return evaluation.sweep_and_keep(run, sigma_rels, num=num, seed=seed, report=report)


def edit(run_dir: Path | str, input: Path | str, out: Path | str | outputs.Output, strength: float = 0.5,
         request: SamplingRequest = SamplingRequest(), *, device: str | None = None) -> editing.apply.Edited:
    """SDEdit (Meng et al. 2022) of the user's images: noised to t = strength·T, denoised as `request` says (editing.edit_images)."""
    out = outputs.claim(out, "edit")
    editing.start_step(strength, 1)  # the strength's range, before the run is loaded
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    inputs = images_only(run.modality, "edit").read_inputs(input)
    with outputs.write(out, {"run": str(run_dir)}) as into:
        return editing.edit_images(run, inputs, into, strength, request).placed(into, out)


def inpaint(run_dir: Path | str, input: Path | str, mask: Path | str, out: Path | str | outputs.Output,
            request: SamplingRequest = SamplingRequest(), *, resample: int = 1, jump: int = 1,
            device: str | None = None) -> editing.apply.Edited:
    """RePaint (Lugmayr et al. 2022): the white pixels of `mask` filled in, the rest kept exactly (editing.inpaint_images)."""
    out = outputs.claim(out, "inpaint")
    editing.check_inpaint_sampler(request.sampler)  # before the run is loaded
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    kind = images_only(run.modality, "inpaint")
    inputs = kind.read_inputs(input)
    fill = kind.read_mask(mask, inputs)
    with outputs.write(out, {"run": str(run_dir)}) as into:
        return editing.inpaint_images(run, inputs, fill, into, request, resample=resample, jump=jump).placed(into, out)


def interpolate(run_dir: Path | str, a: Path | str, b: Path | str, out: Path | str | outputs.Output, frames: int = 8,
                request: SamplingRequest = SamplingRequest(), *, device: str | None = None) -> editing.apply.Edited:
    """`frames` images between the images `a` and `b` through their DDIM latents (editing.interpolate_pair)."""
    out = outputs.claim(out, "interpolate")
    run = build.load_for(Path(run_dir), request, distributed.pick_device(device))
    inputs = [images_only(run.modality, "interpolate").read_inputs(path, option) for path, option in ((a, "--a"), (b, "--b"))]
    with outputs.write(out, {"run": str(run_dir)}) as into:
        return editing.interpolate_pair(run, *inputs, into, frames, request).placed(into, out)


def score(run_dir: Path | str, images: Path | str, out: Path | str, settings: ScoreSettings = ScoreSettings(), *,
          device: str | None = None) -> Scores:
    """Bits/dim of each of the user's images beside the run's held-out images (evaluation.scores.score_into)."""
    check_scores_out(Path(out))
    run = build.load_run(Path(run_dir), settings.weights, device=distributed.pick_device(device))
    return score_into(run, images_only(run.modality, "score").read_inputs(images, "--images"), Path(out), settings)
