"""Data-parallel training steps (kgen.nn.distributed) against the single-process step, for the
zoo's mlp128 and cnn at a global batch of 64: one process at 64, and two gloo processes on
loopback at 32 each (started as `kgen train --nproc 2` starts them), their gradients
all-reduced, or with ZeRO-1 (shard_optimizer) reduce-scattered, the update run over each
rank's piece and the parameters all-gathered. Per step: launches (the single fused program;
data-parallel, the gradient program and the update programs, one per gradient bucket), the
bytes each rank sends into collectives, the optimizer-state bytes each rank holds, and the
wall time per step after a first call that compiles.

The wall times are CPU only: Triton's interpreter, the two processes sharing this machine's
cores (one torch thread each; the single process has them all). They say nothing of a GPU,
where kernels are ~1000x faster and a bucket's collective runs beside the rest of the
backward; the launches and bytes are what carries over. Prints a table and writes
benchmarks/results/DATE-DEVICE-distributed.json.

    python benchmarks/distributed_step.py
"""
from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from kgen import nn  # noqa: E402
from kgen.nn import distributed, zero, zoo  # noqa: E402
from results_io import device_name, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp128", "cnn")
GLOBAL_BATCH = 64
TIMED_STEPS = 3
MODES = (("single process", 1, False), ("2 ranks, all-reduce", 2, False), ("2 ranks, ZeRO-1", 2, True))


def state_bytes(optimizer) -> int:
    """Bytes of the optimizer's per-parameter state tensors holding values in this process."""
    return sum(v.value.numel() * v.value.element_size() for attr, value in vars(optimizer).items()
               if attr != "params" and zero.is_state(value, optimizer.params) for v in value if not v.value.is_meta)


def measure(name: str, shard: bool) -> dict:
    """One rank's (or the single process's) figures for zoo model `name`."""
    rank, world = distributed.rank_and_world(distributed.group_of())
    spec = zoo.get(name)
    nn.manual_seed(0)
    model = spec.model()
    optimizer = spec.optimizer(model.parameters())
    x, y = zoo.example_batch(spec, GLOBAL_BATCH)
    lo, hi = distributed.shard_bounds(GLOBAL_BATCH, rank, world)
    x, y = x[lo:hi], y[lo:hi]
    step = nn.train_step(model, nn.losses.get(spec.loss), optimizer, x, y, shard_optimizer=shard)
    step(x, y)  # generates and compiles the kernels
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step(x, y)
    seconds = (time.perf_counter() - start) / TIMED_STEPS
    if world == 1:
        return {"launches": [len(step.kernels)], "collective_bytes": 0, "optimizer_state_bytes": state_bytes(optimizer),
                "step_s": seconds}
    return {"launches": [len(p.kernels) for p in step.programs], "buckets": len(step.buckets),
            "collective_bytes": step.bytes_reduced, "optimizer_state_bytes": step.optimizer_state_bytes,
            "step_s": seconds}


def worker(shard: bool) -> dict:
    """A rank of the two-process runs: every model, then leave the group."""
    distributed.init_from_env()
    torch.set_num_threads(1)  # the two ranks share the machine's cores
    try:
        return {name: measure(name, shard) for name in MODELS}
    finally:
        distributed.leave()


def main():
    rows = []
    for mode, world, shard in MODES:
        if world == 1:
            per_model = {name: measure(name, shard) for name in MODELS}
        else:
            per_model = distributed.launch(world, worker, shard)[0]  # rank 0's figures (the ranks' agree)
        for name in MODELS:
            rows.append({"model": name, "mode": mode, **per_model[name]})
    print(f"{'model':8s} {'mode':22s} {'launches':>16s} {'collective B':>13s} {'opt. state B/rank':>18s} "
          f"{'step (interp.)':>15s}")
    for r in rows:
        launches = " + ".join(map(str, r["launches"]))
        print(f"{r['model']:8s} {r['mode']:22s} {launches:>16s} {r['collective_bytes']:>13,} "
              f"{r['optimizer_state_bytes']:>18,} {r['step_s']:>13.2f} s")
    write_result("distributed", {"device": device_name(), "triton_interpreter": not torch.cuda.is_available(),
                                 "global_batch": GLOBAL_BATCH, "timed_steps": TIMED_STEPS,
                                 "note": "wall times: CPU, Triton's interpreter, 2 gloo ranks sharing the cores",
                                 "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
