"""Image data sets: every source becomes uint8 tensors [C, H, W] plus integer labels.

Sources (`load_image_data`): any format of data.formats' one list (the digits, a folder of
image files, one image file, .npy/.npz arrays, MNIST's IDX files, a Hugging Face data set),
read there as stored and fitted here. Images stay uint8 until a batch enters the model;
`to_model_space` / `to_uint8` are the one pair of conversions to and from the library's
[-1, 1] floats.

How each image is decoded and fitted (resizing, channels, alpha, 16-bit grey, EXIF) is decided
once, in data.decode; a user's own images for a trained model are read by data.inputs.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .decode import IMAGE_EXTENSIONS, ImageSource, Stored, Unreadable, fit, fit_arrays, header, hwc_to_chw, open_decoded
from .formats import described, find

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
        lazy_source: ImageSource | None = None,  # decoded on access when not in memory
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
        img = open_decoded(self._lazy, i, lazy=True)
        return hwc_to_chw(fit(img, self.image_size, self.channels))

    def __repr__(self) -> str:
        h, w = self.image_size
        where = "in memory" if self.images_uint8 is not None else "decoded on access"
        return (
            f"ImageDataset({len(self)} images, {self.channels}x{h}x{w}, {self.num_classes} classes, "
            f"{where}, source={self.source!r})"
        )


# --------------------------------------------------------------------------- encoded sources


def _from_encoded(
    stored: Stored,
    image_size: tuple[int, int] | None,
    channels: int | None,
    preload_limit_bytes: int,
    report: Callable[[str], None] | None,
) -> ImageDataset:
    """Encoded images: scan headers (open + verify), settle size and channels, then preload or stay lazy."""
    source, labels, class_names, where = stored.images, stored.labels, stored.class_names, stored.where
    headers: dict[int, tuple[tuple[int, int], bool]] = {}
    unreadable: list[str] = []
    for i in range(len(source)):
        try:
            headers[i] = header(source, i)
        except Unreadable as e:
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
                img = open_decoded(source, i, lazy=False)
            except Unreadable as e:
                unreadable.append(str(e))
                continue
            images[len(decoded)] = hwc_to_chw(fit(img, image_size, channels))
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
            warnings.warn(message, stacklevel=3)  # at load_image_data's caller
        else:
            report(message)

    kept_labels = torch.from_numpy(labels[keep]) if labels is not None else None
    if images is not None:
        return ImageDataset(images, kept_labels, class_names, source=where)
    return ImageDataset(
        None, kept_labels, class_names, lazy_source=source.subset(keep),
        image_size=image_size, channels=channels, source=where,
    )  # fmt: skip


# --------------------------------------------------------------------------- entry point


def load_image_data(
    spec: str,  # a data set in one of data.formats' FORMATS: "digits", a folder, a .npy/.npz file, "hf:NAME", ...
    image_size: int | str | tuple[int, int] | None = None,  # (H, W) to cover and centre-crop to; None: as stored
    channels: int | None = None,  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; None: from the data
    preload_limit_bytes: int = 2**31,  # decode everything up front when N*C*H*W bytes fit in this
    report: Callable[[str], None] | None = None,  # where the skipped-files message goes; None: warnings.warn
) -> ImageDataset:
    """Load an image data set as uint8 tensors; see the module docstring for the conversions.

    The first format that recognises `spec` reads it (data.formats; "digits" always means
    scikit-learn's digits: write ./digits for a folder of that name). Default channels: a folder or Hugging Face set gives 1 when every image
    is greyscale, else 3; arrays and digits keep their stored channel count. Folder
    labels are the first-level sub-folder names (sorted) when every image lies inside
    one; unreadable files are skipped with one warning.
    """
    spec = str(spec)  # a pathlib.Path works too
    size = parse_image_size(image_size)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 2, 3, 4)):
        raise UserError(f"invalid channel count {channels!r}: use 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)")
    found = find(spec)
    if found is None:
        what = "is a file, not a data set" if Path(spec).expanduser().exists() else "is not an existing folder or file"
        raise UserError(f"{spec!r} {what}; pass {described()}")
    stored = found.read(spec)
    if isinstance(stored.images, np.ndarray):  # arrays keep their size and channels unless asked otherwise
        n, h, w, c = stored.images.shape
        images = fit_arrays(stored.images, size or (h, w), channels or c)
        labels = None if stored.labels is None else torch.from_numpy(stored.labels)
        return ImageDataset(images, labels, stored.class_names, source=stored.where)
    return _from_encoded(stored, size, channels, preload_limit_bytes, report)
