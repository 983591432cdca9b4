"""Image data sets: every source becomes uint8 tensors [C, H, W] plus integer labels.

Sources (`load_image_data`): scikit-learn's 8x8 digits, a folder of image files, one
image file, a .npy/.npz array file (Keras' mnist.npz and fashion-mnist.npz with their
x_train / y_train), MNIST's IDX files (data.idx), or a Hugging Face data set. Images stay uint8 until a batch
enters the model; `to_model_space` / `to_uint8` are the one pair of conversions to
and from the library's [-1, 1] floats.

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

import io
import math
import numbers
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..errors import UserError
from .idx import FASHION_CLASSES, is_idx, load_idx

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
KERAS_KEYS = frozenset({"x_train", "y_train", "x_test", "y_test"})  # the arrays of keras.datasets' .npz files
SPEC_FORMS = ("digits, a folder of images, an image file, a .npy/.npz file (Keras' mnist.npz too), an IDX images file "
              "(train-images-idx3-ubyte[.gz]), or hf:NAME[:SPLIT]")
_ACCEPTED_VALUES = "store uint8 in 0..255, or floats in [0, 1] or [-1, 1]"

_HIGH_BIT_GREY = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_GREY_MODES = _HIGH_BIT_GREY | {"1", "L", "LA", "La"}  # palette ("P") images count as colour
_MODE_FOR_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_REDUCING_GAP = 3.0
_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------- sizes and value space


def parse_image_size(value: int | str | tuple[int, int] | None) -> tuple[int, int] | None:
    """(H, W) from 32, "32", "32x48" / "32X48" (HEIGHTxWIDTH) or (32, 48); None stays None."""
    if value is None:
        return None
    size: tuple[int, ...] | None = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        size = (int(value), int(value))
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value, flags=re.ASCII)
        if match:
            h = int(match[1])
            size = (h, int(match[2]) if match[2] else h)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            size = (int(value[0]), int(value[1]))
    if size is None or min(size) <= 0:
        raise UserError(
            f"invalid image size {value!r}: use a positive integer such as 32, or HEIGHTxWIDTH such as 32x48"
        )
    return size  # type: ignore[return-value]


def to_model_space(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] in 0..255 -> float32 in [-1, 1] (x = u / 127.5 - 1)."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"to_model_space expects uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] (clamped) -> uint8, rounding: u = round((x + 1) * 127.5).

    The exact inverse of `to_model_space` on its outputs.
    """
    return ((x.detach().to(torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def dequantise(images_uint8: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """Uniform dequantisation: each 8-bit value u becomes a point drawn uniformly in its bin
    of width 2/255 around u's model-space value, float32 [B, C, H, W]; and the log2 of the
    bin density's scale, log2(127.5), which turns a density of the continuous points into
    the probability of the bins: log2 P(bin) ≈ log2 p(x) − D·log2(127.5)."""
    u = images_uint8.double() + torch.rand(images_uint8.shape, generator=generator, dtype=torch.float64) - 0.5
    return (u / 127.5 - 1).float(), math.log2(127.5)


# --------------------------------------------------------------------------- the data set


class _ImageSource(Protocol):
    """Encoded images opened by index: files on disk or rows of a Hugging Face table."""

    def __len__(self) -> int: ...
    def open(self, i: int) -> Image.Image: ...  # lazily opened (header only)
    def name(self, i: int) -> str: ...  # for messages
    def subset(self, keep: Sequence[int]) -> _ImageSource: ...


class ImageDataset(Dataset):
    """Images as uint8 [C, H, W] with integer labels (-1 when unlabelled).

    Either in memory (`images_uint8` [N, C, H, W]; items are views of its rows) or
    lazy (`images_uint8` is None; each item is decoded from its file on access).
    """

    def __init__(
        self,
        images_uint8: torch.Tensor | None,  # [N, C, H, W] uint8, or None with `lazy_source`
        labels: torch.Tensor | None = None,  # [N] long in 0..len(class_names)-1, or None
        class_names: Sequence[str] = (),  # one name per class; empty when unlabelled
        *,
        lazy_source: _ImageSource | None = None,  # decoded on access when not in memory
        image_size: tuple[int, int] | None = None,  # (H, W); required with lazy_source
        channels: int | None = None,  # 1..4; required with lazy_source
        source: str = "",  # what the data came from, for logs and metric reports
    ):
        if (images_uint8 is None) == (lazy_source is None):
            raise ValueError("give exactly one of images_uint8 and lazy_source")
        if images_uint8 is not None:
            if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
                got = f"{images_uint8.dtype} {tuple(images_uint8.shape)}"
                raise ValueError(f"images_uint8 must be uint8 [N, C, H, W], got {got}")
            n, channels, h, w = images_uint8.shape
            image_size = (h, w)
        else:
            if image_size is None or channels is None:
                raise ValueError("a lazy ImageDataset needs image_size and channels")
            n = len(lazy_source)
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
            if n and (labels.min() < 0 or labels.max() >= len(class_names)):
                raise ValueError(f"labels must lie in 0..{len(class_names) - 1}")
        self.images_uint8 = images_uint8
        self.labels = labels
        self.class_names = list(class_names) if labels is not None else []
        self.num_classes = len(self.class_names)
        self.channels = int(channels)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.source = source
        self._lazy = lazy_source
        self._label_list = labels.tolist() if labels is not None else [-1] * n

    def __len__(self) -> int:
        return len(self._label_list)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images_uint8 is not None:
            return self.images_uint8[i], self._label_list[i]
        return self._decode(i), self._label_list[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch for DataLoader (torch's fetcher calls this with a batch's indices
        and passes the list to collate_fn). In memory: views of rows, no decoding;
        default_collate stacks them with one copy."""
        if self.images_uint8 is not None:
            images = self.images_uint8
            return [(images[i], self._label_list[i]) for i in indices]
        return [self[i] for i in indices]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 [B, C, H, W], labels long [B]) for a list of indices, without a DataLoader."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.images_uint8 is not None:
            images = self.images_uint8.index_select(0, index)
        else:
            images = torch.empty((len(index), self.channels, *self.image_size), dtype=torch.uint8)
            for row, i in enumerate(index.tolist()):
                images[row] = self._decode(i)
        labels = self.labels[index] if self.labels is not None else torch.full((len(index),), -1)
        return images, labels

    def subset(self, indices: Sequence[int]) -> ImageDataset:
        """The images at `indices` (in that order), with their labels and class names."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        labels = self.labels[index] if self.labels is not None else None
        if self.images_uint8 is not None:
            return ImageDataset(self.images_uint8[index], labels, self.class_names, source=self.source)
        return ImageDataset(None, labels, self.class_names, lazy_source=self._lazy.subset(index.tolist()),
                            image_size=self.image_size, channels=self.channels, source=self.source)

    def _decode(self, i: int) -> torch.Tensor:
        i = range(len(self))[i]  # IndexError and negative indices as for a list
        img = _open_decoded(self._lazy, i, lazy=True)
        return _hwc_to_chw(_fit(img, self.image_size, self.channels))

    def __repr__(self) -> str:
        h, w = self.image_size
        where = "in memory" if self.images_uint8 is not None else "decoded on access"
        return (
            f"ImageDataset({len(self)} images, {self.channels}x{h}x{w}, {self.num_classes} classes, "
            f"{where}, source={self.source!r})"
        )


# --------------------------------------------------------------------------- one image


def _hwc_to_chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()


def _canonical(img: Image.Image) -> Image.Image:
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


def _fit(img: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """A decoded image -> uint8 [H, W, channels]: canonical mode, alpha, cover-resize, channels."""
    img = _canonical(img)
    if img.mode in ("LA", "RGBA") and channels in (1, 3):
        img = over_white(img)
    if img.mode in ("RGB", "RGBA") and channels in (1, 2):  # to grey before resizing: less work
        img = img.convert("L" if img.mode == "RGB" else "LA")
    img = _resize_cover(img, size)
    if img.mode == "F":  # 16-bit grey: round once, after resizing
        img = Image.fromarray(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8))
    img = img.convert(_MODE_FOR_CHANNELS[channels])
    return np.array(img).reshape(size[0], size[1], channels)  # a writable copy


def _open_decoded(source: _ImageSource, i: int, lazy: bool) -> Image.Image:
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
        raise _Unreadable(source.name(i)) from e


class _Unreadable(Exception):
    pass


def _header(source: _ImageSource, i: int) -> tuple[tuple[int, int], bool]:
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
        raise _Unreadable(source.name(i)) from e
    return (h, w), grey


# --------------------------------------------------------------------------- encoded sources


class _Files:
    """Image files under a root folder."""

    def __init__(self, root: Path, paths: Sequence[Path]):
        self.root, self.paths = root, list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def open(self, i: int) -> Image.Image:
        return Image.open(self.paths[i])

    def name(self, i: int) -> str:
        return self.paths[i].relative_to(self.root).as_posix()

    def subset(self, keep: Sequence[int]) -> _Files:
        return _Files(self.root, [self.paths[i] for i in keep])


class _HFRows:
    """Rows of a Hugging Face table whose image column is cast to Image(decode=False)."""

    def __init__(self, table, column: str, rows: Sequence[int]):
        self.table, self.column, self.rows = table, column, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def open(self, i: int) -> Image.Image:
        item = self.table[self.rows[i]][self.column]  # {"bytes": ..., "path": ...}
        if item.get("bytes"):
            return Image.open(io.BytesIO(item["bytes"]))
        return Image.open(item["path"])

    def name(self, i: int) -> str:
        item = self.table[self.rows[i]][self.column]
        return item.get("path") or f"row {self.rows[i]}"

    def subset(self, keep: Sequence[int]) -> _HFRows:
        return _HFRows(self.table, self.column, [self.rows[i] for i in keep])


def _from_encoded(
    source: _ImageSource,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    image_size: tuple[int, int] | None,
    channels: int | None,
    preload_limit_bytes: int,
    where: str,
    report: Callable[[str], None] | None,
) -> ImageDataset:
    """Scan headers (open + verify), settle size and channels, then preload or stay lazy."""
    headers: dict[int, tuple[tuple[int, int], bool]] = {}
    unreadable: list[str] = []
    for i in range(len(source)):
        try:
            headers[i] = _header(source, i)
        except _Unreadable as e:
            unreadable.append(str(e))

    if headers and channels is None:
        channels = 1 if all(grey for _, grey in headers.values()) else 3
    if headers and image_size is None:
        sizes = sorted({size for size, _ in headers.values()})
        if len(sizes) > 1:
            shown = " and ".join(f"{h}x{w}" for h, w in sizes[:2])
            raise UserError(
                f"the images in {where} have different sizes ({shown}, ...); "
                "pass --image-size SIZE or HEIGHTxWIDTH (e.g. 64 or 64x96) to resize and centre-crop them"
            )
        image_size = sizes[0]

    keep = sorted(headers)
    images = None
    if headers and len(keep) * channels * image_size[0] * image_size[1] <= preload_limit_bytes:
        images = torch.empty((len(keep), channels, *image_size), dtype=torch.uint8)
        decoded = []
        for i in keep:
            try:
                img = _open_decoded(source, i, lazy=False)
            except _Unreadable as e:
                unreadable.append(str(e))
                continue
            images[len(decoded)] = _hwc_to_chw(_fit(img, image_size, channels))
            decoded.append(i)
        images, keep = images[: len(decoded)], decoded

    if not keep:
        raise UserError(
            f"no readable images in {where}: all {len(unreadable)} image files failed to decode "
            f"(e.g. {', '.join(unreadable[:3])}); replace them with valid {'/'.join(IMAGE_EXTENSIONS)} files"
        )
    if unreadable:
        shown = ", ".join(unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
        message = f"skipped {len(unreadable)} unreadable image file(s) in {where}: {shown}"
        if report is None:
            warnings.warn(message, stacklevel=4)
        else:
            report(message)

    kept_labels = torch.from_numpy(labels[keep]) if labels is not None else None
    if images is not None:
        return ImageDataset(images, kept_labels, class_names, source=where)
    return ImageDataset(
        None, kept_labels, class_names, lazy_source=source.subset(keep),
        image_size=image_size, channels=channels, source=where,
    )  # fmt: skip


# --------------------------------------------------------------------------- folders


def _image_files(root: Path) -> list[Path]:
    """Every image file below `root` (hidden files and folders skipped), sorted by path."""
    return sorted(
        (p for p in root.rglob("*")
         if p.suffix.lower() in IMAGE_EXTENSIONS
         and not any(part.startswith(".") for part in p.relative_to(root).parts)
         and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )  # fmt: skip


def _load_folder(root: Path, image_size, channels, preload_limit_bytes, report) -> ImageDataset:
    """Every image file below `root` (hidden files and folders skipped), sorted by path."""
    paths = _image_files(root)
    if not paths:
        raise UserError(
            f"no images found in {root}; the folder (searched recursively) must hold "
            f"{', '.join(IMAGE_EXTENSIONS)} files"
        )
    # Classes: the first-level sub-folders, when every image lies inside one of them.
    tops = [p.relative_to(root).parts for p in paths]
    labels, class_names = None, []
    if all(len(parts) >= 2 for parts in tops):
        class_names = sorted({parts[0] for parts in tops})
        index = {name: k for k, name in enumerate(class_names)}
        labels = np.array([index[parts[0]] for parts in tops], dtype=np.int64)
    return _from_encoded(_Files(root, paths), labels, class_names, image_size, channels, preload_limit_bytes, str(root), report)


# --------------------------------------------------------------------------- arrays


def _images_to_uint8_nhwc(a: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) (or channels-first (N, C, H, W)) of uint8 or float -> uint8 NHWC."""
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim == 4 and a.shape[-1] not in (1, 2, 3, 4) and a.shape[1] in (1, 2, 3, 4):
        a = a.transpose(0, 2, 3, 1)  # channels-first, as PyTorch stores images
    if a.ndim != 4 or a.shape[-1] not in (1, 2, 3, 4) or 0 in a.shape:
        raise UserError(
            f"{where}: the image array has shape {a.shape}; expected (N, H, W) or (N, H, W, C) with C from 1 to 4"
        )
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 255:
            return a.astype(np.uint8)
        raise UserError(f"{where}: integer images must lie in 0..255 (found {lo}..{hi}); {_ACCEPTED_VALUES}")
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise UserError(f"{where}: the images contain NaN or infinite values; {_ACCEPTED_VALUES}")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.rint(a * 255.0).astype(np.uint8)
        if lo >= -1.0 and hi <= 1.0:
            return np.rint((a + 1.0) * 127.5).astype(np.uint8)  # as to_uint8
        raise UserError(
            f"{where}: float images must lie in [0, 1] or [-1, 1], found values in [{lo:.4g}, {hi:.4g}]; "
            "rescale them, or store uint8 in 0..255"
        )
    raise UserError(f"{where}: images of dtype {a.dtype} are not supported; {_ACCEPTED_VALUES}")


def _check_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    """Integer class labels [n] (>= 0) as int64."""
    labels = np.asarray(labels)
    if labels.size != n or (labels.ndim > 1 and max(labels.shape) != n):
        raise UserError(
            f"{where}: 'labels' has shape {labels.shape} but there are {n} images; store one integer class per image"
        )
    labels = labels.reshape(-1)
    integral = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and (labels == np.round(labels)).all()
    )
    if not integral or labels.min() < 0:
        raise UserError(f"{where}: labels must be non-negative integers (class indices 0, 1, ...)")
    return labels.astype(np.int64)


def _from_arrays(
    images: np.ndarray,  # uint8 [N, H, W, C]
    labels: np.ndarray | None,  # int64 [N] or None
    class_names: Sequence[str],
    image_size: tuple[int, int] | None,
    channels: int | None,
    source: str,
) -> ImageDataset:
    """In-memory data set; resized / converted image by image only when asked to."""
    n, h, w, c = images.shape
    size = image_size or (h, w)
    channels = channels or c  # arrays keep their channel count unless asked otherwise
    if size == (h, w) and channels == c:
        out = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    else:
        out = torch.empty((n, channels, *size), dtype=torch.uint8)
        for i in range(n):
            img = Image.fromarray(images[i, ..., 0] if c == 1 else np.ascontiguousarray(images[i]))
            out[i] = _hwc_to_chw(_fit(img, size, channels))  # C = 2 is grey+alpha, C = 4 RGBA
    return ImageDataset(out, None if labels is None else torch.from_numpy(labels), class_names, source=source)


def _load_array_file(path: Path, image_size, channels) -> ImageDataset:
    where = str(path)
    labels = None
    try:
        if path.suffix.lower() == ".npy":
            images = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                images, labels = _npz_arrays(npz, where)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {where} as a NumPy array file: {e}") from e
    images = _images_to_uint8_nhwc(images, where)
    class_names: list[str] = []
    if labels is not None:
        labels = _check_labels(labels, images.shape[0], where)
        class_names = _class_names(path, int(labels.max()) + 1)
    return _from_arrays(images, labels, class_names, image_size, channels, where)


def _npz_arrays(npz, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) of an .npz: keras.datasets' layout (x_train, y_train, x_test,
    y_test: the training split), else the images under images, x, arr_0 or the one array
    there is, with labels under labels or y."""
    keys = list(npz.files)
    if KERAS_KEYS <= set(keys):  # mnist.npz / fashion-mnist.npz of keras.datasets
        return npz["x_train"], npz["y_train"]
    image_key = next((k for k in ("images", "x", "arr_0") if k in keys), None)
    others = [k for k in keys if k not in ("labels", "y")]
    if image_key is None and len(others) == 1:
        image_key = others[0]
    if image_key is None:
        raise UserError(f"{where}: cannot tell which array holds the images (arrays: {', '.join(keys) or 'none'}); "
                        "store them under 'images' (or x_train/y_train/x_test/y_test as Keras does)")
    label_key = next((k for k in ("labels", "y") if k in keys and k != image_key), None)
    return npz[image_key], None if label_key is None else npz[label_key]


def _class_names(path: Path, count: int) -> list[str]:
    """Fashion-MNIST's names when the file says fashion and its labels fit them, else 0..count-1."""
    if "fashion" in str(path.resolve()).lower() and count <= len(FASHION_CLASSES):
        return list(FASHION_CLASSES)
    return [str(k) for k in range(count)]


def _load_idx_file(path: Path, image_size, channels) -> ImageDataset:
    """MNIST / Fashion-MNIST's IDX images file, with the labels file beside it (data.idx)."""
    images, labels, class_names = load_idx(path)
    return _from_arrays(images, labels, class_names, image_size, channels, str(path))


def _load_digits(image_size, channels) -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits: grey 8x8, values 0..16 -> round(v * 255 / 16)."""
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [1797, 8, 8, 1]
    labels = digits.target.astype(np.int64)
    return _from_arrays(images, labels, [str(k) for k in range(10)], image_size, channels, "digits")


# --------------------------------------------------------------------------- Hugging Face


def _load_hf(spec: str, image_size, channels, preload_limit_bytes, report) -> ImageDataset:
    """Hugging Face: hf:NAME[:SPLIT] via datasets.load_dataset; hf:imagefolder:PATH reads a local folder."""
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"{spec!r} needs the Hugging Face datasets package: pip install datasets (or pip install ddpmkit[hf])"
        ) from None
    rest = spec[len("hf:") :]
    if rest.startswith("imagefolder:"):
        data_dir = rest[len("imagefolder:") :]
        if not Path(data_dir).is_dir():
            raise UserError(f"{spec!r}: {data_dir!r} is not a folder; use hf:imagefolder:PATH with an existing folder")
        name, split, kwargs = "imagefolder", "train", {"data_dir": data_dir}
    else:
        name, _, split = rest.partition(":")
        split, kwargs = split or "train", {}
        if not name:
            raise UserError(f"{spec!r}: name the data set, as in hf:NAME or hf:NAME:SPLIT")
    try:
        table = datasets.load_dataset(name, split=split, **kwargs)
    except Exception as e:  # noqa: BLE001 - network, missing set or split, bad files: all the user's to fix
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load Hugging Face data set {name!r} (split {split!r}): {first_line}") from e

    image_columns = [k for k, f in table.features.items() if isinstance(f, datasets.Image)]
    if not image_columns:
        columns = ", ".join(table.features)
        raise UserError(f"{spec!r} has no image column (columns: {columns}); choose a data set with an Image feature")
    column = next((k for k in ("image", "img") if k in image_columns), image_columns[0])
    label_column = next((k for k, f in table.features.items() if isinstance(f, datasets.ClassLabel)), None)
    labels, class_names = None, []
    if label_column is not None:
        labels = np.fromiter(table[label_column], dtype=np.int64, count=len(table))  # a list or a lazy Column
        class_names = list(table.features[label_column].names)
        if (labels < 0).any():  # ClassLabel uses -1 for "no label": treat the set as unlabelled
            labels, class_names = None, []
    table = table.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    if len(table) == 0:
        raise UserError(f"{spec!r} (split {split!r}) has no rows")
    rows = _HFRows(table, column, range(len(table)))
    return _from_encoded(rows, labels, class_names, image_size, channels, preload_limit_bytes, spec, report)


# --------------------------------------------------------------------------- entry point


def load_image_data(
    spec: str,  # "digits", a folder, a .npy/.npz file, "hf:NAME[:SPLIT]" or "hf:imagefolder:PATH"
    image_size: int | str | tuple[int, int] | None = None,  # (H, W) to cover and centre-crop to; None: as stored
    channels: int | None = None,  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; None: from the data
    preload_limit_bytes: int = 2**31,  # decode everything up front when N*C*H*W bytes fit in this
    report: Callable[[str], None] | None = None,  # where the skipped-files message goes; None: warnings.warn
) -> ImageDataset:
    """Load an image data set as uint8 tensors; see the module docstring for the conversions.

    The word "digits" always means scikit-learn's digits (write ./digits for a folder of
    that name). Default channels: a folder or Hugging Face set gives 1 when every image
    is greyscale, else 3; arrays and digits keep their stored channel count. Folder
    labels are the first-level sub-folder names (sorted) when every image lies inside
    one; unreadable files are skipped with one warning.
    """
    spec = str(spec)  # a pathlib.Path works too
    size = parse_image_size(image_size)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 2, 3, 4)):
        raise UserError(f"invalid channel count {channels!r}: use 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)")
    if spec == "digits":
        return _load_digits(size, channels)
    if spec.startswith("hf:"):
        return _load_hf(spec, size, channels, preload_limit_bytes, report)
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        return _load_array_file(path, size, channels)
    if is_idx(path):
        return _load_idx_file(path, size, channels)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:  # one image (show-forward on a photo)
        return _from_encoded(_Files(path.parent, [path]), None, [], size, channels, preload_limit_bytes, str(path), report)
    if path.is_dir():
        return _load_folder(path, size, channels, preload_limit_bytes, report)
    if path.exists():
        raise UserError(f"{spec!r} is a file, not a data set; pass {SPEC_FORMS}")
    raise UserError(f"{spec!r} is not an existing folder or file; pass {SPEC_FORMS}")


# --------------------------------------------------------------------------- a model's own inputs


@dataclass
class InputImages:
    """Images a user gives a trained model (to edit or score), fitted to the run's size and channels."""

    images: torch.Tensor  # uint8 [N, C, H, W] at the run's size and channels
    names: list[str]  # the file (relative to the folder), or "NAME[i]" for an array's row i
    sizes: list[tuple[int, int]]  # each source's (H, W) before fitting
    note: str  # what was done to them, e.g. "resized 512x384 -> 8x8 (centre crop), grey"


_CHANNEL_NAMES = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}


def _native_channels(mode: str) -> int:
    """The channel count of a canonical Pillow mode (see _canonical)."""
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
    """One image file, a folder of them (searched as for training data) or a .npy/.npz array,
    fitted exactly as a run's training data are (cover-resize and centre-crop to `image_size`,
    alpha composited over white for 1 or 3 channels). A grey image for a colour run or the
    other way round is refused (UserError), as is anything unreadable."""
    path = Path(spec).expanduser()
    size = (int(image_size[0]), int(image_size[1]))
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        stored = _load_array_file(path, None, None).images_uint8  # [N, C, H, W] as stored
        n, native, sh, sw = stored.shape
        _check_kind(native, channels, path.name, option)
        fitted = _from_arrays(stored.permute(0, 2, 3, 1).numpy(), None, [], size, channels, str(path)).images_uint8
        return InputImages(fitted, [f"{path.name}[{i}]" for i in range(n)], [(sh, sw)] * n,
                           _fit_note([(sh, sw)] * n, size, [native] * n, channels))
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise UserError(f"{option} {path}: no {'/'.join(IMAGE_EXTENSIONS)} images in the folder (searched recursively)")
        names = [p.relative_to(path).as_posix() for p in files]
    elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        files, names = [path], [path.name]
    elif path.exists():
        raise UserError(f"{option} {path} is not an image: give a {'/'.join(IMAGE_EXTENSIONS)} file, a folder of them or "
                        "a .npy/.npz array")
    else:
        raise UserError(f"{option} {path} does not exist; give an image file, a folder of images or a .npy/.npz array")
    images = torch.empty((len(files), channels, *size), dtype=torch.uint8)
    sizes, natives = [], []
    for k, (file, name) in enumerate(zip(files, names)):
        img = _decoded_input(file, name, option)
        native = _native_channels(_canonical(img).mode)
        _check_kind(native, channels, name, option)
        sizes.append((img.height, img.width))
        natives.append(native)
        images[k] = _hwc_to_chw(_fit(img, size, channels))
    return InputImages(images, names, sizes, _fit_note(sizes, size, natives, channels))


def read_mask(path, inputs: InputImages, image_size: tuple[int, int], option: str = "--mask") -> torch.Tensor:
    """The inpainting mask: an image of every input's own size, WHITE where the model fills in and
    black where the input is kept (as diffusers' and image editors' masks), fitted like the inputs
    and thresholded at half grey. Returns bool [1, 1, H, W], True = fill in."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{option} {path} does not exist; give an image of the input's size, white where to fill in")
    img = _decoded_input(path, path.name, option)
    for name, (h, w) in zip(inputs.names, inputs.sizes):
        if (img.height, img.width) != (h, w):
            raise UserError(f"{option} {path.name} is {img.height}x{img.width} but {name} is {h}x{w}; draw the mask at the "
                            "input's size (white: fill in, black: keep)")
    size = (int(image_size[0]), int(image_size[1]))
    grey = _fit(img, size, 1)  # alpha composited over white, colour to luminance
    fill = torch.from_numpy(grey[..., 0] >= 128)[None, None]
    if not bool(fill.any()):
        raise UserError(f"{option} {path.name} has no white pixel{' after resizing' if size != (img.height, img.width) else ''}: "
                        "nothing to fill in (white: fill in, black: keep)")
    return fill


def _decoded_input(path: Path, name: str, option: str) -> Image.Image:
    """A user's image file decoded (EXIF orientation applied), or one line saying it cannot be read."""
    try:
        return _open_decoded(_Files(path.parent, [path]), 0, lazy=False)
    except _Unreadable as e:
        raise UserError(f"{option} {name} cannot be read as an image ({e.__cause__}); give a valid "
                        f"{'/'.join(IMAGE_EXTENSIONS)} file") from e
