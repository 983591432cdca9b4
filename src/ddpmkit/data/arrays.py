"""Image array files, .npy and .npz (keras.datasets' mnist.npz / fashion-mnist.npz layout too),
read as uint8 [N, H, W, C] with their integer labels and class names. Values may be uint8,
integers in 0..255, or floats in [0, 1] or [-1, 1] (model space); channels-first arrays are
transposed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .decode import Stored
from .idx import FASHION_CLASSES

KERAS_KEYS = frozenset({"x_train", "y_train", "x_test", "y_test"})  # the arrays of keras.datasets' .npz files
_ACCEPTED_VALUES = "store uint8 in 0..255, or floats in [0, 1] or [-1, 1]"


def is_array_file(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.suffix.lower() in (".npy", ".npz") and path.is_file()


def read_arrays(spec: str) -> Stored:
    """A .npy/.npz file as stored (read_array_file)."""
    path = Path(spec).expanduser()
    return Stored(*read_array_file(path), where=str(path))


def read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(images uint8 [N, H, W, C], labels int64 [N] or None, class names) of a .npy/.npz file;
    a file that cannot be read, or holds no images ddpmkit takes, is one clear line (UserError)."""
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
    return images, labels, class_names


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
