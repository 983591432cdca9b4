"""Image data loading: every source gives uint8 [C, H, W] images with the expected pixels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ddpmkit.data.images import (
    ImageDataset,
    load_image_data,
    parse_image_size,
    to_model_space,
    to_uint8,
)
from ddpmkit.errors import UserError

S = 8  # side of the images in the mixed folder

# 16-bit grey test values and their 8-bit images: value / 257, rounded.
GREY16 = np.array([0, 257, 257 * 100, 32896, 1000, 65535, 65534, 128], dtype=np.uint16)


# --------------------------------------------------------------------------- helpers


def _solid(mode: str, colour) -> Image.Image:
    return Image.new(mode, (S, S), colour)


def _make_mixed_folder(root):
    """Two class folders ("a", "b") of 8x8 images in many modes, plus junk; returns {name: path}."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    _solid("L", 77).save(root / "a" / "grey.png")
    _solid("RGB", (10, 200, 30)).save(root / "a" / "rgb.png")

    rgba = _solid("RGBA", (0, 255, 0, 255))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red -> white over white
    rgba.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue stays blue
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black -> 255 * (1 - 128/255) = 127
    rgba.save(root / "a" / "rgba.png")

    pal = Image.new("P", (S, S), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 0, S, S // 2))  # top half index 1 (blue), bottom half index 0 (red)
    pal.save(root / "a" / "pal.png")

    grey16 = np.tile(GREY16, (S, 1))  # every row the same 8 values
    img16 = Image.fromarray(grey16)
    assert img16.mode == "I;16"
    img16.save(root / "a" / "grey16.png")

    la = _solid("LA", (50, 255))
    la.putpixel((0, 0), (0, 0))  # transparent black -> white
    la.save(root / "a" / "la.png")

    _solid("RGB", (1, 2, 250)).save(root / "b" / "photo.webp", lossless=True)
    _solid("RGB", (240, 120, 5)).save(root / "b" / "pic.bmp")
    _solid("RGB", (200, 40, 40)).save(root / "b" / "pic.JPG", quality=95)
    (root / "b" / "broken.png").write_bytes(np.random.default_rng(0).bytes(300))
    (root / "b" / "notes.txt").write_text("not an image")

    names = ["a/grey.png", "a/rgb.png", "a/rgba.png", "a/pal.png", "a/grey16.png", "a/la.png",
             "b/photo.webp", "b/pic.bmp", "b/pic.JPG"]  # fmt: skip
    return sorted(names)  # the data set's documented order: sorted relative paths


def _load_quietly(*args, **kwargs) -> ImageDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_image_data(*args, **kwargs)


def _all_items(ds: ImageDataset) -> tuple[torch.Tensor, list[int]]:
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), [y for _, y in items]


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "mixed"
    order = _make_mixed_folder(root)
    return root, order


# --------------------------------------------------------------------------- parse_image_size


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), ("32", (32, 32)), ("32x48", (32, 48)), ("32X48", (32, 48)), (" 16 x 8 ", (16, 8)),
     (32, (32, 32)), ((32, 48), (32, 48)), ([4, 6], (4, 6)), (np.int64(5), (5, 5))],
)  # fmt: skip
def test_parse_image_size(value, expected):
    assert parse_image_size(value) == expected


@pytest.mark.parametrize("value", ["0", "-3", "32x", "x32", "axb", "32x48x3", "3.5", "", 0, -1, (0, 3), (3,), True, 3.5])
def test_parse_image_size_rejects(value):
    with pytest.raises(UserError, match="HEIGHTxWIDTH"):
        parse_image_size(value)


# --------------------------------------------------------------------------- value space


def test_uint8_round_trip_is_exact():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = to_model_space(u)
    assert x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.equal(to_uint8(x), u)


def test_to_uint8_clamps():
    assert to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 7.0])).tolist() == [0, 0, 128, 255, 255]


# --------------------------------------------------------------------------- digits


