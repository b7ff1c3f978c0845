"""Tuning work spread over processes: candidate compiles over K CPU processes
(`kgen tune --jobs K`) and candidate timings over the listed CUDA devices, one worker per
device (`kgen tune --devices 0,1`). One pool serves both; all that is particular to a
device is `_pin`, which makes a worker's device its current CUDA device before the worker
touches CUDA, and `device_names`, which checks the listed devices exist.

How workers start (measured by benchmarks/tune_jobs.py on the 2-core development machine,
torch and Triton imported in the parent; results/2026-12-02-cpu-x86_64-2threads-tune-jobs.json):
fork costs a fraction of a second, since workers inherit kgen, Triton and the loaded
kernel module; forkserver and spawn cost seconds to tens of seconds, each new interpreter
importing torch, Triton and kgen (forkserver once, spawn per worker). So compile workers
are forked while this process holds no CUDA context: they run Triton's compiler and ptxas
and nothing else, neither torch's thread pools nor CUDA, the two things a fork after
threads breaks. Device workers, and compile workers of a process that has started CUDA (a
context does not survive a fork), start from a forkserver, which forks them from a fresh
single-threaded process that imported kgen once.

Results come back in the order of the jobs whatever order the workers finish them in, so a
spread run decides exactly as a serial one (tests/autotune/test_tune_workers.py)."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from kgen.errors import KgenError, OptionError

PRELOAD = ["kgen.autotune.tuner"]  # what a forkserver imports once for all its workers
_pinned = None  # this worker's device: "cuda" once pinned to a CUDA device, or a torch device name


def device_names(devices) -> list:
    """The listed CUDA device indices, checked against what torch sees (an OptionError
    naming --devices when none is visible, or an index is not there, or the devices are
    of different architectures, whose timings would not pick one target's configs)."""
    import torch
    devices = list(devices)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible == 0:
        raise OptionError(f"--devices {','.join(map(str, devices))}: no CUDA device is visible to torch here "
                          f"(torch.cuda.is_available() is False), so nothing can be timed; without a GPU the "
                          f"cost model ranks the candidates: leave out --devices (--jobs K spreads the compiles "
                          f"over K processes)")
    missing = [d for d in devices if d >= visible]
    if missing:
        raise OptionError(f"--devices: expected indices below {visible} (the CUDA devices visible here), "
                          f"got {', '.join(map(str, missing))}")
    archs = {d: "sm_%d%d" % torch.cuda.get_device_capability(d) for d in devices}
    if len(set(archs.values())) > 1:
        raise OptionError(f"--devices: expected devices of one architecture (a tuning is per target), got "
                          f"{', '.join(f'{d}: {a}' for d, a in archs.items())}")
    return devices


def _pin(device) -> None:
    """Make `device` this worker's: a CUDA index becomes the current CUDA device (before
    anything else touches CUDA, so the worker makes a context on that device only); any
    other name (a test's "cpu") is used as it is."""
    global _pinned
    if isinstance(device, int):
        import torch
        torch.cuda.set_device(device)
        _pinned = "cuda"
    else:
        _pinned = device


def pinned_device():
    """The device this worker was pinned to (None outside a device worker)."""
    return _pinned


def _start(devices) -> None:
    """A worker's initializer: take the next device from the pool's queue of them."""
    _pin(devices.get())


def _can_fork() -> bool:
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    import torch
    return not torch.cuda.is_initialized()


class Workers:
    """`count` processes, or one per device of `devices` (CUDA indices, or torch device
    names for tests), running `map`. With no devices and a count of one (or one job), work
    runs in this process. `method` forces a start method (the benchmark compares them).
    A context manager; `close` ends the workers."""

    def __init__(self, count: int = None, devices=None, method: str = None):
        self.devices = list(devices) if devices else None
        self.count = len(self.devices) if self.devices else (count or os.cpu_count() or 1)
        self.method = method
        self._pool = None

    def _executor(self, jobs: int):
        if self._pool is None:
            method = self.method or ("forkserver" if self.devices or not _can_fork() else "fork")
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload(PRELOAD)
            options = {}
            if self.devices:
                queue = context.Queue()
                for device in self.devices:
                    queue.put(device)
                options = {"initializer": _start, "initargs": (queue,)}
            self._pool = ProcessPoolExecutor(self.count if self.devices else min(self.count, jobs),
                                             mp_context=context, **options)
        return self._pool

    def runs_here(self, jobs: int) -> bool:
        """Whether `map` over `jobs` items runs them in this process."""
        return not self.devices and (self.count <= 1 or jobs <= 1)

    def map(self, fn, items, tick=None) -> list:
        """[fn(item) for item in items], in that order, spread over the workers; `tick()`
        hears of each finished item."""
        items = list(items)
        if self.runs_here(len(items)):
            results = []
            for item in items:
                results.append(fn(item))
                if tick:
                    tick()
            return results
        pool = self._executor(len(items))
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        results = [None] * len(items)
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if tick:
                    tick()
        except BrokenProcessPool:
            self.close()
            where = f"on devices {self.devices}" if self.devices else f"of {self.count}"
            raise KgenError(f"a tuning worker process {where} died (a crash in the compiler or the driver); "
                            f"run with --jobs 1 and without --devices to see the error in this process") from None
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
