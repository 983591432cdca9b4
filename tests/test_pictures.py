"""pictures: what each picture of a run shows (grids of the samples themselves, a GIF frame per
kept step, tables of the forward process, the closest training pairs, the loss curve)."""

import numpy as np
import torch

from ddpmkit import pictures, rundir
from ddpmkit.data.images import load_image_data
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
    assert frame.size == (2 * side + 8, side)  # x_t beside x̂_0


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
