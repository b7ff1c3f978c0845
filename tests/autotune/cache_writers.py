"""Several processes writing one tune cache at once, for the cache's tests
(tests/autotune/test_tune_cache.py, test_tune_workers.py): each writer is forked, opens the
cache and waits at a barrier so that all write together; neither a writer nor a reader
afterwards may meet a half-written entry (`strict`: TuneCacheWarning is an error)."""
from __future__ import annotations

import contextlib
import multiprocessing
import warnings

from kgen.autotune.cache import TuneCache, TuneCacheWarning


@contextlib.contextmanager
def strict():
    """A TuneCacheWarning (an entry that does not read back) is an error in here, and in the
    processes forked in here."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TuneCacheWarning)
        yield


def _start(write, directory, barrier, worker, args):
    cache = TuneCache(directory)
    barrier.wait()
    write(cache, worker, *args)


def run_writers(write, directory, count: int, *args, timeout_s: float = 120) -> None:
    """write(cache, worker, *args) for workers 0 .. count - 1, each in a forked process on the
    cache in `directory`, all at once; each must exit cleanly and leave no temporary file."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(count)
    writers = [context.Process(target=_start, args=(write, directory, barrier, w, args)) for w in range(count)]
    with strict():
        for p in writers:
            p.start()
        for p in writers:
            p.join(timeout_s)
    for p in writers:
        if p.is_alive():  # stuck: the assertion below says so
            p.kill()
            p.join()
    assert [p.exitcode for p in writers] == [0] * count
    assert not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]  # no temporary files left
