"""Data-parallel figures per rank (kgen/nn/parallel_stats.py, `kgen stats --world-size`),
against figures worked out by hand for mlp128 (784-128-64-10, float32), and against the
launches and buckets of kgen.nn.distributed.DataParallelStep built here without a process
group (the steps' programs do not depend on one)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kgen
from kgen import nn
from kgen.cli import main
from kgen.errors import OptionError
from kgen.nn import parallel_stats
from kgen.nn.distributed import DataParallelStep
from kgen.nn.parallel_stats import data_parallel_stats

# mlp128's parameters, as Sequential names them (ReLUs at 1 and 3), float32
MLP128 = {"0.weight": 784 * 128, "0.bias": 128, "2.weight": 128 * 64, "2.bias": 64, "4.weight": 64 * 10, "4.bias": 10}
GRADIENT_BYTES = 4 * (784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10)  # 437,544


def mlp128_gradients():
    nn.manual_seed(0)
    return parallel_stats.gradients_of(nn.zoo.get("mlp128").model())


def test_gradients_are_the_parameters_sizes():
    gradients = mlp128_gradients()
    assert [(g.name, g.bytes, g.dtype) for g in gradients] == [(n, 4 * c, "float32") for n, c in MLP128.items()]
    assert sum(g.bytes for g in gradients) == GRADIENT_BYTES == 437_544


@pytest.mark.parametrize("k, sent", [(1, 0), (2, 437_544), (4, 656_316)])
def test_bytes_sent_per_rank_by_ring_all_reduce_and_zero_1(k, sent):
    gradients = mlp128_gradients()
    ring = data_parallel_stats(gradients, k, step_launches=6, launches=[5, 1], buckets=1)
    zero = data_parallel_stats(gradients, k, step_launches=6, launches=[5, 1], buckets=1, zero=True)
    assert ring["bytes_sent"] == sent == 2 * (k - 1) * GRADIENT_BYTES // k
    # ZeRO-1: reduce-scatter of the gradients, all-gather of the parameters, (K-1)/K of each
    assert zero["bytes_sent"] == 2 * ((k - 1) * GRADIENT_BYTES // k) == sent
    if k == 1:  # nothing to exchange: the one-process step, updates fused
        assert (ring["collectives"], ring["buckets"], ring["launches"]) == (0, 0, 6) == \
               (zero["collectives"], zero["buckets"], zero["launches"])
    else:  # one bucket: one collective (two for ZeRO-1) and its update launch
        assert (ring["buckets"], ring["collectives"], ring["launches"]) == (1, 1, 5 + 1)
        assert (zero["buckets"], zero["collectives"], zero["launches"]) == (1, 2, 5 + 1)


def built_step(name: str, shard: bool, batch: int = 8, bucket_bytes: int = None):
    """Zoo model `name`'s DataParallelStep, its graph written here as a user would, no group."""
    spec = nn.zoo.get(name)
    x, y = nn.zoo.example_batch(spec, batch)
    nn.manual_seed(0)
    model = spec.model()
    xs, ys = kgen.tensor("x", ("N",) + tuple(x.shape[1:]), "float32"), kgen.tensor("y", ("N",), "int32")
    loss = nn.losses.get(spec.loss)(model(xs), ys)
    return DataParallelStep([xs, ys], loss, [loss], spec.optimizer(model.parameters()), model.state_updates(),
                            None, shard, bucket_bytes)


