"""Compile facts: what a kernel compiled with one config uses on a target (registers and
spilled bytes per thread, shared memory per block), for the cost model, with no GPU.

The numbers come from the AOT compile (kgen.kernels.aot): shared memory from Triton's
metadata, registers and the spill stack frame from the cubin itself
(`aot.cubin_resources`: ptxas writes them into the ELF's .nv.info section; Triton's own
`n_regs`/`n_spills` are filled only when a driver loads the kernel on a GPU). Several
compiles run in a pool of worker processes, and every fact is kept in the FactsCache, so a
kernel source is compiled once per config, target and Triton version."""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

from kgen import counters
from kgen.autotune.cache import FactsCache, kernel_hash
from kgen.kernels import aot
from kgen.kernels.loader import load_module


@dataclass(frozen=True)
class Facts:
    registers: int = 0  # per thread
    spill_bytes: int = 0  # stack frame per thread: registers ptxas spilled
    shared_bytes: int = 0  # per block
    error: str = ""  # why the compile failed ("" when it did not)

    @property
    def ok(self) -> bool:
        return not self.error


def compile_one(job: aot.CompileJob) -> dict:
    """The facts of one compile job, as a dict (a pool worker's result). A job that does
    not compile gives its error: a candidate that fails is scored, not fatal."""
    try:
        binary = aot.compile_job(job)
    except Exception as e:  # noqa: BLE001 (any compiler failure disqualifies only this candidate)
        return {"error": f"{type(e).__name__}: {last_line(e)}"}
    return {"registers": binary.registers, "spill_bytes": binary.spill_bytes, "shared_bytes": binary.shared_bytes}


def last_line(error: Exception) -> str:
    """The last line of an error's message: Triton's compile errors quote the source first
    and say what is wrong last."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def gather(source: str, requests: list, target: str, workers: int = None, cache: FactsCache = None) -> list:
    """Facts for each (kernel, config) of `requests`, kernels of the module `source`
    compiled for `target`: from `cache` where it has them, else compiled (in `workers`
    processes; None: one per CPU core) and added to it."""
    results, pending = [None] * len(requests), {}
    for i, (kernel, config) in enumerate(requests):
        known = cache.get(kernel_hash(kernel), target, config) if cache else None
        if known is not None:
            results[i] = Facts(**known)
        else:
            job = aot.kernel_job(source, kernel, target, config)
            pending.setdefault(job, []).append(i)
    if pending:
        jobs = list(pending)
        for job, found in zip(jobs, _run(jobs, workers)):
            facts = Facts(**found)
            for i in pending[job]:
                results[i] = facts
            if cache is not None and facts.ok:
                kernel, config = requests[pending[job][0]]
                cache.put(kernel_hash(kernel), target, config, found)
    return results


def _run(jobs: list, workers: int = None) -> list:
    """compile_one over `jobs`, in a process pool when there are several jobs and cores:
    forked while this process has not started CUDA (workers inherit kgen, Triton and the
    loaded module), spawned once it has (CUDA does not survive a fork)."""
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        return [compile_one(job) for job in jobs]
    method = "fork" if _fork_is_safe() else "spawn"
    if method == "fork":
        for source in {job.source for job in jobs}:
            load_module(source, interpreted=False)
    with multiprocessing.get_context(method).Pool(workers) as pool:
        found = pool.map(compile_one, jobs, chunksize=1)
    counters.bump("compiles", sum("error" not in f for f in found))  # counted in the workers, not here
    return found


def _fork_is_safe() -> bool:
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    import torch
    return not torch.cuda.is_initialized()
