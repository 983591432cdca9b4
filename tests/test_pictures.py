"""pictures: what each picture of a run shows (grids of the samples themselves, a GIF frame per
kept step, tables of the forward process, the closest training pairs, the loss curve), and that
each is whole: titles inside the figure, file names kept, legends off the data, 2-D scatters
framed on their data, the timestep t on every frame of a reverse GIF."""

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmkit import api, pictures, rundir, viz
from ddpmkit.config import DataConfig
from ddpmkit.data.images import load_image_data
from ddpmkit.data.toy import fresh_points
from ddpmkit.samplers import Trajectory
from ddpmkit.sampling import Samples
from ddpmkit.viz import grid_scale

from helpers import assert_drawn, bluish_share, gif_frames, grid_tile, picture


def test_an_image_grid_shows_each_image_enlarged(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 6, 5, 3), dtype=np.uint8)
    pictures.image_grid(images, tmp_path / "g.png")
    scale = grid_scale(6, 5)  # tiny images are enlarged to about 64 px
    grid = picture(tmp_path / "g.png", mode="RGB", size=((3 * 6 + 1) * scale, (3 * 7 + 1) * scale))  # 3 rows of 3
    for k in range(7):
        assert np.array_equal(grid_tile(grid, k, (6, 5), cols=3, scale=scale), images[k]), k
    pictures.image_grid(images[:6], tmp_path / "rows.png", rows=2)  # one row per class, say
    picture(tmp_path / "rows.png", size=((3 * 6 + 1) * scale, (2 * 7 + 1) * scale))


def test_step_pictures_go_to_the_samples_folder(tmp_path):
    path = pictures.step_picture_path(tmp_path, 1200)
    assert path == tmp_path / "steps" / "step-00001200.png" and path.parent.is_dir() and not path.exists()


def test_the_loss_curve_draws_the_logged_losses_and_their_quarters(tmp_path):
    for with_quarters in (True, False):
        run = tmp_path / str(with_quarters)
        run.mkdir()
        for step in range(1, 21):
            quarters = {f"loss_q{q}": (q + 1) / step if with_quarters else None for q in range(4)}
            record = {"step": step, "loss": 1 / step, **quarters}
            rundir.append_log(run, record if step != 7 else {**record, "loss": None})  # a skipped step
        pictures.loss_curve(run)
    curve, plain = assert_drawn(tmp_path / "True" / "loss.png"), assert_drawn(tmp_path / "False" / "loss.png")
    assert curve.width > curve.height and curve.size == plain.size
    assert bluish_share(curve) > 2 * bluish_share(plain)  # the quarters' blue curves, only where they were logged


def test_a_forward_table_has_a_row_per_image_and_schedule(tmp_path):
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8), dtype=np.uint8))
    pictures.forward_table(images, ["linear"], 100, tmp_path / "one.png")
    pictures.forward_table(images, ["linear", "cosine"], 100, tmp_path / "two.png")
    one, two = assert_drawn(tmp_path / "one.png"), assert_drawn(tmp_path / "two.png")
    assert one.width == two.width and two.height > 1.5 * one.height  # 2 rows against 4; columns: t


def trajectory_of(xs, x0s, steps) -> Trajectory:
    traj = Trajectory()
    for t, x, x0 in zip(steps, xs, x0s):
        traj(i=0, t=t, x=x, x0=x0, x_next=x)
    return traj


def test_an_image_reverse_gif_has_a_frame_per_kept_step_and_the_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(20, 1, 8, 8, generator=g) for _ in range(5)]
    final = torch.rand(20, 1, 8, 8, generator=g) * 2 - 1
    samples = Samples(final, None, trajectory_of(xs, xs, [40, 30, 20, 10, 0]))
    pictures.image_reverse_gif(samples, tmp_path / "r.gif")
    assert gif_frames(tmp_path / "r.gif") == 6
    frame = picture(tmp_path / "r.gif")
    scale = grid_scale(8, 8)
    rows = int(np.ceil(np.sqrt(pictures.GIF_IMAGES)))  # GIF_IMAGES (< 20) of the samples in a square grid
    side = (rows * 9 + 1) * scale
    assert frame.size == (2 * side + 8, side + viz.HEADER)  # x_t beside x̂_0 under a caption line


def test_a_2d_reverse_gif_has_a_frame_per_kept_step_and_the_samples(tmp_path):
    xs = [torch.randn(100, 2) * s for s in (3.0, 2.0, 1.0)]
    samples = Samples(torch.randn(100, 2), None, trajectory_of(xs, xs, [20, 10, 0]))
    pictures.point_reverse_gif(samples, tmp_path / "r.gif")
    assert gif_frames(tmp_path / "r.gif") == 4


def test_the_closest_pairs_put_each_near_copy_above_its_training_image(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.integers(0, 256, (12, 8, 8), dtype=np.uint8))
    dataset = load_image_data(str(tmp_path / "train.npy"))
    samples = dataset.batch(range(10))[0].permute(0, 2, 3, 1).numpy()  # 10 copies
    memo = {"sample_distances": np.linspace(0.0, 0.9, 10), "nearest": np.arange(10), "flags": np.arange(10) < 3}
    pictures.closest_pairs(dataset, samples, memo, tmp_path / "eval" / "pairs.png")
    table = assert_drawn(tmp_path / "eval" / "pairs.png")
    assert table.width > 2.5 * table.height  # CLOSEST_PAIRS (8) columns, two rows


