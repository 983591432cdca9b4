"""One image: opened from a file or an encoded row, decoded (EXIF orientation applied), made
canonical and fitted to a size and channel count as uint8 [H, W, C]; `fit_arrays` fits the rows
of a uint8 array the same way. Training data (data.images) and a user's own images (data.inputs)
are fitted here alike.

Decisions, made once here:
- Resizing: scale so the image covers H x W, then centre-crop (the crop and the
  resize are one Pillow `resize(box=...)`, so the centre is exact to a sub-pixel).
  Downscaling uses LANCZOS with reducing_gap=3 (Pillow: indistinguishable from the
  exact filter, much faster on large photos); upscaling uses BICUBIC, which rings
  less than LANCZOS on tiny sources such as the 8x8 digits. A size that only needs
  a crop is cropped to whole pixels, with no resampling.
- Channels: 1 = luminance (ITU-R 601-2, Pillow's "L"), 2 = grey + alpha,
  3 = RGB, 4 = RGBA (alpha 255 where the source has none). Sources with
  transparency are composited over WHITE when converted to 1 or 3 channels: an icon
  or logo on a transparent background is then a dark shape on white, as viewers
  show it. RGBA is resized premultiplied (Pillow does this), so transparent pixels
  do not bleed their hidden colour.
- 16-bit grey (Pillow modes "I;16*", "I") is scaled by 1/257 (65535 -> 255) and
  resized in float before a single rounding to 8 bits.
- EXIF orientation is applied, so phone photos are upright.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
_HIGH_BIT_GREY = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_GREY_MODES = _HIGH_BIT_GREY | {"1", "L", "LA", "La"}  # palette ("P") images count as colour
MODE_FOR_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_REDUCING_GAP = 3.0
_EXIF_ORIENTATION = 0x0112


class ImageSource(Protocol):
    """Encoded images opened by index: files on disk or rows of a Hugging Face table."""

    def __len__(self) -> int: ...
    def open(self, i: int) -> Image.Image: ...  # lazily opened (header only)
    def name(self, i: int) -> str: ...  # for messages
    def subset(self, keep: Sequence[int]) -> ImageSource: ...


@dataclass(frozen=True)
class Stored:
    """A data set as its format stores it, before it is fitted to a size and channel count: what
    each format's reader (data.formats) returns."""

    images: np.ndarray | ImageSource  # uint8 [N, H, W, C] arrays, or encoded images decoded when fitted
    labels: np.ndarray | None = None  # int64 [N] class indices, or None when unlabelled
    class_names: Sequence[str] = ()  # one name per class
    where: str = ""  # what it came from, for messages and records


class Files:
    """Image files under a root folder."""

    def __init__(self, root: Path, paths: Sequence[Path]):
        self.root, self.paths = root, list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def open(self, i: int) -> Image.Image:
        return Image.open(self.paths[i])

    def name(self, i: int) -> str:
        return self.paths[i].relative_to(self.root).as_posix()

    def subset(self, keep: Sequence[int]) -> Files:
        return Files(self.root, [self.paths[i] for i in keep])