def test_digits():
    from sklearn.datasets import load_digits

    ds = load_image_data("digits")
    raw = load_digits()
    assert len(ds) == 1797 and ds.channels == 1 and ds.image_size == (8, 8)
    assert ds.images_uint8.shape == (1797, 1, 8, 8) and ds.images_uint8.dtype == torch.uint8
    assert ds.images_uint8.min() == 0 and ds.images_uint8.max() == 255
    expected = torch.from_numpy(np.rint(raw.images * 255 / 16).astype(np.uint8))
    assert torch.equal(ds.images_uint8[:, 0], expected)
    assert ds.num_classes == 10 and ds.class_names == [str(k) for k in range(10)]
    assert ds.labels.dtype == torch.long and torch.equal(ds.labels, torch.from_numpy(raw.target).long())
    image, label = ds[5]
    assert image.shape == (1, 8, 8) and label == int(raw.target[5])


def test_digits_channels_and_size():
    rgb = load_image_data("digits", channels=3)
    assert rgb.images_uint8.shape == (1797, 3, 8, 8)
    assert torch.equal(rgb.images_uint8[:, 1], rgb.images_uint8[:, 0])
    assert torch.equal(rgb.images_uint8[:, 2], rgb.images_uint8[:, 0])
    big = load_image_data("digits", image_size="16x12")
    assert big.images_uint8.shape == (1797, 1, 16, 12) and big.image_size == (16, 12)


def test_batched_fetch_matches_items():
    ds = load_image_data("digits")
    idx = [3, 0, 1796, 3]
    pairs = ds.__getitems__(idx)
    assert [y for _, y in pairs] == [ds[i][1] for i in idx]
    assert all(torch.equal(x, ds[i][0]) for (x, _), i in zip(pairs, idx))
    x, y = next(iter(DataLoader(ds, batch_sampler=[idx])))  # default collate over __getitems__
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.uint8 and y.tolist() == [ds[i][1] for i in idx]
    bx, by = ds.batch(idx)
    assert torch.equal(bx, x) and torch.equal(by, y)


# --------------------------------------------------------------------------- folders


def test_folder_mixed_modes(mixed):
    root, order = mixed
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\).*broken\.png"):
        ds = load_image_data(str(root))
    assert len(ds) == 9
    assert ds.channels == 3 and ds.image_size == (S, S)  # colour present -> 3; all 8x8 -> inferred
    assert ds.images_uint8.shape == (9, 3, S, S) and ds.images_uint8.dtype == torch.uint8
    assert ds.class_names == ["a", "b"] and ds.num_classes == 2
    assert ds.labels.dtype == torch.long
    assert ds.labels.tolist() == [0 if name.startswith("a/") else 1 for name in order]
    img = {name: ds.images_uint8[k] for k, name in enumerate(order)}

    # 16-bit grey: value / 257, rounded, in all three channels.
    expected16 = torch.from_numpy(np.rint(GREY16 / 257).astype(np.uint8))
    for c in range(3):
        assert torch.equal(img["a/grey16.png"][c], expected16.expand(S, S))
    assert (img["a/grey.png"] == 77).all()

    # Transparency composites over white.
    rgba = img["a/rgba.png"]
    assert rgba[:, 0, 0].tolist() == [255, 255, 255]
    assert rgba[:, 0, 1].tolist() == [0, 0, 255]
    assert rgba[:, 0, 2].tolist() == [127, 127, 127]
    assert rgba[:, 4, 4].tolist() == [0, 255, 0]
    assert img["a/la.png"][:, 0, 0].tolist() == [255, 255, 255]
    assert img["a/la.png"][:, 4, 4].tolist() == [50, 50, 50]

    # Palette, lossless WebP and BMP exactly; JPEG within compression error.
    assert img["a/pal.png"][:, 0, 0].tolist() == [0, 0, 255] and img["a/pal.png"][:, -1, 0].tolist() == [255, 0, 0]
    assert (img["b/photo.webp"] == torch.tensor([1, 2, 250], dtype=torch.uint8)[:, None, None]).all()
    assert (img["b/pic.bmp"] == torch.tensor([240, 120, 5], dtype=torch.uint8)[:, None, None]).all()
    jpg_error = img["b/pic.JPG"].int() - torch.tensor([200, 40, 40])[:, None, None]
    assert jpg_error.abs().max() <= 8


