"""A user's own images for a trained model (to edit, inpaint, interpolate or score), in a format of
data.formats that takes them (one image file, a folder of them or a .npy/.npz array), fitted
exactly as the run's training data are (data.decode), and the inpainting mask, drawn at the
inputs' own size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .decode import IMAGE_EXTENSIONS, Files, ImageSource, Unreadable, canonical, fit, fit_arrays, hwc_to_chw, open_decoded
from .formats import described, find


@dataclass
class InputImages:
    """Images a user gives a trained model (to edit or score), fitted to the run's size and channels."""

    images: torch.Tensor  # uint8 [N, C, H, W] at the run's size and channels
    names: list[str]  # the file (relative to the folder), or "NAME[i]" for an array's row i
    sizes: list[tuple[int, int]]  # each source's (H, W) before fitting
    note: str  # what was done to them, e.g. "resized 512x384 -> 8x8 (centre crop), grey"


_CHANNEL_NAMES = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}


def _native_channels(mode: str) -> int:
    """The channel count of a canonical Pillow mode (see canonical)."""
    return {"F": 1, "L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]


def _check_kind(native: int, channels: int, name: str, option: str) -> None:
    """Grey (1, 2) against colour (3, 4): a run of the other kind cannot take the image; alpha
    is dealt with as for training data (composited over white, or made opaque)."""
    if (native >= 3) != (channels >= 3):
        fix = "convert it to grey" if channels < 3 else "give a colour (RGB) image"
        article = "an" if native >= 3 else "a"
        raise UserError(f"{option} {name} is {article} {_CHANNEL_NAMES[native]} image but the run models {channels}-channel "
                        f"({_CHANNEL_NAMES[channels]}) images; {fix}, or use a run trained on such images")


def _fit_note(sizes: list[tuple[int, int]], size: tuple[int, int], natives: list[int], channels: int) -> str:
    """One line on what fitting did: the resizes (HEIGHTxWIDTH) and the channels."""
    h, w = size
    parts = []
    for (sh, sw), count in sorted({s: sizes.count(s) for s in sizes}.items()):
        prefix = f"{count} " if len(sizes) > 1 else ""
        if (sh, sw) == size:
            parts.append(f"{prefix}at {h}x{w} as is")
        else:
            crop = " (centre crop)" if sh * w != sw * h else ""
            parts.append(f"{prefix}resized {sh}x{sw} -> {h}x{w}{crop}")
    colour = _CHANNEL_NAMES[channels]
    if any(n in (2, 4) for n in natives) and channels in (1, 3):
        colour += ", alpha composited over white"
    return ", ".join(parts) + f"; {colour}"


def read_inputs(spec, image_size: tuple[int, int], channels: int, option: str = "--input") -> InputImages:
    """A user's images in any format of data.formats that takes them (an image file, a folder of
    them searched as for training data, a .npy/.npz array), fitted exactly as a run's training data
    are (cover-resize and centre-crop to `image_size`, alpha composited over white for 1 or 3
    channels). A grey image for a colour run or the other way round is refused (UserError), as is
    anything unreadable."""
    path = Path(spec).expanduser()
    size = (int(image_size[0]), int(image_size[1]))
    found = find(str(path), user_images=True)
    if found is None:
        what = "is not an image" if path.exists() else "does not exist"
        raise UserError(f"{option} {path} {what}; give {described(user_images=True)}")
    stored = found.read(str(path))
    if isinstance(stored.images, np.ndarray):  # [N, H, W, C] as stored
        n, sh, sw, native = stored.images.shape
        _check_kind(native, channels, path.name, option)
        fitted = fit_arrays(stored.images, size, channels)
        return InputImages(fitted, [f"{path.name}[{i}]" for i in range(n)], [(sh, sw)] * n,
                           _fit_note([(sh, sw)] * n, size, [native] * n, channels))
    source = stored.images
    images = torch.empty((len(source), channels, *size), dtype=torch.uint8)
    names, sizes, natives = [], [], []
    for k in range(len(source)):
        name = source.name(k)
        img = _decoded_input(source, k, option)
        native = _native_channels(canonical(img).mode)
        _check_kind(native, channels, name, option)
        names.append(name)
        sizes.append((img.height, img.width))
        natives.append(native)
        images[k] = hwc_to_chw(fit(img, size, channels))
    return InputImages(images, names, sizes, _fit_note(sizes, size, natives, channels))


def read_mask(path, inputs: InputImages, image_size: tuple[int, int], option: str = "--mask") -> torch.Tensor:
    """The inpainting mask: an image of every input's own size, WHITE where the model fills in and
    black where the input is kept (as diffusers' and image editors' masks), fitted like the inputs
    and thresholded at half grey. Returns bool [1, 1, H, W], True = fill in."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{option} {path} does not exist; give an image of the input's size, white where to fill in")
    img = _decoded_input(Files(path.parent, [path]), 0, option)
    for name, (h, w) in zip(inputs.names, inputs.sizes):
        if (img.height, img.width) != (h, w):
            raise UserError(f"{option} {path.name} is {img.height}x{img.width} but {name} is {h}x{w}; draw the mask at the "
                            "input's size (white: fill in, black: keep)")
    size = (int(image_size[0]), int(image_size[1]))
    grey = fit(img, size, 1)  # alpha composited over white, colour to luminance
    fill = torch.from_numpy(grey[..., 0] >= 128)[None, None]
    if not bool(fill.any()):
        raise UserError(f"{option} {path.name} has no white pixel{' after resizing' if size != (img.height, img.width) else ''}: "
                        "nothing to fill in (white: fill in, black: keep)")
    return fill


def _decoded_input(source: ImageSource, i: int, option: str) -> Image.Image:
    """A user's image i decoded (EXIF orientation applied), or one line saying it cannot be read."""
    try:
        return open_decoded(source, i, lazy=False)
    except Unreadable as e:
        raise UserError(f"{option} {source.name(i)} cannot be read as an image ({e.__cause__}); give a valid "
                        f"{'/'.join(IMAGE_EXTENSIONS)} file") from e
