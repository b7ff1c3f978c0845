"""kgen.autotune: config choice per kernel template.

    configs    the rule-of-thumb config per template family (the default)
    space      candidate configs per family, in tiers, pruned by the target's limits
    costmodel  the offline cost model: a predicted time per candidate on a named GPU
    facts      registers, spills and shared memory of compiled candidates, with no GPU
    cache      the persistent autotune cache (TuneCache) and the compile facts cache
    tuner      picks a config per kernel (timed on a GPU, else the cost model); config_for

Only `configs` is imported eagerly: kgen.kernels.launch imports it, and the other modules
import kgen.kernels; they load on first use (`kgen.autotune.tuner`, or the names below)."""
import importlib

from kgen.autotune import configs

_LAZY = {"space": "kgen.autotune.space", "costmodel": "kgen.autotune.costmodel", "facts": "kgen.autotune.facts",
         "cache": "kgen.autotune.cache", "tuner": "kgen.autotune.tuner",
         "TuneCache": ("kgen.autotune.cache", "TuneCache"), "config_for": ("kgen.autotune.tuner", "config_for"),
         "tune_program": ("kgen.autotune.tuner", "tune_program")}

__all__ = ["configs", "space", "costmodel", "facts", "cache", "tuner", "TuneCache", "config_for", "tune_program"]


def __getattr__(name):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'kgen.autotune' has no attribute {name!r}")
    if isinstance(target, str):
        return importlib.import_module(target)
    module, attribute = target
    return getattr(importlib.import_module(module), attribute)
