"""CIFAR-10: the binary-format reader (on small files in that format, written here) and the
zoo's cifar-cnn, the Keras CIFAR-10 tutorial network."""
from __future__ import annotations

import numpy as np
import pytest

import kgen
from kgen import nn
from kgen.cli import main

RECORD = 1 + 3 * 32 * 32


def _write(directory, counts=None, seed=0) -> dict:
    """CIFAR-10 binary files with `counts` records each; returns {file: (pixels, labels)}."""
    rng, written = np.random.default_rng(seed), {}
    counts = counts or {**{f"data_batch_{i}.bin": 2 for i in range(1, 6)}, "test_batch.bin": 3}
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in counts.items():
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        (directory / name).write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())
        written[name] = (pixels, labels)
    return written


def test_the_reader_follows_the_binary_format(tmp_path, monkeypatch):
    written = _write(tmp_path / "cifar-10-batches-bin")
    images, labels = nn.data.load_cifar10(tmp_path, "train")  # the unpacked archive's folder is found
    assert images.shape == (10, 3, 32, 32) and images.dtype == np.float32 and labels.dtype == np.int32
    pixels, first_labels = written["data_batch_1.bin"]
    np.testing.assert_array_equal(labels[:2], first_labels)
    red = pixels[0, :1024].reshape(32, 32)  # 1,024 red bytes, row by row, then green, then blue
    np.testing.assert_allclose(images[0, 0], red / 255.0, rtol=1e-6)
    np.testing.assert_allclose(images[0, 2, 31, 31], pixels[0, 3071] / 255.0, rtol=1e-6)
    monkeypatch.setenv("KGEN_DATA", str(tmp_path))
    test_images, test_labels = nn.data.load_cifar10(split="test")
    assert test_images.shape == (3, 3, 32, 32) and len(test_labels) == 3


def test_missing_and_corrupt_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("KGEN_DATA", raising=False)
    with pytest.raises(kgen.KgenError, match="KGEN_DATA is not set"):
        nn.data.load_cifar10()
    with pytest.raises(kgen.KgenError, match="no data_batch_1.bin, .*data_batch_5.bin in .*cifar-10-batches-bin"):
        nn.data.load_cifar10(tmp_path)
    _write(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"\0" * (RECORD + 5))
    with pytest.raises(kgen.KgenError, match="test_batch.bin: expected records of 3073 bytes"):
        nn.data.load_cifar10(tmp_path, "test")
    (tmp_path / "test_batch.bin").write_bytes(bytes([12]) + b"\0" * (RECORD - 1))
    with pytest.raises(kgen.KgenError, match="expected labels 0-9, found 12"):
        nn.data.load_cifar10(tmp_path, "test")
    with pytest.raises(kgen.KgenError, match="split must be one of"):
        nn.data.load_cifar10(tmp_path, "valid")


def test_cifar_cnn_is_the_keras_tutorial_network():
    model = nn.zoo.get("cifar-cnn").model()
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == 1_250_858  # Keras's model.summary() count


def test_the_command_measures_it_without_data_and_trains_it_with(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KGEN_DATA", raising=False)
    assert main(["stats", "cifar-cnn", "--train", "--batch", "2"]) == 0  # shapes only: no data needed
    assert "launches" in capsys.readouterr().out
    assert main(["train", "cifar-cnn", "--epochs", "1"]) != 0
    assert "load_cifar10: no data directory given" in capsys.readouterr().err
    _write(tmp_path)
    monkeypatch.setenv("KGEN_DATA", str(tmp_path))
    assert main(["train", "cifar-cnn", "--epochs", "1", "--batch", "5"]) == 0
    assert "epoch 1/1  loss" in capsys.readouterr().out
