"""Data-parallel figures per rank (kgen/nn/parallel_stats.py, `kgen stats --world-size`),
against figures worked out by hand for mlp128 (784-128-64-10, float32)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kgen import nn
from kgen.cli import main
from kgen.errors import OptionError
from kgen.nn import parallel_stats
from kgen.nn.parallel_stats import Gradient, buckets, data_parallel_stats

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
    ring = data_parallel_stats(gradients, k, step_launches=6, gradient_launches=5)
    zero = data_parallel_stats(gradients, k, step_launches=6, gradient_launches=5, zero=True)
    assert ring["bytes_sent"] == sent == 2 * (k - 1) * GRADIENT_BYTES // k
    # ZeRO-1: reduce-scatter of the gradients, all-gather of the parameters, (K-1)/K of each
    assert zero["bytes_sent"] == 2 * ((k - 1) * GRADIENT_BYTES // k) == sent
    if k == 1:  # nothing to exchange: the one-process step, updates fused
        assert (ring["collectives"], ring["buckets"], ring["launches"]) == (0, 0, 6) == \
               (zero["collectives"], zero["buckets"], zero["launches"])
    else:  # 437,544 B fill one 25 MiB bucket: one collective (two for ZeRO-1) and one update launch
        assert (ring["buckets"], ring["collectives"], ring["launches"]) == (1, 1, 5 + 1)
        assert (zero["buckets"], zero["collectives"], zero["launches"]) == (1, 2, 5 + 1)


def test_buckets_fill_in_backward_order_up_to_the_cap():
    gradients = mlp128_gradients()
    assert buckets(gradients) == [list(reversed(MLP128))]
    # reversed: 40 + 2,560 + 256 + 32,768 = 35,624 B reach a 32 KiB cap; then 512 + 401,408
    assert buckets(gradients, 32 * 1024) == [["4.bias", "4.weight", "2.bias", "2.weight"], ["0.bias", "0.weight"]]
    assert buckets(gradients, 1024) == [["4.bias", "4.weight"], ["2.bias", "2.weight"], ["0.bias", "0.weight"]]
    stats = data_parallel_stats(gradients, 4, 6, 5, bucket_bytes=32 * 1024)
    assert (stats["buckets"], stats["collectives"], stats["launches"]) == (2, 2, 5 + 2)
    assert stats["bytes_sent"] == 656_316  # bucketing moves no extra bytes
    mixed = [Gradient("a", 100, "float32"), Gradient("b", 100, "float16"), Gradient("c", 100, "float32")]
    assert buckets(mixed, 150) == [["c", "a"], ["b"]]  # a bucket holds one dtype


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None])
def test_a_world_size_that_is_no_positive_integer_is_refused(bad):
    with pytest.raises(OptionError, match=f"world_size: expected a positive integer \\(ranks\\), got {bad!r}"):
        data_parallel_stats(mlp128_gradients(), bad, 6, 5)


def test_the_gradient_function_computes_the_steps_loss_and_every_gradient():
    spec = nn.zoo.get("mlp128")
    x, y = nn.zoo.example_batch(spec, 8)
    nn.manual_seed(0)
    model = spec.model()
    loss_fn = nn.losses.get(spec.loss)
    outputs = parallel_stats.gradient_function(model, loss_fn, x, y)(x, y)
    assert [np.shape(g) for g in outputs[1:]] == [tuple(p.shape) for p in model.parameters()]
    step = nn.train_step(model, loss_fn, spec.optimizer(model.parameters()), x, y)
    np.testing.assert_allclose(float(outputs[0]), float(step(x, y)[0]), rtol=1e-6)  # the same weights, before
    assert all(np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0 for g in outputs[1:])


def test_stats_world_size_beside_the_one_process_figures(capsys):
    assert main(["stats", "mlp128", "--train", "--batch", "16", "--world-size", "4", "--zero", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    ring, zero = stats["data_parallel"]
    assert (ring["zero"], zero["zero"]) == (False, True)
    assert ring["world_size"] == 4 and ring["gradient_bytes"] == GRADIENT_BYTES
    assert ring["bytes_sent"] == zero["bytes_sent"] == 656_316
    assert (ring["collectives"], zero["collectives"]) == (1, 2)
    assert 1 <= ring["gradient_launches"] <= stats["launches"]  # the step's updates fuse into these kernels
    assert ring["launches"] == zero["launches"] == ring["gradient_launches"] + 1

    assert main(["stats", "mlp128", "--train", "--batch", "16", "--world-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "data parallel, world size 1" in out
    assert [line.split()[-3:] for line in out.splitlines() if line.startswith("all-reduce (DDP)")] == \
           [[str(stats["launches"]), "0", "0"]]
