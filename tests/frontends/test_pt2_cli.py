"""`.pt2` files (torch.export.save) as the kgen command's MODEL: check, stats and compile
take them as they take zoo names; train refuses (the file has no data)."""
import json

import pytest
import torch

from kgen.cli import main


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(36, 5))
    path = tmp_path_factory.mktemp("pt2") / "cnn.pt2"
    exported = torch.export.export(model, (torch.randn(4, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("N")},))
    torch.export.save(exported, path)
    return str(path)


def test_stats_and_check(pt2, capsys):
    assert main(["stats", pt2, "--train", "--batch", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["launches"] < result["unfused"]["launches"]
    assert main(["check", pt2, "--batch", "4"]) == 0
    assert "kernels within tolerance" in capsys.readouterr().out


def test_compile(pt2, tmp_path, capsys):
    assert main(["compile", pt2, "--out", str(tmp_path / "a"), "--target", "sm_80", "--batch", "8"]) == 0
    assert (tmp_path / "a" / "manifest.json").exists()


def test_train_refuses_and_a_missing_file_is_named(pt2, tmp_path, capsys):
    assert main(["train", pt2]) != 0
    assert "holds a model but no data" in capsys.readouterr().err
    assert main(["stats", str(tmp_path / "nope.pt2")]) != 0
    assert "nope.pt2: no such file" in capsys.readouterr().err
    (tmp_path / "bad.pt2").write_text("not a zip")
    assert main(["check", str(tmp_path / "bad.pt2")]) != 0
    assert "torch.export.load cannot read it" in capsys.readouterr().err
