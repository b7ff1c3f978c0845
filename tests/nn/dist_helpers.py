"""Running a function in several processes of one gloo group on loopback, for the
data-parallel tests: `run_ranks(worker, world, *args)` starts `world` spawned processes, each
joins a group through a FileStore (no ports) with a short timeout, runs worker(rank, world,
*args) and hands back its result, or the error it raised as (type name, message)."""
from __future__ import annotations

import datetime
import multiprocessing
import os
import pickle
import tempfile
import traceback

import numpy as np
import torch

GROUP_TIMEOUT_S = 30  # a rank left waiting on a failed one gives up after this
JOIN_TIMEOUT_S = 900  # the whole run's bound; the group's timeout ends a stuck rank far sooner


class RankFailed:
    """What a rank raised: the exception's type name and message (and the traceback)."""

    def __init__(self, error: BaseException):
        self.type = type(error).__name__
        self.message = str(error)
        self.traceback = traceback.format_exc()

    def __repr__(self):
        return f"RankFailed({self.type}: {self.message})\n{self.traceback}"


def _entry(rank: int, world: int, directory: str, timeout_s: float, worker, args) -> None:
    torch.set_num_threads(1)  # two ranks share the machine's cores
    import torch.distributed as dist
    store = dist.FileStore(os.path.join(directory, "store"), world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        result = worker(rank, world, *args)
    except BaseException as e:  # handed back to the test, which asserts on it
        result = RankFailed(e)
    with open(os.path.join(directory, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)
    if not isinstance(result, RankFailed):
        dist.destroy_process_group()


def run_ranks(worker, world: int = 2, *args, timeout_s: float = GROUP_TIMEOUT_S) -> list:
    """worker(rank, world, *args) on each of `world` ranks, in a group whose collectives give
    up after `timeout_s`; their results in rank order."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as directory:
        processes = [context.Process(target=_entry, args=(rank, world, directory, timeout_s, worker, args)) for rank in range(world)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(JOIN_TIMEOUT_S)
        stuck = [p for p in processes if p.is_alive()]
        for p in stuck:
            p.kill()
            p.join()
        assert not stuck, f"{len(stuck)} rank(s) still running after {JOIN_TIMEOUT_S} s"
        results = []
        for rank in range(world):
            path = os.path.join(directory, f"rank{rank}.pkl")
            assert os.path.exists(path), f"rank {rank} handed back nothing (exit code {processes[rank].exitcode})"
            with open(path, "rb") as f:
                results.append(pickle.load(f))
        return results


def state(model) -> dict:
    return {name: np.array(value) for name, value in model.state_dict().items()}


# --- what the tests run on each rank (and, with world 1, in one process) -----------------------
GLOBAL_BATCH = 64
STEPS = 5
RESUME_AT = 2
OPTIMIZERS = {"sgd-momentum": lambda params: _nn().SGD(params, lr=0.1, momentum=0.9),
              "adam": lambda params: _nn().Adam(params, lr=0.01)}


def _nn():
    from kgen import nn
    return nn


def step_data():
    from nn_helpers import data
    return data(GLOBAL_BATCH * STEPS, seed=2)


def train_steps(rank: int, world: int, optimizer: str, shard: bool, bucket_bytes=None, stop: int = STEPS,
                save: str = None, resume: str = None) -> dict:
    """Steps of nn.train_step, each on rank `rank`'s part of a global batch of GLOBAL_BATCH,
    up to step `stop`: the parameters, the optimizer's state (whole on rank 0; with `shard`
    the other ranks' pieces of it), the losses, and what the step is. `save`: a checkpoint
    written at the end (one process); `resume`: one loaded once the step is built, the steps
    continuing after those it holds."""
    from nn_helpers import small_mlp
    nn = _nn()
    model = small_mlp(0)
    opt = OPTIMIZERS[optimizer](model.parameters())
    x, y = step_data()
    local = GLOBAL_BATCH // world
    options = {"shard_optimizer": True, "bucket_bytes": bucket_bytes} if shard else {"bucket_bytes": bucket_bytes}
    step = nn.train_step(model, nn.NLLLoss(), opt, x[:local], y[:local], ["accuracy"],
                         **(options if world > 1 else {}))
    first = nn.load(resume, model, opt)["steps"] if resume else 0
    losses = []
    for k in range(first, stop):
        start = k * GLOBAL_BATCH + rank * local
        losses.append([float(v) for v in step(x[start:start + local], y[start:start + local])])
    facts = {"state_bytes": held_state_bytes(opt, step if world > 1 else None)}
    if world > 1:
        if shard and rank:
            facts["pieces"] = [(attr, i, start, stop, values.numpy().copy())
                               for attr, i, start, stop, values in step.state_pieces()]
            facts["refused"] = refused(lambda: nn.save(os.devnull, model, opt))
        step.gather_state()
        facts.update({"launches": [len(p.kernels) for p in step.programs], "buckets": len(step.buckets),
                      "bucket_sizes": [b.grads.used for b in step.buckets], "bytes": step.bytes_reduced})
    else:
        facts["launches"] = [len(step.kernels)]
    if save:
        nn.save(save, model, opt, steps=stop)
    whole = not (shard and rank)  # a sharded run's other ranks hold pieces only
    return {"state": state(model), "optimizer": optimizer_state(model, opt) if whole else None, "losses": losses,
            **facts}


def refused(action):
    """The error `action()` raises, as a RankFailed (None if it raises none)."""
    try:
        action()
    except Exception as e:  # handed back to the test, which asserts on it
        return RankFailed(e)
    return None


def held_state_bytes(opt, step=None) -> int:
    """Bytes of the distinct storages holding optimizer state in this process: the optimizer's
    per-parameter state tensors that hold values, and a sharded step's pieces."""
    from kgen.nn import zero
    tensors = [v.value for attr, value in vars(opt).items() if attr != "params" and zero.is_state(value, opt.params)
               for v in value if not v.value.is_meta]
    if step is not None and step.sharded:
        tensors += [values for *_, values in step.state_pieces()]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def optimizer_state(model, opt) -> dict:
    from kgen.nn import checkpoint
    return {name: var.get_value() for name, var in checkpoint._optimizer_state("test", model, opt).items()}


def fit_data():
    from nn_helpers import data
    return data(101, seed=3), data(37, seed=4)  # a short last batch: 101 = 3*32 + 5, split 2 and 3


def fit_run(rank: int, world: int, optimizer: str, shard: bool, directory: str) -> dict:
    """fit for two epochs at batch 16 per rank (32 in all) with validation data, a
    checkpoint and a CSV log written after each epoch (named by rank), its printout kept."""
    import contextlib
    import io
    from nn_helpers import small_mlp
    nn = _nn()
    model = small_mlp(0)
    model.compile(OPTIMIZERS[optimizer](model.parameters()), "nll", ["accuracy"],
                  **({"shard_optimizer": shard} if world > 1 else {}))
    (x, y), validation = fit_data()
    name = f"{directory}/{optimizer}-{int(shard)}-rank{rank}-of-{world}"
    callbacks = [nn.ModelCheckpoint(name + ".safetensors"), nn.CSVLogger(name + ".csv")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        history = model.fit(x, y, epochs=2, batch_size=32 // world, validation_data=validation,
                            callbacks=callbacks, verbose=2)
    whole = not (shard and rank)  # a sharded run's other ranks hold pieces only
    return {"history": history, "printed": printed.getvalue(), "state": state(model),
            "optimizer": optimizer_state(model, model.optimizer) if whole else None,
            "checkpoint": name + ".safetensors"}


def everything(rank: int, world: int, directory: str, checkpoint: str) -> dict:
    """All the two-rank runs the tests compare, in one group (one start-up for all);
    `checkpoint`: a one-process run's after RESUME_AT steps, which a sharded run resumes."""
    runs = {}
    for optimizer in OPTIMIZERS:
        for shard in (False, True):
            runs["steps", optimizer, shard] = train_steps(rank, world, optimizer, shard, bucket_bytes=64)
    for optimizer, shard in (("sgd-momentum", False), ("adam", True)):
        runs["fit", optimizer, shard] = fit_run(rank, world, optimizer, shard, directory)
    runs["resumed"] = train_steps(rank, world, "adam", True, bucket_bytes=64, resume=checkpoint)
    runs["fp16 compile"] = fp16_compile()
    return runs


def fp16_compile() -> list:
    """What compile(precision="fp16") raises under this process's group: by default, given the
    group, and with loss_scaler=False (None for none)."""
    import torch.distributed as dist
    from nn_helpers import small_mlp
    return [refused(lambda: small_mlp(0).compile("sgd", "nll", precision="fp16", **options))
            for options in ({}, {"process_group": dist.group.WORLD}, {"loss_scaler": False})]


def fails_on_rank_one(rank: int, world: int) -> str:
    """Rank 1 raises before its first step; rank 0 steps and should hear of it."""
    if rank == 1:
        raise ValueError("rank 1 gives up")
    train_steps(rank, world, "sgd-momentum", False)
    return "rank 0 finished its steps"
