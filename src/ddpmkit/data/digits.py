"""scikit-learn's 1,797 handwritten digits (grey 8x8, values 0..16), which ship with
scikit-learn: a data set that needs no download."""

from __future__ import annotations

import numpy as np

from .decode import Stored

NAME = "digits"  # the word always means these digits (write ./digits for a folder of that name)


def is_digits(spec: str) -> bool:
    return spec == NAME


def read_digits(spec: str = NAME) -> Stored:
    """The digits as uint8 [1797, 8, 8, 1] (v -> round(v * 255 / 16)) with their labels 0..9."""
    from sklearn.datasets import load_digits  # imported by the one reader that needs it (startup time)

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return Stored(images, digits.target.astype(np.int64), [str(k) for k in range(10)], NAME)