# ---- whole pictures ------------------------------------------------------------------------------
def inside(fig, artist) -> bool:
    """Whether the drawn extent of `artist` (a title, a legend) lies inside its figure."""
    box, page = artist.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1


LONG_TITLE = "digits: Fréchet distance in the run's own features (a small classifier trained on the run's data), 500 samples each"


def test_titles_lie_inside_their_figure(tmp_path):
    """compare.png's title (the issue's was cut at both edges), a quality curve's and a strip's:
    each wrapped to its plot, none past the figure's edge, none wider than its own axes."""
    results = [{"sampler": s, "nfe": k, "fd_own": 1 / k + i} for i, s in enumerate(("ddpm", "ddim", "heun")) for k in (10, 100)]
    figures = [viz.quality_vs_steps(results, "fd_own", tmp_path / "c.png", LONG_TITLE),
               viz.quality_curve([1, 2, 3], [3.0, 1.0, 2.0], "fd_own", tmp_path / "q.png", LONG_TITLE),
               viz.scatter_strip([np.random.default_rng(0).normal(size=(50, 2))] * 4,
                                 ["x_t, t = 999 (a long title for a narrow panel)"] * 4, tmp_path / "s.png")]
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            assert inside(fig, ax.title), ax.title.get_text()
            assert ax.title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width + 1
    assert "\n" in figures[0].axes[0].title.get_text().strip()  # wrapped, every word kept
    assert figures[0].axes[0].title.get_text().replace("\n", " ") == LONG_TITLE
    assert_drawn(tmp_path / "c.png")


def test_an_edit_table_titles_each_column_with_the_whole_file_name(digits_run, tmp_path, monkeypatch):
    """edit.png's column titles are the input files' whole names (the issue's dropped their first
    character), wrapped inside their cell when long; the record names them too."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    names = ["d0-label8.png", "d1-label3.png", "a-very-long-name-of-an-input-file.png"]
    for k, name in enumerate(names):
        Image.fromarray(np.full((8, 8), 60 * k, np.uint8)).save(folder / name)
    drawn, table = [], viz.image_table
    monkeypatch.setattr(viz, "image_table", lambda *a, **k: drawn.append(table(*a, **k)))
    edited = api.edit(digits_run, folder, tmp_path / "out", strength=0.0)
    assert edited.record["inputs"] == sorted(names)
    (fig,) = drawn
    titles = [ax.title for ax in fig.axes if ax.title.get_text()]
    assert [t.get_text().replace("\n", "") for t in titles] == sorted(names)
    assert all(inside(fig, t) for t in titles)
    renderer = fig.canvas.get_renderer()
    label = fig.axes[0].yaxis.label  # the row label "input", clear of the figure's left edge
    assert label.get_text() == "input" and label.get_window_extent(renderer).x0 >= 4
    assert_drawn(tmp_path / "out" / "edit.png")


def test_the_loss_legend_lies_beside_the_curves(tmp_path):
    """loss.png's legend (the issue's covered the third quarter's curve) is outside the plot."""
    log = [{"step": s, "loss": 1 / s, **{f"loss_q{q}": (q + 1) / s for q in range(4)}} for s in range(1, 50)]
    fig = viz.loss_curve(log, tmp_path / "loss.png")
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    legend, plot = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= plot.x1 and inside(fig, ax.get_legend())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"t in quarter {q}" for q in range(4)] + ["loss"]


@pytest.mark.parametrize("data", ["moons", "circles", "swiss-roll", "checkerboard"])
def test_a_2d_scatter_fills_its_figure(data, tmp_path):
    """samples.png of a 2-D run is framed on its data at equal scales: its plot fills most of the
    figure (the moons' had wide blank bands above and below) and its legend lies under the plot."""
    points = fresh_points(DataConfig(name=data), 2000)
    fig = viz.scatter(points, tmp_path / "s.png", "2000 samples (EMA)", reference=fresh_points(DataConfig(name=data), 2000, seed=1))
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    ax.apply_aspect()
    box = ax.get_position()  # in figure fractions, after the equal aspect is applied
    assert box.height > 0.7 and box.width > 0.85, (data, box)
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.y1 <= ax.get_window_extent(renderer).y0 and inside(fig, ax.get_legend()) and inside(fig, ax.title)


def frame_pixels(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("L")).astype(int))
        return frames


def test_every_reverse_gif_frame_shows_its_t(tmp_path, monkeypatch):
    """reverse.gif (the issue's carried no t): with the same states at every step, the frames of
    an image GIF differ only in their caption line, and a 2-D GIF titles each frame "t = ..."."""
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    steps = [40, 30, 20]
    pictures.image_reverse_gif(Samples(x, None, trajectory_of([x] * 3, [x] * 3, steps)), tmp_path / "r.gif")
    frames = frame_pixels(tmp_path / "r.gif")
    for a, b in zip(frames[:3], frames[1:3]):
        changed = np.argwhere(a != b)
        assert len(changed) and changed[:, 0].max() < viz.HEADER  # only the caption line differs
    drawn, gif = [], viz.scatter_gif
    monkeypatch.setattr(viz, "scatter_gif", lambda frames, titles, path: drawn.append(titles) or gif(frames, titles, path))
    points = torch.randn(100, 2)
    pictures.point_reverse_gif(Samples(points, None, trajectory_of([points] * 3, [points] * 3, steps)), tmp_path / "p.gif")
    assert drawn == [["t = 40", "t = 30", "t = 20", "samples"]]
    frames = frame_pixels(tmp_path / "p.gif")
    assert all((a != b).any() for a, b in zip(frames[:3], frames[1:3]))  # the same points, another t
