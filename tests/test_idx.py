"""The IDX reader and writer, and Fashion-MNIST from IDX files (the real ones when installed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from vijax.data import FASHION_MNIST_DIR, fashion_mnist, read_idx, write_idx

# A 2 × 3 uint8 array written byte by byte, independently of write_idx: magic 00 00, type 08
# (unsigned byte), 2 dimensions, sizes 2 and 3 as big-endian uint32, then the six values.
HAND_WRITTEN = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 250])


def test_reads_a_hand_written_file_plain_and_gzipped(tmp_path):
    plain, packed = tmp_path / "a-idx2-ubyte", tmp_path / "b-idx2-ubyte.gz"
    plain.write_bytes(HAND_WRITTEN)
    packed.write_bytes(gzip.compress(HAND_WRITTEN))
    for path in (plain, packed):
        array = read_idx(path)
        assert array.dtype == np.uint8 and array.shape == (2, 3)
        np.testing.assert_array_equal(array, [[1, 2, 3], [4, 5, 250]])


def test_reads_big_endian_multibyte_types(tmp_path):
    # int16 -2 and 258 as big-endian bytes: FF FE and 01 02
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0xFF, 0xFE, 0x01, 0x02]))
    array = read_idx(path)
    assert array.dtype == np.int16 and array.dtype.isnative
    np.testing.assert_array_equal(array, [-2, 258])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["x-idx3", "x-idx3.gz"])
def test_write_then_read_round_trips(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    write_idx(tmp_path / name, array)
    if name.endswith(".gz"):
        assert (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"
    back = read_idx(tmp_path / name)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (HAND_WRITTEN[:-1], "holds 5 data bytes, but its header declares shape \\(2, 3\\)"),
        (HAND_WRITTEN + b"\x00", "holds 7 data bytes"),
        (b"\x01" + HAND_WRITTEN[1:], "not an IDX file"),
        (bytes([0, 0, 0x07]) + HAND_WRITTEN[3:], "unknown IDX element type 0x07"),
        (HAND_WRITTEN[:6], "truncated inside its header"),
        (b"\x1f\x8bnot gzip at all", "damaged gzip file"),
    ],
)
def test_damaged_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad-file"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert "bad-file" in str(info.value)


def test_write_refuses_types_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="dtype int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="1 to 255 axes"):
        write_idx(tmp_path / "x", np.zeros((), np.uint8))


def _fake_fashion(folder: Path, count: int, image_shape=(28, 28), labels=None) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(count, *image_shape), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=count).astype(np.uint8) if labels is None else labels
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    _fake_fashion(tmp_path, 7)
    images, labels = fashion_mnist("train", data_dir=tmp_path)
    assert images.shape == (7, 28, 28) and images.dtype == np.float32
    assert labels.shape == (7,) and labels.dtype == np.int32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0  # bytes / 255


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist("test", data_dir=tmp_path / "nowhere")


def test_fashion_mnist_refuses_files_of_another_shape(tmp_path):
    _fake_fashion(tmp_path, 3, image_shape=(27, 28))
    with pytest.raises(ValueError, match="not uint8 images of 28 × 28"):
        fashion_mnist("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        fashion_mnist("validation", data_dir=tmp_path)


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist_files():
    train_images, train_labels = fashion_mnist("train")
    test_images, test_labels = fashion_mnist("test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    np.testing.assert_array_equal(np.bincount(np.asarray(train_labels)), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(np.asarray(test_labels)), np.full(10, 1000))
    # the published order: the first training image is an ankle boot (9), and the test set
    # starts ankle boot, pullover, trouser, trouser, shirt
    assert int(train_labels[0]) == 9
    assert np.asarray(test_labels[:5]).tolist() == [9, 2, 1, 1, 6]
    assert float(train_images.min()) == 0.0 and float(train_images.max()) == 1.0
    # mean pixel intensity of the training set, 72.94 / 255 (Xiao et al.'s statistics)
    assert abs(float(train_images.mean()) - 0.2860) < 1e-3
