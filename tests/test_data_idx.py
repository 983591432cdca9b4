"""data.idx and the Keras .npz layout: MNIST / Fashion-MNIST read directly from their original
files, which the tests write in exactly those formats (IDX: big-endian magic 0x00000803 /
0x00000801 and dimensions, gzipped or not; Keras: x_train, y_train, x_test, y_test)."""

import gzip
import struct

import numpy as np
import pytest

from ddpmkit.data.idx import FASHION_CLASSES, IMAGES_MAGIC, LABELS_MAGIC, is_idx, labels_path, magic, read_idx
from ddpmkit.data.images import load_image_data
from ddpmkit.errors import UserError


def write_idx(path, array: np.ndarray, magic_number: int, gz: bool) -> None:
    """An IDX file as LeCun's: the magic number and each dimension as big-endian uint32, then the bytes."""
    payload = struct.pack(">I", magic_number) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(payload)


def mnist_files(folder, n=6, gz_images=True, gz_labels=True, prefix="train"):
    """A tiny MNIST-like pair under the standard names; returns (images path, images, labels)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{prefix}-images-idx3-ubyte" + (".gz" if gz_images else ""))
    write_idx(path, images, IMAGES_MAGIC, gz_images)
    write_idx(folder / (f"{prefix}-labels-idx1-ubyte" + (".gz" if gz_labels else "")), labels, LABELS_MAGIC, gz_labels)
    return path, images, labels


@pytest.mark.parametrize("gz_images, gz_labels", [(True, True), (False, False), (True, False)])
def test_idx_images_and_their_labels_beside_them_read_back_exactly(tmp_path, gz_images, gz_labels):
    path, images, labels = mnist_files(tmp_path / "mnist", gz_images=gz_images, gz_labels=gz_labels)
    assert magic(path) == IMAGES_MAGIC and is_idx(path)
    assert labels_path(path).name.startswith("train-labels-idx1-ubyte")
    ds = load_image_data(path)
    assert (len(ds), ds.channels, ds.image_size, ds.num_classes) == (6, 1, (28, 28), int(labels.max()) + 1)
    np.testing.assert_array_equal(ds.images_uint8[:, 0].numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)


def test_the_test_split_and_fashion_names(tmp_path):
    path, _, labels = mnist_files(tmp_path / "fashion-mnist", prefix="t10k", gz_labels=False)
    ds = load_image_data(path)
    assert ds.class_names == list(FASHION_CLASSES) and ds.labels.tolist() == labels.tolist()


def test_an_idx_file_is_known_by_its_magic_number_under_any_name(tmp_path):
    write_idx(tmp_path / "pictures.bin", np.zeros((2, 4, 4), np.uint8), IMAGES_MAGIC, gz=True)
    write_idx(tmp_path / "labels.bin", np.zeros(2, np.uint8), LABELS_MAGIC, gz=False)
    assert is_idx(tmp_path / "pictures.bin") and not is_idx(tmp_path / "labels.bin")
    assert magic(tmp_path / "labels.bin") == LABELS_MAGIC
    ds = load_image_data(tmp_path / "pictures.bin")  # no labels file under a standard name: unlabelled
    assert len(ds) == 2 and ds.labels is None and ds.image_size == (4, 4)


def test_broken_idx_files_are_one_line_errors(tmp_path):
    path, _, _ = mnist_files(tmp_path / "a", gz_images=False)
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(UserError, match=r"truncated: its header promises 4,704 bytes"):
        load_image_data(path)
    bad = tmp_path / "b" / "train-images-idx3-ubyte"
    bad.parent.mkdir()
    bad.write_bytes(struct.pack(">I", 0x00000D03) + b"\0" * 20)  # float elements: not MNIST's bytes
    with pytest.raises(UserError, match="not an IDX file of unsigned bytes: its magic number is 0x00000d03"):
        read_idx(bad)
    path, _, _ = mnist_files(tmp_path / "c")
    write_idx(labels_path(path), np.zeros(5, np.uint8), LABELS_MAGIC, gz=True)  # 5 labels for 6 images
    with pytest.raises(UserError, match="labels of shape .*5.* but .* has 6 images"):
        load_image_data(path)


def test_keras_npz_reads_the_training_split_with_its_labels(tmp_path):
    rng = np.random.default_rng(2)
    x_train, x_test = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y_train, y_test = np.array([3, 1, 4, 1, 5], np.uint8), np.array([9, 2, 6], np.uint8)
    for name in ("mnist.npz", "fashion-mnist.npz"):
        np.savez(tmp_path / name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        ds = load_image_data(tmp_path / name)
        assert (len(ds), ds.channels, ds.image_size) == (5, 1, (28, 28))
        np.testing.assert_array_equal(ds.images_uint8[:, 0].numpy(), x_train)
        assert ds.labels.tolist() == y_train.tolist()
    assert ds.class_names == list(FASHION_CLASSES)  # the fashion file names its classes
    assert load_image_data(tmp_path / "mnist.npz").class_names == [str(k) for k in range(6)]
