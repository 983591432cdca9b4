"""The image data formats ddpmkit reads, listed once.

A format is a reader in its own module (`recognises(spec)`, `read(spec) -> decode.Stored`: the
images as stored, arrays or encoded files, with their labels) and one `Format` line in FORMATS
below. Everything that names or reads formats goes through this list: the data set loader
(data.images.load_image_data), a user's own images for a trained model (data.inputs.read_inputs),
the check of a data set's name (modality) and the help of --data, show-forward's --data and
--input (cli), so a new format changes nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .arrays import is_array_file, read_arrays
from .decode import Stored
from .digits import is_digits, read_digits
from .folders import is_folder, is_image_file, read_folder, read_image_file
from .hf import is_hf, read_hf
from .idx import is_idx, read_idx_images


@dataclass(frozen=True)
class Format:
    """One way a data set (or a user's images) can be given: on the command line, `--data SPEC`."""

    name: str  # a short name, for records and tests
    help: str  # how SPEC names it, in the help and the messages ("a folder of images")
    recognises: Callable[[str], bool]  # SPEC -> whether it is in this format (the first format that says so reads it)
    read: Callable[[str], Stored]  # SPEC -> its images as stored, with their labels
    user_images: bool = False  # whether a user's own images (edit, inpaint, interpolate, score) may come in it


FORMATS: tuple[Format, ...] = (
    Format("digits", "digits (scikit-learn's 8x8 images)", is_digits, read_digits),
    Format("hf", "hf:NAME[:SPLIT] (a Hugging Face data set; hf:imagefolder:PATH)", is_hf, read_hf),
    Format("arrays", "a .npy/.npz array file (Keras' mnist.npz / fashion-mnist.npz too)", is_array_file, read_arrays,
           user_images=True),
    Format("idx", "an IDX images file (train-images-idx3-ubyte[.gz], its labels beside it)", is_idx, read_idx_images),
    Format("image", "an image file (.png, .jpg, ...)", is_image_file, read_image_file, user_images=True),
    Format("folder", "a folder of images (class sub-folders give labels)", is_folder, read_folder, user_images=True),
)


def formats(user_images: bool = False) -> tuple[Format, ...]:
    """The formats, in the order they are tried; with `user_images`, those a user's own images may come in."""
    return tuple(f for f in FORMATS if f.user_images or not user_images)


def find(spec: str, user_images: bool = False) -> Format | None:
    """The format of `spec` (the first of `formats(user_images)` that recognises it), or None."""
    return next((f for f in formats(user_images) if f.recognises(str(spec))), None)


def described(user_images: bool = False) -> str:
    """The formats as a help text lists them: "a, b, or c"."""
    helps = [f.help for f in formats(user_images)]
    return ", ".join(helps[:-1]) + f", or {helps[-1]}" if len(helps) > 1 else helps[0]
