"""Data-parallel training on torch.distributed (kgen.nn.distributed): two gloo processes on
loopback at batch 32 each train as one process at batch 64 does, with and without the sharded
optimizer (ZeRO-1, each rank holding its share of the optimizer state); a one-process
checkpoint resumes in a sharded run; fit under two processes gives one process's history and writes files on
rank 0 only; a checkpoint of a two-process run loads into a one-process model; a rank that
fails makes the other fail with a DistributedError instead of hanging; `kgen train --nproc 2`
trains as one process at twice the batch; compile refuses fp16's loss scaling under two ranks
(one rank trains fp16 with it, as one process). All the two-process runs share one group
(dist_helpers.everything), as starting processes is most of their cost."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from kgen import nn
from kgen.errors import OptionError
from kgen.nn import checkpoint

import dist_helpers
from dist_helpers import OPTIMIZERS, run_ranks
from nn_helpers import small_mlp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOAT32 = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dist")
    checkpoint = str(directory / "one-process.safetensors")  # what a sharded two-process run resumes from
    dist_helpers.train_steps(0, 1, "adam", False, stop=dist_helpers.RESUME_AT, save=checkpoint)
    results = run_ranks(dist_helpers.everything, 2, str(directory), checkpoint)
    for rank, result in enumerate(results):
        assert isinstance(result, dict), f"rank {rank} failed: {result!r}"
    return results


_ONE_PROCESS = {}


def one_process(run, optimizer: str, *args) -> dict:
    """The one-process run to compare with, once per module."""
    key = (run.__name__, optimizer)
    if key not in _ONE_PROCESS:
        _ONE_PROCESS[key] = run(0, 1, optimizer, False, *args)
    return _ONE_PROCESS[key]


def _assert_close(got: dict, want: dict, what: str):
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], **FLOAT32, err_msg=f"{what}: {name}")


def _assert_pieces(run: dict, want: dict, what: str):
    """A sharded run's rank holds pieces of the optimizer state (its elements of each
    parameter's state): they must be those elements of the one-process run's state."""
    model = small_mlp(0)
    names = [name for name, _ in model.named_parameters()]
    assert run["pieces"]
    for attr, i, start, stop, values in run["pieces"]:
        whole = want[f"optimizer.{names[i]}.{checkpoint.TORCH_STATE_NAMES[attr]}"].reshape(-1)
        np.testing.assert_allclose(values, whole[start:stop], **FLOAT32, err_msg=f"{what}: {attr} of {names[i]}")


@pytest.mark.parametrize("shard", [False, True], ids=["all-reduce", "zero1"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_two_ranks_at_32_train_as_one_process_at_64(two_ranks, optimizer, shard):
    one = one_process(dist_helpers.train_steps, optimizer)
    for rank, result in enumerate(two_ranks):
        run = result["steps", optimizer, shard]
        _assert_close(run["state"], one["state"], f"rank {rank}'s parameters")
        if shard and rank:  # its pieces; gather_state gathered the whole state on rank 0
            assert run["optimizer"] is None
            _assert_pieces(run, one["optimizer"], f"rank {rank}'s optimizer state")
        else:
            _assert_close(run["optimizer"], one["optimizer"], f"rank {rank}'s optimizer state")
        np.testing.assert_allclose(run["losses"], one["losses"], **FLOAT32)
    for name, value in two_ranks[0]["steps", optimizer, shard]["state"].items():  # the ranks agree exactly
        np.testing.assert_array_equal(two_ranks[1]["steps", optimizer, shard]["state"][name], value)


@pytest.mark.parametrize("shard", [False, True], ids=["all-reduce", "zero1"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_each_bucket_is_updated_in_its_own_launches(two_ranks, optimizer, shard):
    run = two_ranks[0]["steps", optimizer, shard]
    one = one_process(dist_helpers.train_steps, optimizer)
    gradients, *updates = run["launches"]
    assert gradients == one["launches"][0]  # for this MLP, as many as the fused single-process step
    # 64-byte buckets: the MLP's 53 parameters (212 bytes) in four, each updated as soon as it is
    # reduced; Adam's update takes two launches (its new first moment is written by one kernel
    # and read by the other)
    assert run["buckets"] == 4 and sum(run["bucket_sizes"]) == 53
    assert updates == [1 if optimizer == "sgd-momentum" else 2] * 4
    # float32 gradients (53; with ZeRO-1 each bucket padded to an even size, reduce-scattered, and
    # the parameters all-gathered in the same sizes), and three float64 sums (samples, loss, accuracy)
    padded = sum(-(-size // 2) * 2 for size in run["bucket_sizes"])
    assert run["bytes"] == (4 * padded * 2 if shard else 4 * 53) + 8 * 3


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_with_zero1_each_rank_holds_its_share_of_the_optimizer_state(two_ranks, optimizer):
    one = one_process(dist_helpers.train_steps, optimizer)["state_bytes"]
    states = {"sgd-momentum": 1, "adam": 2}[optimizer]  # velocity; m and v
    assert one == 4 * 53 * states
    for result in two_ranks:
        assert result["steps", optimizer, False]["state_bytes"] == one  # all-reduce: every rank all of it
        sharded = result["steps", optimizer, True]
        # half of each bucket padded to an even size: 53 / 2 rounded up, per bucket
        assert sharded["state_bytes"] == 4 * states * sum(-(-size // 2) for size in sharded["bucket_sizes"])
        assert one / 2 <= sharded["state_bytes"] <= one / 2 + 4 * states * sharded["buckets"]


def test_a_one_process_checkpoint_resumes_in_a_sharded_two_process_run(two_ranks):
    """One process runs RESUME_AT steps and saves; two ranks with ZeRO-1 load the file (each
    taking its slice of the optimizer state) and run the remaining steps: the result is one
    process's run of all the steps."""
    one = one_process(dist_helpers.train_steps, "adam")
    for rank, result in enumerate(two_ranks):
        run = result["resumed"]
        _assert_close(run["state"], one["state"], f"rank {rank}'s parameters")
        np.testing.assert_allclose(run["losses"], one["losses"][dist_helpers.RESUME_AT:], **FLOAT32)
    _assert_close(two_ranks[0]["resumed"]["optimizer"], one["optimizer"], "rank 0's gathered optimizer state")
    _assert_pieces(two_ranks[1]["resumed"], one["optimizer"], "rank 1's optimizer state")


