"""The autotuner as a program's config source (kgen.kernels.runtime.FamilyDefaults says
what one is): on a GPU a kernel launches with the config the autotune cache holds for the
device's target, else its family's default, and `Program.tune` times candidates and keeps
the fastest in that cache. kgen.compile hands every program it builds this source, so the
runtime reads tuned configs without importing the autotuner."""
from __future__ import annotations

from kgen.autotune.cache import TuneCache
from kgen.autotune.tuner import config_for, tune_program


class TunedConfigs:
    def config(self, kernel, sizes: dict, target: str, cache: TuneCache = None) -> dict:
        return config_for(kernel, sizes, target, cache)

    def new_cache(self) -> TuneCache:
        return TuneCache()

    def tune(self, program, sizes: dict, target: str, tier: str, cache: TuneCache, inputs: dict, workers: int,
             force: bool, progress) -> list:
        return tune_program(program, sizes, [target], tier, cache, inputs, workers, force, progress)


TUNED = TunedConfigs()
