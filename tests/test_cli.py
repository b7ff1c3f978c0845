"""The kgen command, called through its main(argv)."""
import json
import re

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
    assert main(["train", "linreg", "--epochs", "2", "--batch", "64"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "val_loss" in out
    final = out.strip().splitlines()[-1]
    assert re.fullmatch(r"final: loss \d+\.\d{4}  val_loss \d+\.\d{4}  \(2 epochs, \d+\.\d s\)", final), final
    history = [line for line in out.splitlines() if line.startswith("epoch 2/2")][0]
    assert final.split("  (")[0].removeprefix("final: ") in history  # the last epoch's values


def test_train_prints_accuracy_in_its_final_line(capsys):
    assert main(["train", "logreg", "--epochs", "1", "--batch", "256"]) == 0
    final = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"final: loss [\d.]+  accuracy [\d.]+  val_loss [\d.]+  val_accuracy [\d.]+  "
                        r"\(1 epoch, [\d.]+ s\)", final), final


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["stats", "resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err


# --- what a user meets first: help, lists, refusals -------------------------------------------------
COMMANDS = ("train", "check", "stats", "models", "tune", "compile", "run")
MODEL_COMMANDS = ("train", "check", "stats", "tune", "compile")


def refused(capsys, argv, *expected) -> str:
    """`kgen argv` exits 2 with one line on stderr (no traceback) holding each of `expected`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_the_help_names_the_zoo_without_importing_it():
    from kgen import cli, nn
    assert list(cli.ZOO) == nn.zoo.names(), "kgen/cli.py's ZOO (for help text) must list the zoo's models"


def test_help_has_examples_defaults_and_the_zoo(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "examples:" in top and all(f"\n    {c} " in top for c in COMMANDS) and "mlp32-dropout" in top
    for command in COMMANDS:
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert f"usage: kgen {command}" in text and "examples:\n  kgen " + command in text
        words = " ".join(text.split())  # argparse wraps lines
        if command in MODEL_COMMANDS:
            assert "a zoo model: cifar-cnn, cnn, gru, linreg, logreg, lstm, mlp128, mlp32-dropout, mlp64" in words
        if command not in ("models",):
            assert "(default: " in words
    assert main(["compile", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: sm_80,sm_90)" in text and "(default: 64)" in text


@pytest.mark.parametrize("command", ["tune", "compile"])
def test_lists_are_comma_separated_or_repeated(command):
    from kgen.cli import build_parser
    parse = build_parser().parse_args
    base = [command, "linreg"] + (["--out", "x"] if command == "compile" else [])
    args = parse(base)
    assert args.batch == [64] and args.target == ["sm_80", "sm_90"]
    args = parse(base + ["--batch", "8,64", "--target", "sm_90"])
    assert args.batch == [8, 64] and args.target == ["sm_90"]
    args = parse(base + ["--batch", "8", "--batch", "64,8", "--target", "sm_80", "--target", "sm_90"])
    assert args.batch == [8, 64] and args.target == ["sm_80", "sm_90"]
    assert parse(base).batch == [64]  # the default is not added to


@pytest.mark.parametrize("argv, expected", [
    (["train", "linreg", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["train", "linreg", "--batch", "0"], "argument --batch: expected a positive integer, got '0'"),
    (["train", "linreg", "--batch", "-1"], "argument --batch: expected a positive integer, got '-1'"),
    (["train", "linreg", "--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
    (["check", "linreg", "--batch", "two"], "argument --batch: expected a positive integer, got 'two'"),
    (["stats", "linreg", "--batch", "0"], "argument --batch: expected a positive integer, got '0'"),
    (["compile", "linreg", "--out", "x", "--batch", "8,0"], "argument --batch: expected a comma-separated list, "
                                                            "got '8,0' (batch sizes are positive integers"),
    (["compile", "linreg", "--out", "x", "--batch", "8", "16"], "unrecognized arguments: 16"),
    (["compile", "linreg", "--out", "x", "--target", "sm_80,"], "argument --target: expected a comma-separated "
                                                                "list, got 'sm_80,'"),
    (["compile", "linreg", "--out", "x", "--workers", "0"], "argument --jobs/--workers: expected a positive integer"),
    (["tune", "linreg", "--jobs", "0"], "argument --jobs/--workers: expected a positive integer, got '0'"),
    (["stats", "mlp128", "--train", "--world-size", "0"], "argument --world-size: expected a positive integer, got '0'"),
    (["stats", "mlp128", "--train", "--world-size", "-2"], "argument --world-size: expected a positive integer, "
                                                           "got '-2'"),
    (["stats", "mlp128", "--world-size", "2"], "--world-size 2: data-parallel figures are of the training step; "
                                               "expected --train with it"),
    (["stats", "mlp128", "--train", "--zero"], "--zero: ZeRO-1's figures are of a data-parallel step; expected "
                                               "--world-size K with it"),
    (["compile", "linreg"], "the following arguments are required: --out"),
    (["run", "x", "--steps", "0"], "argument --steps: expected a positive integer, got '0'"),
    (["tune", "linreg", "--batch", "64,-8"], "argument --batch: expected a comma-separated list, got '64,-8'"),
    (["tune", "linreg", "--tier", "slow"], "argument --tier: invalid choice: 'slow'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_options_are_one_line_before_any_work(capsys, argv, expected):
    refused(capsys, argv, expected)


@pytest.mark.parametrize("command", ["train", "check", "stats", "tune"])
def test_an_unknown_model_lists_the_zoo(capsys, command):
    refused(capsys, [command, "resnet"], "unknown model 'resnet': the zoo has cifar-cnn, cnn, gru, linreg")


def test_targets_are_one_list_with_a_reason_per_command(capsys, tmp_path):
    refused(capsys, ["compile", "linreg", "--out", str(tmp_path / "a"), "--target", "sm_90,sm_61"],
            "--target: unknown target 'sm_61': expected one of sm_75, sm_80, sm_86, sm_89, sm_90, sm_100, sm_120")
    refused(capsys, ["tune", "linreg", "--target", "sm_61", "--cache", str(tmp_path)],
            "expected one of sm_80, sm_90 (the GPUs the cost model has facts for)",
            "'sm_61' is no target kgen knows: it compiles for sm_75, sm_80")
    refused(capsys, ["tune", "linreg", "--target", "sm_80,sm_86", "--cache", str(tmp_path)],
            "--target: cannot tune for 'sm_86'", "sm_86 is a compile target, where `kgen compile` uses default")
    assert not (tmp_path / "a").exists() and not any(tmp_path.iterdir())


def test_a_cache_that_is_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    refused(capsys, ["tune", "linreg", "--cache", str(tmp_path / "file")], "--cache: expected a directory, got",
            "a file")
    refused(capsys, ["tune", "linreg", "--cache", str(tmp_path / "file" / "tune")],
            "--cache: expected a directory", "under the file")
    assert (tmp_path / "file").read_text() == "not a directory"
