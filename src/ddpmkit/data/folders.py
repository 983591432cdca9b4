"""Image files on disk as a data set: a folder of them (searched recursively; its first-level
sub-folders are the classes when every image lies inside one) or one image file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .decode import IMAGE_EXTENSIONS, Files, Stored, image_files


def is_image_file(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def read_image_file(spec: str) -> Stored:
    """One image file, unlabelled (show-forward on a photo; a user's one image to edit)."""
    path = Path(spec).expanduser()
    return Stored(Files(path.parent, [path]), where=str(path))


def is_folder(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def read_folder(spec: str) -> Stored:
    """Every image file below the folder (hidden files and folders skipped), sorted by path,
    labelled by its first-level sub-folder (sorted names) when every image lies inside one."""
    root = Path(spec).expanduser()
    paths = image_files(root)
    if not paths:
        raise UserError(
            f"no images found in {root}; the folder (searched recursively) must hold "
            f"{', '.join(IMAGE_EXTENSIONS)} files"
        )
    tops = [p.relative_to(root).parts for p in paths]
    labels, class_names = None, []
    if all(len(parts) >= 2 for parts in tops):
        class_names = sorted({parts[0] for parts in tops})
        index = {name: k for k, name in enumerate(class_names)}
        labels = np.array([index[parts[0]] for parts in tops], dtype=np.int64)
    return Stored(Files(root, paths), labels, class_names, str(root))