def test_folder_grey_and_alpha_channels(mixed):
    root, order = mixed
    grey = _load_quietly(str(root), channels=1)
    assert grey.images_uint8.shape == (9, 1, S, S)
    g = {name: grey.images_uint8[k, 0] for k, name in enumerate(order)}
    assert g["a/rgba.png"][0, 0] == 255  # transparent -> white
    assert g["a/rgb.png"][0, 0] == round((10 * 299 + 200 * 587 + 30 * 114) / 1000)  # ITU-R 601-2 luminance
    assert torch.equal(g["a/grey16.png"][0], torch.from_numpy(np.rint(GREY16 / 257).astype(np.uint8)))

    rgba = _load_quietly(str(root), channels=4)
    assert rgba.channels == 4 and rgba.images_uint8.shape == (9, 4, S, S)
    a = {name: rgba.images_uint8[k] for k, name in enumerate(order)}
    assert a["a/rgba.png"][:, 0, 0].tolist() == [255, 0, 0, 0]  # straight alpha kept as stored
    assert a["a/rgba.png"][:, 0, 2].tolist() == [0, 0, 0, 128]
    assert a["a/la.png"][:, 4, 4].tolist() == [50, 50, 50, 255]
    assert (a["a/grey.png"][3] == 255).all() and (a["b/pic.bmp"][3] == 255).all()  # opaque where no alpha