def test_a_rank_holding_pieces_of_the_state_refuses_to_save_it(two_ranks):
    refused = two_ranks[1]["steps", "adam", True]["refused"]
    assert refused is not None and refused.type == "OptionError", refused
    assert "the optimizer state held in pieces by the ranks: optimizer.0.weight.exp_avg" in refused.message
    assert "gather it on rank 0 first" in refused.message


@pytest.mark.parametrize("optimizer, shard", [("sgd-momentum", False), ("adam", True)],
                         ids=["all-reduce", "zero1"])
def test_fit_under_two_processes_gives_the_history_of_one(two_ranks, tmp_path, optimizer, shard):
    one = one_process(dist_helpers.fit_run, optimizer, str(tmp_path))
    for rank, result in enumerate(two_ranks):
        run = result["fit", optimizer, shard]
        assert run["history"].keys() == one["history"].keys()
        for name, values in one["history"].items():
            np.testing.assert_allclose(run["history"][name], values, **FLOAT32, err_msg=f"rank {rank}: {name}")
        _assert_close(run["state"], one["state"], f"rank {rank}'s parameters")


@pytest.mark.parametrize("optimizer, shard", [("sgd-momentum", False), ("adam", True)],
                         ids=["all-reduce", "zero1"])
def test_only_rank_zero_prints_and_writes_files(two_ranks, optimizer, shard):
    first, second = (result["fit", optimizer, shard] for result in two_ranks)
    assert "epoch 2/2" in first["printed"] and second["printed"] == ""
    assert os.path.isfile(first["checkpoint"]) and os.path.isfile(first["checkpoint"][:-12] + ".csv")
    assert not os.path.exists(second["checkpoint"]) and not os.path.exists(second["checkpoint"][:-12] + ".csv")


@pytest.mark.parametrize("optimizer, shard", [("sgd-momentum", False), ("adam", True)],
                         ids=["all-reduce", "zero1"])
def test_a_two_process_checkpoint_loads_into_a_one_process_model(two_ranks, tmp_path, optimizer, shard):
    run = two_ranks[0]["fit", optimizer, shard]
    one = one_process(dist_helpers.fit_run, optimizer, str(tmp_path))
    model = small_mlp(1)
    opt = OPTIMIZERS[optimizer](model.parameters())
    assert nn.load(run["checkpoint"], model, opt) == {"epoch": 2}
    _assert_close(dist_helpers.state(model), one["state"], "loaded parameters")
    # with ZeRO-1 each rank updated a shard of the state: the file holds all of it, gathered
    _assert_close(dist_helpers.optimizer_state(model, opt), one["optimizer"], "loaded optimizer state")


