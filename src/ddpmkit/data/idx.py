"""The IDX files of MNIST and Fashion-MNIST (LeCun et al. 1998), read directly, gzipped or not.

The format: a big-endian header of a 4-byte magic number 0x0000TTDD (TT the element type,
0x08 for unsigned bytes; DD the number of dimensions), then DD big-endian uint32 sizes, then
the elements in C order. Image files are 0x00000803 ([N, rows, cols] uint8), label files
0x00000801 ([N] uint8). A data set is its images file; its labels lie beside it under the
standard name (train-images-idx3-ubyte[.gz] → train-labels-idx1-ubyte[.gz]), gzipped or not.
"""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np

from ..errors import UserError
from .decode import Stored

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: [N, rows, cols]
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: [N]
_UBYTE = 0x08
_GZIP = b"\x1f\x8b"
# The ten classes of Fashion-MNIST (Xiao et al. 2017), in label order.
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _open(path: Path):
    """The file's bytes as a stream: gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP
    return gzip.open(path, "rb") if gz else open(path, "rb")


def magic(path: Path) -> int | None:
    """The IDX magic number of a file (gzipped or not), or None when it has none."""
    try:
        with _open(Path(path)) as f:
            head = f.read(4)
    except (OSError, EOFError):
        return None
    if len(head) < 4:
        return None
    value = struct.unpack(">I", head)[0]
    return value if value >> 16 == 0 and (value >> 8) & 0xFF == _UBYTE and 1 <= value & 0xFF <= 4 else None


def is_idx(path: Path) -> bool:
    """Whether `path` is an IDX images file: by its name (…-idx3-ubyte, …idx3-ubyte.gz) or its magic number."""
    path = Path(path)
    return path.is_file() and (bool(re.search(r"idx3[-.]ubyte(\.gz)?$", path.name)) or magic(path) == IMAGES_MAGIC)


def read_idx_images(spec: str) -> Stored:
    """An IDX images file and the labels beside it, as stored (load_idx)."""
    path = Path(spec).expanduser()
    return Stored(*load_idx(path), where=str(path))


def read_idx(path: Path) -> np.ndarray:
    """The array of an IDX file of unsigned bytes, [d_1, ..., d_n] uint8."""
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4:
                raise UserError(f"{path} is too short to be an IDX file (no 4-byte magic number)")
            value = struct.unpack(">I", head)[0]
            if value >> 16 or (value >> 8) & 0xFF != _UBYTE:
                raise UserError(f"{path} is not an IDX file of unsigned bytes: its magic number is 0x{value:08x}, "
                                f"expected 0x{IMAGES_MAGIC:08x} (images) or 0x{LABELS_MAGIC:08x} (labels)")
            ndim = value & 0xFF
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            data = f.read()
    except (OSError, EOFError, struct.error) as e:  # a truncated gzip stream or header
        raise UserError(f"cannot read {path} as an IDX file: {e}") from e
    count = int(np.prod(dims))
    if len(data) < count:
        raise UserError(f"{path} is truncated: its header promises {count:,} bytes of data ({'×'.join(map(str, dims))}), "
                        f"it holds {len(data):,}")
    return np.frombuffer(data, dtype=np.uint8, count=count).reshape(dims).copy()  # writable, as torch wants


def labels_path(images: Path) -> Path | None:
    """The labels file beside an images file under the standard name, gzipped or not (None: none there)."""
    images = Path(images)
    stem = re.sub(r"\.gz$", "", images.name)
    name = stem.replace("images", "labels").replace("idx3", "idx1")
    if name == stem:
        return None
    return next((p for p in (images.with_name(name + ".gz"), images.with_name(name)) if p.is_file()), None)


def load_idx(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(images uint8 [N, rows, cols, 1], labels int64 [N] or None, class names) of an IDX
    images file and the labels file beside it; Fashion-MNIST's class names when the file's
    folder or name says fashion, else the digits 0..K-1."""
    path = Path(path)
    images = read_idx(path)
    if images.ndim != 3:
        raise UserError(f"{path} holds a {images.ndim}-dimensional IDX array; an images file is [N, rows, cols] "
                        f"(magic 0x{IMAGES_MAGIC:08x})")
    found = labels_path(path)
    if found is None:
        return images[..., None], None, []
    labels = read_idx(found)
    if labels.shape != (len(images),):
        raise UserError(f"{found} holds labels of shape {labels.shape}, but {path} has {len(images):,} images; "
                        "pass the images file whose labels these are")
    labels = labels.astype(np.int64)
    fashion = "fashion" in str(path.resolve()).lower() and int(labels.max()) < len(FASHION_CLASSES)
    names = list(FASHION_CLASSES) if fashion else [str(k) for k in range(int(labels.max()) + 1)]
    return images[..., None], labels, names
