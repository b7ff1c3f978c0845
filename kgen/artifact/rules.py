"""A stored kernel's launch rule: its grid and int arguments at concrete sizes, computed
from the manifest's expressions alone (kgen.artifact.expr), the way
kgen.kernels.launch.plan_launch computes them from the IR."""
from __future__ import annotations

from kgen.artifact.expr import SizeExpr

LAUNCH_OPTIONS = ("num_warps", "num_stages")


class LaunchRule:
    def __init__(self, entry: dict):
        name = entry["name"]
        self.grid = [(SizeExpr(axis["extent"], f"kernel {name} grid"), axis["block"]) for axis in entry["grid"]]
        self.ints = [(p["name"], SizeExpr(p["expr"], f"kernel {name} argument {p['name']}"))
                     for p in entry["params"] if p["kind"] == "int"]

    def at(self, sizes: dict, config: dict) -> tuple:
        """(grid, {int argument: value}) at `sizes` with `config` (block sizes: a combo
        kernel's grid counts its parts' programs with them)."""
        constexprs = {k: v for k, v in config.items() if k not in LAUNCH_OPTIONS}
        bound = {**sizes, **constexprs}
        grid = tuple(-(-extent.evaluate(sizes) // constexprs[block]) if block else extent.evaluate(bound)
                     for extent, block in self.grid)
        return grid, {name: expr.evaluate(sizes) for name, expr in self.ints}