def image_files(root: Path) -> list[Path]:
    """Every image file below `root` (hidden files and folders skipped), sorted by path."""
    return sorted(
        (p for p in root.rglob("*")
         if p.suffix.lower() in IMAGE_EXTENSIONS
         and not any(part.startswith(".") for part in p.relative_to(root).parts)
         and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )  # fmt: skip


def hwc_to_chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()


def canonical(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "F" (16-bit grey scaled to 0..255 floats), "L", "LA", "RGB" or "RGBA"."""
    mode = img.mode
    if mode in _HIGH_BIT_GREY:
        a = np.asarray(img).astype(np.float32)  # I;16 (either byte order), I (int32), F
        return Image.fromarray(np.clip(a, 0.0, 65535.0) / np.float32(257.0))
    transparent = "transparency" in img.info  # a tRNS colour or palette alpha
    if mode in ("1", "L"):
        return img.convert("LA" if transparent else "L")
    if mode in ("LA", "La"):
        return img.convert("LA")
    has_alpha = transparent or mode in ("RGBA", "RGBa", "PA")
    return img.convert("RGBA" if has_alpha else "RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX ...


def over_white(img: Image.Image) -> Image.Image:
    """Composite "LA" / "RGBA" over a white background -> "L" / "RGB"."""
    a = np.asarray(img).astype(np.float32)
    colour, alpha = a[..., :-1], a[..., -1:] / 255.0
    out = np.rint(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out)


def _cover_box(src_w: int, src_h: int, w: int, h: int) -> tuple[float, tuple[float, float, float, float]]:
    """Scale that makes (src_w, src_h) cover (w, h), and the centred source box that maps onto it."""
    scale = max(w / src_w, h / src_h)
    crop_w, crop_h = w / scale, h / scale
    left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    return scale, (left, top, left + crop_w, top + crop_h)


def _resize_cover(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Cover (H, W) = `size` and centre-crop (see the module docstring for the filters)."""
    h, w = size
    if img.size == (w, h):
        return img
    scale, box = _cover_box(img.width, img.height, w, h)
    if scale == 1.0:  # only a crop: whole pixels, no resampling
        left, top = (img.width - w) // 2, (img.height - h) // 2
        return img.crop((left, top, left + w, top + h))
    if scale < 1.0:
        return img.resize((w, h), Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP)
    return img.resize((w, h), Image.Resampling.BICUBIC, box=box)


def fit(img: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """A decoded image -> uint8 [H, W, channels]: canonical mode, alpha, cover-resize, channels."""
    img = canonical(img)
    if img.mode in ("LA", "RGBA") and channels in (1, 3):
        img = over_white(img)
    if img.mode in ("RGB", "RGBA") and channels in (1, 2):  # to grey before resizing: less work
        img = img.convert("L" if img.mode == "RGB" else "LA")
    img = _resize_cover(img, size)
    if img.mode == "F":  # 16-bit grey: round once, after resizing
        img = Image.fromarray(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8))
    img = img.convert(MODE_FOR_CHANNELS[channels])
    return np.array(img).reshape(size[0], size[1], channels)  # a writable copy


def open_decoded(source: ImageSource, i: int, lazy: bool) -> Image.Image:
    """Decode image i fully (pixels loaded, EXIF orientation applied).

    Only Pillow's own work is inside the try: it raises many types (OSError,
    SyntaxError, ValueError, DecompressionBombError, ...) for bad files.
    """
    try:
        with source.open(i) as img:
            img.load()
            return ImageOps.exif_transpose(img)  # a loaded copy, valid after the file closes
    except Exception as e:  # noqa: BLE001 - any failure means "this file cannot be read"
        if lazy:
            raise UserError(f"cannot read image {source.name(i)}: {e}; remove or replace the file, then continue "
                            "with --resume (the last checkpoint is intact)") from e
        raise Unreadable(source.name(i)) from e


class Unreadable(Exception):
    pass


def header(source: ImageSource, i: int) -> tuple[tuple[int, int], bool]:
    """((H, W) after EXIF orientation, is-grey) from the header, plus Pillow's cheap verify()."""
    try:
        with source.open(i) as img:
            w, h = img.size
            grey = img.mode in _GREY_MODES
            exif = img.info.get("exif")  # read with the header by JPEG, WebP, PNG (eXIf before IDAT)
            if exif:
                parsed = Image.Exif()
                parsed.load(exif)
                if parsed.get(_EXIF_ORIENTATION) in (5, 6, 7, 8):  # rotated by 90 degrees
                    w, h = h, w
            img.verify()  # PNG: chunk CRCs; others: header only
    except Exception as e:  # noqa: BLE001 - any failure means "this file cannot be read"
        raise Unreadable(source.name(i)) from e
    return (h, w), grey


def fit_arrays(images: np.ndarray, size: tuple[int, int], channels: int) -> torch.Tensor:
    """uint8 [N, H, W, C] -> uint8 [N, channels, *size], each row fitted as a decoded image is
    (C = 2 is grey + alpha, C = 4 RGBA); rows already of that size and channel count are copied."""
    n, h, w, c = images.shape
    if size == (h, w) and channels == c:
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    out = torch.empty((n, channels, *size), dtype=torch.uint8)
    for i in range(n):
        img = Image.fromarray(images[i, ..., 0] if c == 1 else np.ascontiguousarray(images[i]))
        out[i] = hwc_to_chw(fit(img, size, channels))
    return out
