"""Every picture of a run: loss curves, sample grids and scatters, the forward process as
strips and tables, the reverse process as strips and GIFs, the closest training pairs.

viz.py draws (arrays in, PNG or GIF files out); this module decides what a run shows and
samples what it needs for that. `for_kind(kind)` is the one place that picks the pictures of a
run's kind of data (points: scatters; images: grids), by the kind's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import process, viz
from ._tensor import randn_like
from .data.images import to_model_space, to_uint8
from .data.toy import fresh_points
from .errors import UserError
from .modality import Kind
from .rundir import atomic_write_text, quality_records, read_log, save_png
from .sampling import Run, Samples, SamplingRequest, draw, nearest_grid_steps, picture_steps
from .schedules import NoiseSchedule

PICTURE_STEPS = 10  # scatters in the forward / reverse strips, columns of a forward table
GIF_FRAMES = 40  # reverse-process frames in a GIF
GIF_IMAGES = 16  # images shown in an image GIF
CLOSEST_PAIRS = 8  # pairs drawn in eval/closest_pairs.png


@dataclass(frozen=True)
class SampleFiles:
    """What `ddpmkit sample` writes besides samples.npy and samples.png."""

    gif: bool = False  # reverse.gif: the reverse process (images: x_t beside x̂_0)
    png_dir: Path | None = None  # each sample as DIR/000000.png, ... (and labels.csv): what FID tools read (images)
    strip: tuple[int, ...] = ()  # strip.png: each sample's state at these timesteps (the nearest grid step)
    strip_shows: str = "xt"  # what the strip shows: xt, the noisy state x_t, or x0, its prediction x̂_0

    def __post_init__(self) -> None:
        if self.strip_shows not in ("xt", "x0"):
            raise UserError(f"--strip-shows takes xt (the noisy state x_t) or x0 (the prediction x̂_0), got {self.strip_shows!r}")


def kept_steps(T: int, grid: torch.Tensor, files: SampleFiles, report=lambda message: None) -> tuple[list[int], list[int]]:
    """The grid steps whose states the GIF keeps (GIF_FRAMES of them) and those the strip shows
    (each asked timestep's nearest grid step, in sampling order; a move said through `report`)."""
    gif = picture_steps(T, GIF_FRAMES, grid=grid) if files.gif else []
    pairs = nearest_grid_steps(list(files.strip), grid)
    for asked, used in pairs:
        if asked != used:
            report(f"--strip {asked}: the sampler's grid has no step {asked}; showing its nearest step, {used}")
    return gif, sorted(dict.fromkeys(used for _, used in pairs), reverse=True)


def sample_files(run: Run, samples: Samples, out: Path, files: SampleFiles, gif_steps: list[int], strip_steps: list[int],
                 rows: int | None = None) -> None:
    """The pictures of `ddpmkit sample` in `out`: samples.png (`rows`: one per class), and as
    `files` asks reverse.gif (its own frames, `gif_steps`), strip.png (`strip_steps`) and the PNG folder."""
    drawn = for_kind(run.modality)
    if files.gif:
        drawn.reverse_gif(dataclasses.replace(samples, trajectory=samples.trajectory.only(gif_steps)), out / "reverse.gif")
    if strip_steps:
        drawn.strip(samples, strip_steps, files.strip_shows, out / "strip.png")
    if files.png_dir is not None:
        png_folder(samples.data, Path(files.png_dir), None if samples.labels is None else samples.labels.numpy())
    drawn.samples(run, samples, out / "samples.png", rows=rows)


class Drawn:
    """The pictures drawn so far (their paths, in order), each named on a bar (tqdm on stderr, one
    tick per picture; None: silent) when it is begun and counted when it is written."""

    def __init__(self, bar=None):
        self.files: list[Path] = []
        self.bar = bar

    @property
    def progress(self) -> bool:
        """Whether a bar is shown (the samples drawn for the pictures then show their steps too)."""
        return self.bar is not None and not self.bar.disable

    def begin(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)

    def wrote(self, path: Path) -> None:
        self.files.append(Path(path))
        if self.bar is not None:
            self.bar.update()


def end_of_run(run: Run, dataset, progress: bool = False) -> tuple[list[Path], Samples | None]:
    """The pictures of a trained run in its directory: loss.png, quality.png (when it measured its
    quality, --eval-every) and its kind's (`for_kind(...).training`), with a bar on stderr naming
    each as it is drawn unless `progress` is False. Returns the files written, in order, and the
    samples drawn for them (2-D runs; None for images)."""
    drawn_for = for_kind(run.modality)
    with tqdm(total=2 + drawn_for.TRAINING_PICTURES, disable=not progress, unit="picture", dynamic_ncols=True,
              desc="end-of-run pictures") as bar:
        drawn = Drawn(bar)
        drawn.begin("loss.png")
        loss_curve(run.directory)
        drawn.wrote(Path(run.directory) / "loss.png")
        drawn.begin("quality.png")
        quality = quality_curve(run.directory)
        if quality is None:  # the run measured nothing: no picture
            bar.total -= 1
            bar.refresh()
        else:
            drawn.wrote(quality)
        samples = drawn_for.training(run, dataset, run.directory, drawn)
    return drawn.files, samples


def step_picture_path(run_dir: Path, step: int) -> Path:
    """steps/step-N.png of a run directory (its folder created; apart from RUN/samples, the folder `ddpmkit sample` owns)."""
    folder = Path(run_dir) / "steps"
    folder.mkdir(exist_ok=True)
    return folder / f"step-{step:08d}.png"


def loss_curve(run_dir: Path) -> None:
    """loss.png: the training loss (and per quarter of t) of log.jsonl against step."""
    viz.loss_curve(read_log(run_dir), Path(run_dir) / "loss.png")


def quality_curve(run_dir: Path) -> Path | None:
    """quality.png: the measure that picks the best step (--eval-every) against step, the best
    step marked; None (and no picture) when the run measured nothing."""
    records = quality_records(run_dir)
    if not records:
        return None
    last = records[-1]
    metric, s = last["metric"], last["samples"]
    records = [r for r in records if r["metric"] == metric]
    path = Path(run_dir) / "quality.png"
    viz.quality_curve([r["step"] for r in records], [r["quality"][metric] for r in records], metric, path,
                      f"{s['num']:,} samples, {s['sampler']} {s['steps']} steps, EMA weights")
    return path


def image_grid(images: np.ndarray, path: Path, rows: int | None = None) -> None:
    """uint8 images [N, H, W, C] tiled into a PNG, enlarged so tiny images are visible."""
    save_png(path, viz.image_grid(images, rows=rows, scale=viz.grid_scale(images.shape[1], images.shape[2])))


def png_folder(images: np.ndarray, directory: Path, labels: np.ndarray | None = None) -> list[Path]:
    """Each image [N, H, W, C] as DIR/000000.png, 000001.png, ... at its own size and bit
    depth (uint8: 8-bit grey, grey+alpha, RGB or RGBA; uint16 grey: 16-bit), the folder that
    clean-fid, torch-fidelity and pytorch-fid read; with `labels` [N], DIR/labels.csv
    (file,label). Every file is written atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if images.dtype == np.uint16 and images.shape[-1] != 1:
        raise UserError("16-bit PNG folders hold grey images only (Pillow writes no 16-bit colour PNG)")
    if images.dtype not in (np.uint8, np.uint16):
        raise UserError(f"PNG folders take uint8 or uint16 images, got {images.dtype}")
    digits = max(6, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(images):
        paths.append(directory / f"{i:0{digits}d}.png")
        save_png(paths[-1], viz.png_image(image))
    if labels is not None:
        atomic_write_text(directory / "labels.csv", "file,label\n" + "".join(f"{p.name},{int(k)}\n" for p, k in zip(paths, labels)))
    return paths


def as_images(x: torch.Tensor) -> np.ndarray:
    """Model-space images [N, C, H, W] → uint8 [N, H, W, C], what viz draws."""
    return to_uint8(x).permute(0, 2, 3, 1).numpy()


# ---- 2-D points ------------------------------------------------------------------------------
def point_scatter(points: np.ndarray, path: Path, title: str, reference: np.ndarray | None = None) -> None:
    viz.scatter(points, path, title, reference=reference)


def point_training_pictures(run: Run, x0: torch.Tensor, run_dir: Path, drawn: Drawn | None = None) -> Samples:
    """forward.png, reverse.png, diffusion.gif (forward then reverse) and samples.png for the
    normalised training points `x0` [n, D], all in the space the model sees, each told to `drawn`;
    returns the samples drawn for them (as many as `x0`)."""
    drawn = drawn or Drawn()
    config = run.config
    T = config.diffusion.num_steps
    schedule = run.base.schedule.to("cpu")
    generator = torch.Generator().manual_seed(config.seed)
    forward_t = picture_steps(T, PICTURE_STEPS - 1)
    gif_t = picture_steps(T, 24)

    def forward_frames(ts):
        noise = randn_like(x0, generator)  # one ε for every frame: each point drifts smoothly
        return [process.q_sample(schedule, x0, torch.full((len(x0),), t), noise).numpy() for t in ts]

    def titles(ts):
        return [f"t = {t}" for t in ts]

    drawn.begin("forward.png")
    viz.scatter_strip([x0.numpy(), *forward_frames(forward_t)], ["data", *titles(forward_t)], run_dir / "forward.png")
    drawn.wrote(run_dir / "forward.png")
    # The reverse process pictured at the forward strip's timesteps: ancestral DDPM on every step of T
    # (a few-step grid would miss them), its own default.
    drawn.begin(f"reverse.png (ddpm, {T} steps)")
    samples = draw(run, len(x0), SamplingRequest(sampler="ddpm", seed=config.seed, progress=drawn.progress),
                   keep=sorted(set(forward_t) | set(gif_t)))
    traj = dict(zip(samples.trajectory.steps, samples.trajectory.xs))
    final = samples.model.numpy()
    rev_t = forward_t[::-1]
    viz.scatter_strip([traj[t].numpy() for t in rev_t] + [final], [*titles(rev_t), "samples"], run_dir / "reverse.png")
    drawn.wrote(run_dir / "reverse.png")
    drawn.begin("diffusion.gif")
    frames = [x0.numpy(), *forward_frames(gif_t), *[traj[t].numpy() for t in gif_t[::-1]], final]
    names = ["data", *[f"forward t = {t}" for t in gif_t], *[f"reverse t = {t}" for t in gif_t[::-1]], "samples"]
    viz.scatter_gif(frames, names, run_dir / "diffusion.gif")
    drawn.wrote(run_dir / "diffusion.gif")
    drawn.begin("samples.png")
    point_scatter(samples.data, run_dir / "samples.png", f"{len(x0)} samples (EMA)", reference=run.modality.to_data_space(x0))
    drawn.wrote(run_dir / "samples.png")
    return samples


def point_reverse_gif(samples: Samples, path: Path) -> None:
    """The moving point cloud of the reverse process."""
    traj = samples.trajectory
    frames = [x.numpy() for x in traj.xs] + [samples.model.numpy()]
    viz.scatter_gif(frames, [f"t = {t}" for t in traj.steps] + ["samples"], path)


# ---- images ----------------------------------------------------------------------------------


def image_training_pictures(run: Run, dataset, run_dir: Path, n: int = 64, drawn: Drawn | None = None) -> None:
    """samples.png (a grid from the EMA weights, drawn as `ddpmkit sample` draws: the default
    request with the run's seed) and forward.png (q(x_t) on a few training images), each told to `drawn`."""
    drawn = drawn or Drawn()
    drawn.begin("samples.png")
    image_grid(draw(run, n, SamplingRequest(seed=run.config.seed, progress=drawn.progress)).data, run_dir / "samples.png")
    drawn.wrote(run_dir / "samples.png")
    drawn.begin("forward.png")
    first = torch.stack([dataset[i][0] for i in range(min(4, len(dataset)))])
    schedules = {run.config.diffusion.schedule: NoiseSchedule.from_config(run.config.diffusion)}  # its own β ends
    forward_table(first, schedules, run.config.diffusion.num_steps, run_dir / "forward.png", run.config.seed)
    drawn.wrote(run_dir / "forward.png")


def forward_table(images_uint8: torch.Tensor, schedules: list[str] | dict[str, NoiseSchedule], T: int, path: Path,
                  seed: int = 0) -> None:
    """Rows of x_t ~ q(x_t | x_0) at PICTURE_STEPS values of t, for each image and schedule
    (names, or a name → NoiseSchedule of T steps; the same ε for every schedule, so rows
    differ only by the schedule)."""
    x0 = to_model_space(images_uint8)  # [K, C, H, W]
    noise = randn_like(x0, torch.Generator().manual_seed(seed))
    steps = picture_steps(T, PICTURE_STEPS)
    rows, labels = [], []
    if not isinstance(schedules, dict):
        schedules = {name: NoiseSchedule.from_name(name, T) for name in schedules}
    for name, sched in schedules.items():
        frames = [process.q_sample(sched, x0, torch.full((len(x0),), t), noise) for t in steps]
        for k in range(len(x0)):
            rows.append([as_images(f[k : k + 1])[0] for f in frames])
            labels.append(f"{name} #{k}")
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.image_table(rows, labels, [f"t = {t}" for t in steps], path)


def sample_strip_images(samples: Samples, steps: list[int], shows: str, path: Path) -> None:
    """The progressive-generation figure: one row per sample, one column per kept timestep (in
    sampling order, then the sample), each cell x_t (`shows` "xt") or x̂_0 ("x0") there."""
    traj = samples.trajectory
    states = dict(zip(traj.steps, traj.xs if shows == "xt" else traj.x0s))
    columns = [as_images(states[t]) for t in steps] + [as_images(samples.model[: len(traj.xs[0])])]
    rows = [[column[k] for column in columns] for k in range(len(columns[0]))]
    what = "x_t" if shows == "xt" else "x̂_0"
    viz.image_table(rows, [f"#{k}" for k in range(len(rows))], [f"{what}, t = {t}" for t in steps] + ["sample"], path)


def sample_strip_points(samples: Samples, steps: list[int], shows: str, path: Path) -> None:
    """The reverse process of a 2-D run as a strip of scatters at the kept timesteps, then the samples."""
    traj = samples.trajectory
    states = dict(zip(traj.steps, traj.xs if shows == "xt" else traj.x0s))
    what = "x_t" if shows == "xt" else "x̂_0"
    viz.scatter_strip([states[t].numpy() for t in steps] + [samples.model.numpy()],
                      [f"{what}, t = {t}" for t in steps] + ["samples"], path)


def schedule_curves(schedules: dict[str, NoiseSchedule], path: Path) -> None:
    """β_t, ᾱ_t and log-SNR of each schedule (label → its tables) in one PNG of three panels."""
    curves = {label: {"beta": s.betas.numpy(), "alpha_bar": s.alphas_cumprod.numpy(), "log_snr": s.log_snr.numpy()}
              for label, s in schedules.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.schedule_panels(curves, path)


def image_reverse_gif(samples: Samples, path: Path) -> None:
    """The reverse process: x_t (left) beside the predicted x̂_0 (right), GIF_IMAGES images, each
    frame captioned with its timestep t (the last frame: the samples)."""
    traj = samples.trajectory
    final = as_images(samples.model[:GIF_IMAGES])
    lefts = [as_images(x[:GIF_IMAGES]) for x in traj.xs]
    rights = [as_images(x0[:GIF_IMAGES]) for x0 in traj.x0s]
    captions = [(f"x_t, t = {t}", f"predicted x_0, t = {t}") for t in traj.steps] + [("samples", "samples")]
    viz.side_by_side_gif([*lefts, final], [*rights, final], path, captions=captions)


def image_rows(rows: list[tuple[str, np.ndarray]], col_labels: list[str], path: Path) -> None:
    """A labelled table of uint8 image batches: each row (label, [N, H, W, C]), one column per
    image (the edit pictures: input, mask, result)."""
    viz.image_table([list(images) for _, images in rows], [label for label, _ in rows], col_labels, path)


def mask_image(fill: torch.Tensor) -> np.ndarray:
    """An inpainting mask (bool [1, 1, H, W], True = fill in) as the white-on-black uint8 image [H, W, 1] it was drawn as."""
    return (fill[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def sampler_comparison(results: list[dict], metric: str, path: Path, title: str) -> None:
    """compare.png of compare-samplers: `metric` against network evaluations, one line per sampler."""
    viz.quality_vs_steps(results, metric, path, title)  # written atomically by viz


def frames_gif(frames: np.ndarray, path: Path) -> None:
    """uint8 frames [K, H, W, C] as a GIF played forth and back."""
    viz.frames_gif([f[None] for f in frames], path)


def score_grid(images: np.ndarray, bpd: np.ndarray, flags: list[str], path: Path, shown: int = 64) -> None:
    """The scored images [N, H, W, C] in their order (worst first), each titled with its bits/dim
    and its flag (high / low against the held-out range); the first `shown`."""
    titles = [f"{v:.2f}" + (f" {f}" if f else "") for v, f in zip(bpd[:shown], flags[:shown])]
    viz.titled_grid(images[:shown], titles, path)


def closest_pairs(dataset, samples_nhwc: np.ndarray, memo: dict, path: Path) -> None:
    """The CLOSEST_PAIRS samples nearest to a training image, each above that image
    (`memo`: evaluation.memorisation's result for these samples)."""
    order = np.argsort(memo["sample_distances"], kind="stable")[:CLOSEST_PAIRS]
    train = dataset.batch(memo["nearest"][order].tolist())[0].permute(0, 2, 3, 1).numpy()
    labels = [f"d = {memo['sample_distances'][i]:.3f}" + (" near-copy" if memo["flags"][i] else "") for i in order]
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.image_table([list(samples_nhwc[order]), list(train)], ["sample", "nearest\ntraining"], labels, path)


# ---- the pictures of each kind of data ---------------------------------------------------------
class PointPictures:
    """What a 2-D run draws: scatters over fresh points."""

    TRAINING_PICTURES = 4  # what `training` draws

    def training(self, run: Run, dataset, run_dir: Path, drawn: Drawn | None = None, n: int = 2000) -> Samples:
        """forward.png, reverse.png, diffusion.gif and samples.png of a trained run (each told to
        `drawn`); returns the samples drawn for them."""
        return point_training_pictures(run, dataset.points[:n], run_dir, drawn)

    def step(self, run: Run, path: Path, step: int) -> None:
        """steps/step-N.png: the kind's step_samples points drawn as `ddpmkit sample` draws (the run's seed)."""
        point_scatter(draw(run, run.modality.step_samples, SamplingRequest(seed=run.config.seed)).data, path, f"step {step}")

    def samples(self, run: Run, samples: Samples, path: Path, rows: int | None = None) -> None:
        """samples.png of `ddpmkit sample`: the samples over as many fresh points (at most 5,000)."""
        n = len(samples.data)
        point_scatter(samples.data, path, f"{n} samples", reference=fresh_points(run.config.data, min(n, 5000)))

    def reverse_gif(self, samples: Samples, path: Path) -> None:
        point_reverse_gif(samples, path)

    def strip(self, samples: Samples, steps: list[int], shows: str, path: Path) -> None:
        """sample --strip: the whole point cloud at each kept timestep, in one row."""
        sample_strip_points(samples, steps, shows, path)


class ImagePictures:
    """What an image run draws: grids."""

    TRAINING_PICTURES = 2  # what `training` draws

    def training(self, run: Run, dataset, run_dir: Path, drawn: Drawn | None = None) -> None:
        """samples.png and forward.png of a trained run (each told to `drawn`)."""
        image_training_pictures(run, dataset, run_dir, drawn=drawn)

    def step(self, run: Run, path: Path, step: int) -> None:
        """steps/step-N.png: a grid of the kind's step_samples images drawn as `ddpmkit sample` draws (the run's seed)."""
        image_grid(draw(run, run.modality.step_samples, SamplingRequest(seed=run.config.seed)).data, path)

    def samples(self, run: Run, samples: Samples, path: Path, rows: int | None = None) -> None:
        """samples.png of `ddpmkit sample`: a grid (`rows`: one per class for --class all)."""
        image_grid(samples.data, path, rows=rows)

    def reverse_gif(self, samples: Samples, path: Path) -> None:
        image_reverse_gif(samples, path)

    def strip(self, samples: Samples, steps: list[int], shows: str, path: Path) -> None:
        """sample --strip: one row per sample, one column per kept timestep."""
        sample_strip_images(samples, steps, shows, path)


PICTURES = {"points": PointPictures(), "images": ImagePictures()}  # by Kind.kind


def for_kind(kind: Kind) -> PointPictures | ImagePictures:
    """The pictures of a kind of data."""
    return PICTURES[kind.kind]