# a 32 KiB cap: 0.weight (401,408 B) and 2.weight (32,768 B) each fill a bucket alone, the
# four others (3,368 B) one or more; a 1-byte cap: a gradient a bucket
@pytest.mark.parametrize("cap, least, most", [(32 * 1024, 3, 6), (1, 6, 6)])
def test_buckets_are_the_data_parallel_steps(cap, least, most):
    nn.manual_seed(0)
    spec = nn.zoo.get("mlp128")
    model = spec.model()
    x, y = nn.zoo.example_batch(spec, 8)
    loss = nn.losses.get(spec.loss)
    names = [name for name, _ in model.named_parameters()]
    sizes = {name: 4 * count for name, count in MLP128.items()}
    step = nn.train.data_parallel_step(model, loss, spec.optimizer(model.parameters()), x, y, bucket_bytes=cap)
    members = [[names[i] for i in b.members] for b in step.buckets]
    assert sorted(n for bucket in members for n in bucket) == sorted(names)  # each gradient once
    assert all(len(bucket) == 1 or sum(sizes[n] for n in bucket) <= cap for bucket in members)
    assert ["0.weight"] in members and ["2.weight"] in members and least <= len(members) <= most
    stats, = parallel_stats.figures(model, loss, spec.optimizer, x, y, 4, 6, {"N": 8}, bucket_bytes=cap)
    assert (stats["buckets"], stats["collectives"]) == (len(members), len(members))
    # SGD with momentum updates a bucket in one launch (its velocity and weights in one kernel)
    assert stats["update_launches"] == len(members)
    assert stats["bytes_sent"] == 656_316  # bucketing moves no extra bytes


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None])
def test_a_world_size_that_is_no_positive_integer_is_refused(bad):
    with pytest.raises(OptionError, match=f"world_size: expected a positive integer \\(ranks\\), got {bad!r}"):
        data_parallel_stats(mlp128_gradients(), bad, 6, [5, 1], 1)


def test_the_gradient_program_computes_the_steps_loss_and_every_gradient():
    spec = nn.zoo.get("mlp128")
    x, y = nn.zoo.example_batch(spec, 8)
    nn.manual_seed(0)
    model = spec.model()
    twin = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 10), torch.nn.LogSoftmax(dim=1))
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    loss_fn = nn.losses.get(spec.loss)
    step = nn.train.data_parallel_step(model, loss_fn, spec.optimizer(model.parameters()), x, y)
    # inputs x, y and this rank's samples n; outputs the loss and the gradients of loss * n
    outputs = step.gradients(x, y, np.float32(len(x)))
    want = torch.nn.functional.nll_loss(twin(torch.from_numpy(np.asarray(x, np.float32))),
                                        torch.from_numpy(np.asarray(y, np.int64)))
    want.backward()
    np.testing.assert_allclose(float(outputs[0]), want.item(), rtol=1e-5)
    for g, p in zip(outputs[1:], twin.parameters()):
        np.testing.assert_allclose(np.asarray(g) / len(x), p.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_stats_world_size_beside_the_one_process_figures(capsys):
    assert main(["stats", "mlp128", "--train", "--batch", "16", "--world-size", "4", "--zero", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    ring, zero = stats["data_parallel"]
    assert (ring["zero"], zero["zero"]) == (False, True)
    assert ring["world_size"] == 4 and ring["gradient_bytes"] == GRADIENT_BYTES
    assert ring["bytes_sent"] == zero["bytes_sent"] == 656_316
    assert (ring["collectives"], zero["collectives"]) == (1, 2)
    assert 1 <= ring["gradient_launches"] <= stats["launches"]  # the step's updates fuse into these kernels
    assert ring["launches"] == zero["launches"] == ring["gradient_launches"] + 1  # SGD: one update launch

    assert main(["stats", "mlp128", "--train", "--batch", "16", "--world-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "data parallel, world size 1" in out
    assert [line.split()[-3:] for line in out.splitlines() if line.startswith("all-reduce (DDP)")] == \
           [[str(stats["launches"]), "0", "0"]]


@pytest.mark.parametrize("name, per_bucket", [("mlp128", 1), ("cnn", 2)])
def test_stats_launches_are_the_data_parallel_steps(capsys, name, per_bucket):
    """mlp128's SGD with momentum updates a bucket in one launch; cnn's Adam in two (its new
    first moment is written by one kernel and read by the other)."""
    assert main(["stats", name, "--train", "--batch", "8", "--world-size", "2", "--zero", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["data_parallel"]
    for row in rows:
        step = built_step(name, row["zero"])
        gradient, *updates = [len(p.kernels) for p in step.programs]
        assert updates == [per_bucket] * len(step.buckets)
        assert (row["gradient_launches"], row["update_launches"], row["launches"]) == \
               (gradient, sum(updates), gradient + sum(updates))
        assert (row["buckets"], row["collectives"]) == (len(step.buckets), len(step.buckets) * (2 if row["zero"] else 1))
