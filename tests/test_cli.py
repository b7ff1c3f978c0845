"""The kgen command, called through its main(argv)."""
import json

import pytest

from kgen.cli import main


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("linreg", "logreg", "mlp64", "mlp128", "cnn"):
        assert name in out


def test_stats_json_has_the_documented_keys(capsys):
    assert main(["stats", "mlp128", "--train", "--batch", "64", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {"model", "batch", "launches", "bytes", "flops", "unfused"} <= set(stats)
    assert {"launches", "bytes", "flops"} <= set(stats["unfused"])
    assert stats["model"] == "mlp128" and stats["batch"] == 64
    assert stats["launches"] == len(stats["kernels"]) == 6
    assert stats["bytes"] <= stats["unfused"]["bytes"] / 2
    assert stats["unfused"]["launches"] > 3 * stats["launches"]
    assert stats["bytes"] <= 0.5 * stats["unfused"]["bytes"]  # the target, met for mlp128
    # 2*M*N*K per matmul: forward, weight gradients (as many), input gradients (all but the
    # first layer's), plus the elementwise and reduction work
    forward = 2 * 64 * (784 * 128 + 128 * 64 + 64 * 10)
    input_grads = 2 * 64 * (128 * 64 + 64 * 10)
    assert 2 * forward + input_grads <= stats["flops"] <= 2 * forward + input_grads + 2_000_000


def test_stats_table(capsys):
    assert main(["stats", "linreg", "--batch", "32"]) == 0
    out = capsys.readouterr().out
    assert "fused (kgen)" in out and "unfused (one kernel per op)" in out


def test_check_and_train_a_small_model(capsys):
    assert main(["check", "linreg", "--batch", "8"]) == 0
    assert "kernels within tolerance" in capsys.readouterr().out
    assert main(["train", "linreg", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "val_loss" in out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["stats", "resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err
