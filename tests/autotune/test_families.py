"""Kernel families (kgen.kernels.families): every family a template writes is registered,
and a family registered anywhere is used by the default configs, the spaces and the cost
model with no edit to them."""
from __future__ import annotations

import dataclasses

import pytest

from kgen.autotune import costmodel, space
from kgen.errors import KgenError
from kgen.kernels import families
from kgen.kernels.launch import default_config

from tune_programs import PROGRAMS, program


def test_every_family_the_templates_write_is_registered_and_no_other():
    written = {rule for name in PROGRAMS for kernel in program(name).kernels
               for rule in [kernel.config_rule] + [part.config_rule for part in kernel.parts]}
    assert written == set(families.FAMILIES)


def test_an_unknown_family_or_a_second_registration_is_an_error():
    with pytest.raises(KgenError, match="no kernel family 'gemv'; families: combo, conv, "):
        families.lookup("gemv")
    with pytest.raises(ValueError, match="'pointwise' is registered twice"):
        families.register(families.Family("pointwise"))


def test_a_new_family_is_used_by_defaults_spaces_and_the_cost_model(monkeypatch):
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
    calls = []

    def default(dims, interpreted, half_dot):
        return {"XBLOCK": 16} if interpreted else {"XBLOCK": 64, "num_warps": 2}

    def candidates(dims, tier, default):
        calls.append(tier)
        if tier == "quick":
            yield from ({"XBLOCK": 32, "num_warps": 1}, {"XBLOCK": 64, "num_warps": 2}, {"XBLOCK": 128, "num_warps": 1})
        else:
            yield from ({"XBLOCK": 32 << i, "num_warps": 1} for i in range(5))

    def resources(config, work):
        return 10 + config["XBLOCK"] // 4, 96 * config["num_warps"]

    families.register(families.Family("strided", default, candidates, resources,
                                      steps=lambda dims, config: -(-dims["x"] // config["XBLOCK"])))
    kernel = dataclasses.replace(program("pointwise").kernels[0], config_rule="strided")
    sizes = {"N": 100}  # x: 4000 elements
    assert default_config(kernel, sizes, interpreted=True) == {"XBLOCK": 16}
    quick = space.candidates(kernel, sizes, "sm_90", "quick")
    assert quick == [{"XBLOCK": 64, "num_warps": 2}, {"XBLOCK": 32, "num_warps": 1},
                     {"XBLOCK": 128, "num_warps": 1}]  # the default first, then the family's, less duplicates
    assert len(space.candidates(kernel, sizes, "sm_90", "thorough")) == 6 and calls == ["quick", "thorough"]
    work = costmodel.kernel_work(kernel, sizes)
    estimate = costmodel.estimate_resources(kernel, {"XBLOCK": 1024, "num_warps": 4}, work, "sm_80")
    assert (estimate.demand, estimate.shared_bytes) == (266, 384) and estimate.spill_bytes == 4 * (266 - 255)
    slow, fast = (costmodel.predict(kernel, sizes, "sm_90", {"XBLOCK": block, "num_warps": 4}, work=work)
                  for block in (32, 4096))
    assert slow.parts["latency"] > fast.parts["latency"]  # 125 loop steps against one