def test_folder_all_grey_defaults_to_one_channel(tmp_path):
    for k in range(3):
        Image.new("L", (S, S), 10 * k).save(tmp_path / f"{k}.png")
    Image.fromarray(np.full((S, S), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    ds = load_image_data(str(tmp_path))
    assert ds.channels == 1 and ds.images_uint8.shape == (4, 1, S, S)
    assert ds.labels is None and ds.num_classes == 0 and ds.class_names == []
    assert ds[0][1] == -1
    assert (ds.images_uint8[3] == 255).all()  # 65535 -> 255, not clipped garbage


def test_folder_unlabelled_when_an_image_lies_at_the_root(mixed):
    root, _ = mixed
    Image.new("RGB", (S, S)).save(root / "loose.png")
    ds = _load_quietly(str(root))
    assert len(ds) == 10 and ds.labels is None and ds.num_classes == 0
    assert {ds[i][1] for i in range(len(ds))} == {-1}


def test_skipped_files_go_to_report_when_given(mixed):
    root, _ = mixed
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the one line went to report
        ds = load_image_data(str(root), report=lines.append)
    assert len(ds) == 9 and len(lines) == 1
    assert lines[0].startswith("skipped 1 unreadable image file(s) in ") and lines[0].endswith("broken.png")


def test_lazy_path_equals_preloaded(mixed):
    root, _ = mixed
    pre = _load_quietly(str(root))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        lazy = load_image_data(str(root), preload_limit_bytes=0)
    assert lazy.images_uint8 is None and pre.images_uint8 is not None
    assert (len(lazy), lazy.channels, lazy.image_size, lazy.class_names) == (9, 3, (S, S), ["a", "b"])
    assert torch.equal(lazy.labels, pre.labels)
    x_lazy, y_lazy = _all_items(lazy)
    assert torch.equal(x_lazy, pre.images_uint8)
    assert y_lazy == pre.labels.tolist()
    bx, by = lazy.batch([8, 0])
    assert torch.equal(bx, pre.images_uint8[[8, 0]]) and torch.equal(by, pre.labels[[8, 0]])


def test_lazy_file_that_breaks_later_raises_user_error(tmp_path):
    for k in range(2):
        Image.new("L", (S, S), k).save(tmp_path / f"{k}.png")
    ds = load_image_data(str(tmp_path), preload_limit_bytes=0)
    (tmp_path / "1.png").write_bytes(b"garbage")
    assert ds[0][0].shape == (1, S, S)
    with pytest.raises(UserError, match=r"cannot read image 1\.png"):
        ds[1]

    # through a loader worker process the error arrives wrapped in its traceback; the CLI
    # prints the error's own line only
    from ddpmkit.cli import one_line
    from ddpmkit.data import batches

    with pytest.raises(UserError) as info:
        for _ in range(2):
            next(batches(ds, 2, seed=0, num_workers=1))
    assert "Traceback" in str(info.value)
    line = one_line(str(info.value))
    assert "\n" not in line and line.startswith("cannot read image 1.png") and line.endswith("continue with --resume (the last checkpoint is intact)")


def test_centre_crop_without_resampling(tmp_path):
    wide = np.zeros((12, 24, 3), dtype=np.uint8)  # H=12, W=24: red | green | blue columns
    wide[:, :6] = (255, 0, 0)
    wide[:, 6:18] = (0, 255, 0)
    wide[:, 18:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    ds = load_image_data(str(tmp_path), image_size=12)
    assert ds.images_uint8.shape == (1, 3, 12, 12)
    assert torch.equal(ds.images_uint8[0], torch.from_numpy(wide[:, 6:18]).permute(2, 0, 1))


def test_cover_resize_and_non_square_crop(tmp_path):
    wide = np.zeros((24, 48, 3), dtype=np.uint8)  # left and right quarters differ from the middle
    wide[:, :12] = (255, 0, 0)
    wide[:, 12:36] = (0, 255, 0)
    wide[:, 36:] = (0, 0, 255)
    (tmp_path / "w").mkdir()
    Image.fromarray(wide).save(tmp_path / "w" / "wide.png")
    out = load_image_data(str(tmp_path / "w"), image_size=6).images_uint8[0].int()  # scale 1/4, keep the middle
    assert out.shape == (3, 6, 6)
    assert (out[1] >= 225).all() and (out[0] <= 30).all() and (out[2] <= 30).all()

    tall = np.zeros((24, 24, 3), dtype=np.uint8)  # top / middle / bottom bands
    tall[:6] = (255, 0, 0)
    tall[6:18] = (0, 255, 0)
    tall[18:] = (0, 0, 255)
    (tmp_path / "t").mkdir()
    Image.fromarray(tall).save(tmp_path / "t" / "tall.png")
    out = load_image_data(str(tmp_path / "t"), image_size="6x12").images_uint8[0].int()  # H=6, W=12
    assert out.shape == (3, 6, 12)
    assert (out[1] >= 225).all() and (out[0] <= 30).all() and (out[2] <= 30).all()


def test_folder_of_different_sizes_needs_image_size(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "small.png")
    Image.new("RGB", (16, 12)).save(tmp_path / "big.png")
    with pytest.raises(UserError, match="--image-size"):
        load_image_data(str(tmp_path))
    ds = load_image_data(str(tmp_path), image_size=4)
    assert ds.images_uint8.shape == (2, 3, 4, 4)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="not an existing folder or file"):
        load_image_data(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(UserError, match=r"no images found.*\.png"):
        load_image_data(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    Image.new("RGB", (S, S)).save(bad / "y.png")
    (bad / "y.png").write_bytes((bad / "y.png").read_bytes()[:40])  # truncated
    with pytest.raises(UserError, match=r"no readable images.*all 2 image files"):
        load_image_data(str(bad))


def test_unknown_specs_and_options(tmp_path):
    with pytest.raises(UserError, match=r"not an existing folder or file; pass digits .*hf:NAME.*\.npy/\.npz.*IDX images file.*an image file.*a folder of images"):
        load_image_data("no-such-dataset")
    Image.new("L", (S, S)).save(tmp_path / "one.png")
    (tmp_path / "notes.txt").write_text("not images")
    with pytest.raises(UserError, match="is a file, not a data set"):
        load_image_data(str(tmp_path / "notes.txt"))
    with pytest.raises(UserError, match="channel"):
        load_image_data("digits", channels=5)


# --------------------------------------------------------------------------- arrays


def test_npy_uint8(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "x.npy", arr)
    ds = load_image_data(str(tmp_path / "x.npy"))
    assert ds.images_uint8.shape == (5, 1, 6, 7) and ds.image_size == (6, 7) and ds.channels == 1
    assert torch.equal(ds.images_uint8[:, 0], torch.from_numpy(arr))
    assert ds.labels is None and ds[0][1] == -1
    assert load_image_data(str(tmp_path / "x.npy"), image_size=3).images_uint8.shape == (5, 1, 3, 3)


def test_npz_float_with_labels(tmp_path):
    rng = np.random.default_rng(1)
    unit = rng.random((4, 5, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=unit, labels=np.array([0, 2, 2, 1]))
    ds = load_image_data(str(tmp_path / "d.npz"))
    assert ds.images_uint8.shape == (4, 3, 5, 5)
    expected = torch.from_numpy(np.rint(unit * 255).astype(np.uint8)).permute(0, 3, 1, 2)
    assert torch.equal(ds.images_uint8, expected)
    assert ds.labels.tolist() == [0, 2, 2, 1] and ds.num_classes == 3 and ds[1][1] == 2

    signed = unit * 2 - 1  # [-1, 1] under "x", labels under "y", channels-first
    np.savez(tmp_path / "s.npz", x=signed.transpose(0, 3, 1, 2), y=np.array([1, 1, 0, 0]))
    ds = load_image_data(str(tmp_path / "s.npz"))
    assert torch.equal(ds.images_uint8, to_uint8(torch.from_numpy(signed).permute(0, 3, 1, 2)))
    assert ds.num_classes == 2 and ds.labels.tolist() == [1, 1, 0, 0]


def test_array_errors(tmp_path):
    np.save(tmp_path / "far.npy", np.linspace(-2, 3, 2 * 4 * 4).reshape(2, 4, 4))
    with pytest.raises(UserError, match=r"\[0, 1\] or \[-1, 1\]"):
        load_image_data(str(tmp_path / "far.npy"))
    np.savez(tmp_path / "lab.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(UserError, match="labels"):
        load_image_data(str(tmp_path / "lab.npz"))
    np.save(tmp_path / "flat.npy", np.zeros((3, 4), np.uint8))
    with pytest.raises(UserError, match=r"\(N, H, W\)"):
        load_image_data(str(tmp_path / "flat.npy"))


# --------------------------------------------------------------------------- Hugging Face (local only)


def test_hf_imagefolder_offline(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    root = tmp_path / "hf"
    for name, value in (("cat", 30), ("dog", 200)):
        (root / name).mkdir(parents=True)
        for k in range(2):
            Image.new("L", (S, S), value + k).save(root / name / f"{k}.png")
    ds = load_image_data(f"hf:imagefolder:{root}", image_size=4)
    assert len(ds) == 4 and ds.channels == 1 and ds.image_size == (4, 4)
    assert ds.class_names == ["cat", "dog"]
    for i in range(4):
        image, label = ds[i]
        assert image.shape == (1, 4, 4) and int(image[0, 0, 0]) in ((30, 31) if label == 0 else (200, 201))


def test_a_subset_of_lazy_data_reads_the_same_images_and_labels(mixed):
    """(What a held-out split of a folder too large to preload takes.)"""
    root, _ = mixed
    pre = _load_quietly(str(root))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable"):
        lazy = load_image_data(str(root), preload_limit_bytes=0)
    rows = [8, 2, 5]
    part = lazy.subset(rows)
    assert part.images_uint8 is None and len(part) == 3 and part.class_names == lazy.class_names
    assert torch.equal(torch.stack([part[i][0] for i in range(3)]), pre.images_uint8[rows])
    assert torch.equal(part.labels, pre.labels[rows])
    in_memory = pre.subset(rows)
    assert torch.equal(in_memory.images_uint8, pre.images_uint8[rows]) and torch.equal(in_memory.labels, pre.labels[rows])


def test_a_folder_like_kaggles_petimages_cat_skips_its_broken_files_with_a_count(tmp_path):
    """PetImages/Cat holds a few unreadable JPEGs (empty, truncated, not an image at all) and a
    Thumbs.db: the readable images load, the broken ones are counted and the first named in one
    line, and Thumbs.db is not an image file at all."""
    cat = tmp_path / "PetImages" / "Cat"
    cat.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(cat / f"{i}.jpg", quality=90)
    (cat / "666.jpg").write_bytes(b"")  # empty, as Cat/666.jpg is
    whole = (cat / "0.jpg").read_bytes()
    (cat / "10125.jpg").write_bytes(whole[: len(whole) // 2])  # truncated: the header reads, the pixels do not
    (cat / "10501.jpg").write_bytes(b"GIF89a not really")  # not a JPEG inside
    (cat / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    lines = []
    ds = load_image_data(str(cat), image_size=16, report=lines.append)
    assert (len(ds), ds.channels, ds.image_size) == (5, 3, (16, 16))
    assert len(lines) == 1 and lines[0].startswith("skipped 3 unreadable image file(s) in ")
    assert all(name in lines[0] for name in ("666.jpg", "10125.jpg", "10501.jpg")) and "Thumbs.db" not in lines[0]


def test_one_image_file_is_a_data_set_of_one(tmp_path):
    picture = np.random.default_rng(3).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "photo.png")
    ds = load_image_data(str(tmp_path / "photo.png"))
    assert len(ds) == 1 and ds.image_size == (12, 10) and ds.labels is None
    np.testing.assert_array_equal(ds[0][0].permute(1, 2, 0).numpy(), picture)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match="no readable images in .*empty.png"):
        load_image_data(str(tmp_path / "empty.png"))
