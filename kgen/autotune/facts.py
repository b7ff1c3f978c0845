"""Compile facts: what a kernel compiled with one config uses on a target (registers and
spilled bytes per thread, shared memory per block), for the cost model, with no GPU.

The numbers come from the AOT compile (kgen.kernels.aot): shared memory from Triton's
metadata, registers and the spill stack frame from the cubin itself
(`aot.cubin_resources`: ptxas writes them into the ELF's .nv.info section; Triton's own
`n_regs`/`n_spills` are filled only when a driver loads the kernel on a GPU). Several
compiles run in a pool of worker processes (kgen.autotune.workers), and every fact is kept
in the FactsCache, so a kernel source is compiled once per config, target and Triton
version."""
from __future__ import annotations

from dataclasses import dataclass

from kgen import counters
from kgen.autotune.cache import FactsCache, kernel_hash
from kgen.autotune.workers import Workers
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


def gather(source: str, requests: list, target: str, workers=None, cache: FactsCache = None, tick=None) -> list:
    """Facts for each (kernel, config) of `requests`, kernels of the module `source`
    compiled for `target`: from `cache` where it has them, else compiled (by `workers`: a
    kgen.autotune.workers.Workers, or a count of processes, None for one per CPU core) and
    added to it. `tick()` hears of each request answered, from the cache or compiled."""
    results, pending = [None] * len(requests), {}
    for i, (kernel, config) in enumerate(requests):
        known = cache.get(kernel_hash(kernel), target, config) if cache else None
        if known is not None:
            results[i] = Facts(**known)
            if tick:
                tick()
        else:
            job = aot.kernel_job(source, kernel, target, config)
            pending.setdefault(job, []).append(i)
    if pending:
        jobs = list(pending)
        for job, found in zip(jobs, _run(jobs, workers, tick)):
            facts = Facts(**found)
            for i in pending[job]:
                results[i] = facts
            for _ in pending[job][1:] if tick else ():  # requests that shared the job: answered too
                tick()
            if cache is not None and facts.ok:
                kernel, config = requests[pending[job][0]]
                cache.put(kernel_hash(kernel), target, config, found)
    return results


def _run(jobs: list, workers=None, tick=None) -> list:
    """compile_one over `jobs`, spread over `workers` (kgen.autotune.workers says how they
    start) when there are several jobs and workers, in job order either way."""
    pool = workers if isinstance(workers, Workers) else Workers(workers)
    try:
        if pool.runs_here(len(jobs)):
            return pool.map(compile_one, jobs, tick)
        for source in {job.source for job in jobs}:
            load_module(source, interpreted=False)  # before the workers start: forked ones inherit it
        found = pool.map(compile_one, jobs, tick)
        counters.bump("compiles", sum("error" not in f for f in found))  # counted in the workers, not here
        return found
    finally:
        if pool is not workers:
            pool.close()
