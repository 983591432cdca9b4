import numpy as np
import pytest
from PIL import Image

from ddpmkit import viz


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_image_grid_keeps_every_channel_count(channels, mode):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 6, channels), dtype=np.uint8)
    grid = viz.image_grid(images, rows=2, pad=1, scale=2)
    assert grid.mode == mode and grid.size == (2 * (3 * 7 + 1), 2 * (2 * 5 + 1))
    pixels = np.asarray(grid).reshape(grid.height, grid.width, channels)
    assert np.array_equal(pixels[2:10:2, 2:14:2], images[0])  # first tile, one pixel of padding (×2)
    assert (pixels[0] == 255).all()  # the padding is opaque white


@pytest.mark.parametrize("channels", [2, 4])
def test_gif_frames_composite_alpha_over_white(channels, tmp_path):
    """GIF has no alpha: a transparent black pixel shows white, an opaque one black."""
    images = np.zeros((1, 2, 2, channels), dtype=np.uint8)
    images[..., -1] = [[0, 255], [0, 255]]  # left column transparent, right column opaque
    viz.side_by_side_gif([images, images], [images, images], tmp_path / "a.gif")
    frame = np.asarray(Image.open(tmp_path / "a.gif").convert("L"))
    scale = viz.grid_scale(2, 2)
    tile = frame[scale : 3 * scale : scale, scale : 3 * scale : scale]  # the padding is scaled too
    assert tile.tolist() == [[255, 0], [255, 0]]


def test_image_table_draws_grey_and_alpha_over_white(tmp_path):
    """An opaque black grey + alpha image shows black; a fully transparent one white."""
    opaque = np.zeros((4, 4, 2), dtype=np.uint8)
    opaque[..., 1] = 255
    transparent = np.zeros((4, 4, 2), dtype=np.uint8)
    dark = {}
    for name, image in (("opaque", opaque), ("transparent", transparent)):
        viz.image_table([[image, image]], ["row"], ["a", "b"], tmp_path / f"{name}.png")
        pixels = np.asarray(Image.open(tmp_path / f"{name}.png").convert("L"))
        dark[name] = int((pixels < 30).sum())
    assert dark["opaque"] > 20 * dark["transparent"] > 0  # two black cells against the frames and labels
