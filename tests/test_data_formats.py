"""The data formats are listed once (data.formats.FORMATS): a format registered there, and
nowhere else, is in every help that names formats, loads as a training set, passes the kind's
check of a data set's name and reads as a user's images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpmkit.cli import command_parser, parser
from ddpmkit.config import DataConfig
from ddpmkit.data import formats
from ddpmkit.data.decode import Stored
from ddpmkit.data.images import load_image_data
from ddpmkit.data.inputs import read_inputs
from ddpmkit.errors import UserError
from ddpmkit.modality import modality_for

FAKE_HELP = "fake:N (N grey 4x4 ramps, a format registered by a test)"


def read_fake(spec: str) -> Stored:
    """fake:N: N grey 4x4 images, image k all of value 10·k, labelled k mod 2."""
    n = int(spec.removeprefix("fake:"))
    images = (np.arange(n, dtype=np.uint8)[:, None, None, None] * 10).repeat(4, 1).repeat(4, 2)  # [N, 4, 4, 1]
    return Stored(images, np.arange(n, dtype=np.int64) % 2, ["even", "odd"], spec)


FAKE = formats.Format("fake", FAKE_HELP, lambda spec: spec.startswith("fake:"), read_fake, user_images=True)


@pytest.fixture
def fake_format(monkeypatch):
    """FAKE in the one list of formats, for this test only."""
    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, FAKE))


def helps() -> dict[str, str]:
    """The help of every option that names data formats: train's and show-forward's --data, edit's --input."""
    p = parser()
    out = {}
    for command, option in (("train", "--data"), ("show-forward", "--data"), ("edit", "--input"), ("score", "--images")):
        action = next(a for a in command_parser(p, command)._actions if option in a.option_strings)
        out[f"{command} {option}"] = action.help
    return out


def test_every_help_that_names_formats_lists_each_of_them():
    for where, text in helps().items():
        taken = formats.formats(user_images=where.endswith(("--input", "--images")))
        assert all(f.help in text for f in taken), where
    assert "moons" in helps()["train --data"] and "moons" not in helps()["show-forward --data"]
    assert "hf:NAME" not in helps()["edit --input"]  # a user's images come only in formats that take them


def test_a_format_registered_once_is_in_the_help_loads_and_reads_as_inputs(fake_format):
    assert all(FAKE_HELP in text for text in helps().values())

    data = load_image_data("fake:5")
    assert data.images_uint8.shape == (5, 1, 4, 4) and data.class_names == ["even", "odd"]
    assert data.images_uint8[3].unique().tolist() == [30] and data.labels.tolist() == [0, 1, 0, 1, 0]
    assert load_image_data("fake:2", image_size=8, channels=3).images_uint8.shape == (2, 3, 8, 8)

    kind = modality_for(DataConfig(name="fake:4"))  # not a toy set: images; the name passes the kind's check
    dataset, resolved = kind.load(seed=0)
    assert len(dataset) == 4 and resolved.image_size == (4, 4) and resolved.channels == 1 and resolved.num_classes == 2

    inputs = read_inputs("fake:3", (4, 4), 1)
    assert torch.equal(inputs.images, data.images_uint8[:3]) and inputs.names == ["fake:3[0]", "fake:3[1]", "fake:3[2]"]


def test_what_no_format_recognises_is_refused_naming_the_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    listed = formats.described()
    with pytest.raises(UserError, match="is a file, not a data set") as info:
        load_image_data(tmp_path / "notes.txt")
    assert listed in str(info.value)
    with pytest.raises(UserError, match="does not exist") as info:
        read_inputs(tmp_path / "missing.png", (8, 8), 1)
    assert formats.described(user_images=True) in str(info.value)
    with pytest.raises(UserError, match="unknown dataset 'fake:3'") as info:
        modality_for("fake:3").load(seed=0)  # not registered here
    assert listed in str(info.value)


def test_formats_are_tried_in_order_and_each_recognises_its_own(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "folder").mkdir()
    assert formats.find("digits").name == "digits" and formats.find("hf:mnist").name == "hf"
    assert formats.find(str(tmp_path / "x.npy")).name == "arrays" and formats.find(str(tmp_path / "folder")).name == "folder"
    assert formats.find("digits", user_images=True) is None  # a word, not the user's own images
    assert formats.find(str(tmp_path / "nothing")) is None
