"""kgen.autotune: config choice per kernel, above the kernel families of kgen.kernels.families
(each family's default config, search space and resource estimate live beside its template).

    space      candidate configs per kernel, in tiers, pruned by the target's limits
    costmodel  the offline cost model: a predicted time per candidate on a named GPU
    facts      registers, spills and shared memory of compiled candidates, with no GPU
    cache      the persistent autotune cache (TuneCache) and the compile facts cache
    tuner      picks a config per kernel (timed on a GPU, else the cost model); config_for"""
from kgen.autotune import cache, costmodel, facts, space, tuner
from kgen.autotune.cache import TuneCache
from kgen.autotune.tuner import config_for, tune_program

__all__ = ["space", "costmodel", "facts", "cache", "tuner", "TuneCache", "config_for", "tune_program"]
