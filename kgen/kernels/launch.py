"""How one generated kernel is launched at concrete sizes: its config (block sizes and, on a
GPU, num_warps/num_stages), its grid, and the values of its integer arguments.

Everything that launches or compiles a kernel (the runtime, AOT compilation, artifacts, the
autotuner) goes through `plan_launch`, so a grid rule is written once; a config's defaults
come from the kernel's family (kgen.kernels.families)."""
from __future__ import annotations

from dataclasses import dataclass

from kgen.ir import shapes
from kgen.kernels.families import lookup
from kgen.kernels.matmul import GROUP_M
from kgen.kernels.splitk import scratch_numel, split_k


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Launch:
    grid: tuple  # programs per grid axis
    ints: dict  # integer argument name -> value
    config: dict  # constexprs, plus num_warps / num_stages on a GPU
    scratch: dict = None  # scratch argument name -> elements (kgen.kernels.splitk)

    @property
    def constexprs(self) -> dict:
        return {k: v for k, v in self.config.items() if k not in ("num_warps", "num_stages")}


def dot_operand(kernel):
    """The dtype of the operands of the kernel's dot (its GEMM template's, an op with a
    `gemm` in the op table), or None."""
    return next((n.inputs[0].dtype for n in kernel.nodes if n.opdef.gemm), None)


def half_dot(kernel) -> bool:
    """Whether the kernel's dot takes 16-bit float operands (tensor cores); float32 dots are
    exact FMA products (input_precision="ieee")."""
    operand = dot_operand(kernel)
    return operand is not None and operand.is_float and operand.bits == 16


def kernel_dims(kernel, sizes: dict) -> dict:
    """The kernel's named extents (kernel.dims) at concrete sizes."""
    return {k: shapes.evaluate(v, sizes) for k, v in kernel.dims.items()}


def default_config(kernel, sizes: dict, interpreted: bool) -> dict:
    """The untuned config of `kernel` at `sizes`: its family's default. A combo
    kernel's is its parts' configs under their `p<i>_` prefixes, with the most warps any
    part wants and the fewest stages."""
    if kernel.parts:
        parts = [default_config(part, sizes, interpreted) for part in kernel.parts]
        config = {f"p{i}_{k}": v for i, c in enumerate(parts) for k, v in c.items()
                  if k not in ("num_warps", "num_stages")}
        if not interpreted:
            config["num_warps"] = max(c.get("num_warps", 4) for c in parts)
            config["num_stages"] = min(c.get("num_stages", 3) for c in parts)
        return config
    dims = kernel_dims(kernel, sizes)
    config = lookup(kernel.config_rule).default(dims, interpreted, half_dot(kernel))
    names = {p.name for p in kernel.params if p.kind == "constexpr"}
    if "GROUP_M" in names:  # a GEMM's grouped tile order (kgen.kernels.matmul.emit_tile_ids)
        config["GROUP_M"] = GROUP_M
    if "SPLIT_K" in names:  # a GEMM that may split K (kgen.kernels.splitk)
        config["SPLIT_K"] = split_k(dims, config, interpreted)
    return config


def plan_launch(kernel, sizes: dict, interpreted: bool, config: dict = None) -> Launch:
    """The launch of `kernel` at `sizes` (size name -> int) with `config` (default: the
    family's default). On the interpreter num_warps/num_stages are dropped."""
    if config is None:
        config = default_config(kernel, sizes, interpreted)
    if interpreted:
        config = {k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}
    bound = {**sizes, **config}  # a combo's grid counts programs with its parts' block sizes
    grid = tuple(cdiv(shapes.evaluate(n, sizes), config[block]) if block else shapes.evaluate(n, bound)
                 for n, block in kernel.grid)
    ints = {p.name: shapes.evaluate(p.expr, sizes) for p in kernel.params if p.kind == "int"}
    scratch = {p.name: scratch_numel(p.numel, p.per, config) for p in kernel.params if p.kind == "scratch"}
    return Launch(grid, ints, dict(config), scratch)
