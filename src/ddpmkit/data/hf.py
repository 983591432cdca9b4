"""Hugging Face data sets: hf:NAME[:SPLIT] through datasets.load_dataset, hf:imagefolder:PATH for
a local folder; the image column is read encoded (decoded when fitted) with its ClassLabel labels."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from .decode import Stored

PREFIX = "hf:"


class HFRows:
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

    def subset(self, keep: Sequence[int]) -> HFRows:
        return HFRows(self.table, self.column, [self.rows[i] for i in keep])


def is_hf(spec: str) -> bool:
    return spec.startswith(PREFIX)


def read_hf(spec: str) -> Stored:
    """The image column of a Hugging Face data set (hf:NAME[:SPLIT], split train by default;
    hf:imagefolder:PATH reads a local folder) and its ClassLabel column, if it has one."""
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"{spec!r} needs the Hugging Face datasets package: pip install datasets (or pip install ddpmkit[hf])"
        ) from None
    rest = spec[len(PREFIX) :]
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
    return Stored(HFRows(table, column, range(len(table))), labels, class_names, spec)