FP16_UNDER_A_GROUP = ("compile: dynamic loss scaling (fp16's GradScaler) under a process group is not built; "
                      "pass loss_scaler=False, or use precision='bf16' or 'fp32'")


def test_compile_refuses_fp16_loss_scaling_under_two_ranks(two_ranks):
    for rank, result in enumerate(two_ranks):
        default, given, unscaled = result["fp16 compile"]
        for refusal in (default, given):
            assert isinstance(refusal, dist_helpers.RankFailed), f"rank {rank}: compile accepted fp16 scaling"
            assert (refusal.type, refusal.message) == ("OptionError", FP16_UNDER_A_GROUP)
        assert unscaled is None  # loss_scaler=False: fp16 GEMMs, no scaler


@pytest.fixture
def one_rank_group(tmp_path):
    """A one-rank gloo group in this process, through a FileStore (no ports)."""
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_one_rank_trains_fp16_with_its_loss_scaler_as_one_process(one_rank_group):
    for options in ({}, {"process_group": one_rank_group}):
        model = small_mlp(0)
        model.compile("sgd", "nll", precision="fp16", **options)
        assert isinstance(model.optimizer.loss_scaler, nn.GradScaler)
        x, y = dist_helpers.step_data()
        history = model.fit(x[:16], y[:16], epochs=1, batch_size=16, verbose=False)
        assert np.isfinite(history["loss"]).all()


def test_compile_refuses_a_process_group_without_torch_distributed():
    with pytest.raises(OptionError, match="process_group: torch.distributed is not initialised"):
        small_mlp(0).compile("sgd", "nll", precision="fp16", process_group=object())


def test_a_rank_that_raises_makes_the_other_fail_with_a_clear_error():
    failing, raising = run_ranks(dist_helpers.fails_on_rank_one, 2, timeout_s=10)
    assert isinstance(raising, dist_helpers.RankFailed) and raising.message == "rank 1 gives up"
    assert isinstance(failing, dist_helpers.RankFailed), failing
    assert failing.type == "DistributedError"
    assert re.match(r"data-parallel step on rank 0 of 2: exchanging (the sample count|gradient bucket \d) failed: "
                    r"another rank failed, or did not answer within the process group's timeout \(.+\)",
                    failing.message), \
        failing.message


def test_a_sharded_optimizer_needs_a_process_group():
    model = small_mlp(0)
    x, y = dist_helpers.step_data()
    with pytest.raises(OptionError, match="shard_optimizer=True shards the optimizer over a torch.distributed "
                                          "process group, and none is initialised"):
        nn.train_step(model, nn.NLLLoss(), nn.SGD(model.parameters()), x, y, shard_optimizer=True)


def test_without_a_process_group_the_step_is_the_single_fused_program():
    model = small_mlp(0)
    x, y = dist_helpers.step_data()
    step = nn.train_step(model, nn.NLLLoss(), nn.SGD(model.parameters(), lr=0.1, momentum=0.9), x, y)
    assert isinstance(step, __import__("kgen").Function) and len(step.kernels) == 4


def _epoch_lines(output: str) -> list:
    return [re.sub(r"\s+\([\d.]+s\)$", "", line) for line in output.splitlines() if line.startswith("epoch ")]


@pytest.mark.slow
def test_kgen_train_nproc_2_trains_as_one_process_at_twice_the_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}

    def train(*options):
        result = subprocess.run([sys.executable, "-m", "kgen.cli", "train", "linreg", "--epochs", "2", *options],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    two = train("--nproc", "2", "--batch", "16", "--checkpoint", "runs")
    one = train("--batch", "32")
    assert _epoch_lines(two) == _epoch_lines(one) and len(_epoch_lines(one)) == 2
    assert two.count("final: ") == 1  # rank 0 alone prints
    assert os.path.isfile(tmp_path / "runs" / "last.safetensors")


def test_kgen_train_shard_optimizer_needs_nproc(capsys):
    from kgen import cli
    assert cli.main(["train", "linreg", "--shard-optimizer"]) == 2
    assert "--shard-optimizer shards the optimizer over the processes of --nproc K" in capsys.readouterr().err
