"""Ahead-of-time compilation of generated kernels to PTX and cubin for named GPU targets,
with no GPU needed: `triton.compile` on the kernel's source with a GPUTarget."""
from __future__ import annotations

from dataclasses import dataclass

from kgen.errors import KgenError
from kgen.ir import shapes
from kgen.kernels.launch import default_config
from kgen.kernels.loader import load_module

TARGETS = {"sm_75": 75, "sm_80": 80, "sm_86": 86, "sm_89": 89, "sm_90": 90, "sm_100": 100, "sm_120": 120}


@dataclass
class Binary:
    kernel: str
    target: str
    ptx: str
    cubin: bytes
    shared_bytes: int
    num_warps: int
    constexprs: dict


def parse_target(target: str) -> int:
    if target not in TARGETS:
        raise KgenError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    return TARGETS[target]


def compile_kernel(source: str, kernel, target: str, config: dict) -> Binary:
    """Compile one kernel of the module `source` for `target` with block sizes `config`
    (constexprs, plus num_warps / num_stages)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    capability = parse_target(target)
    fn = getattr(load_module(source, interpreted=False), kernel.name)
    constexprs = {p.name: config[p.name] for p in kernel.params if p.kind == "constexpr"}
    signature = {p.name: p.signature() for p in kernel.params}
    options = {"num_warps": config.get("num_warps", 4), "num_stages": config.get("num_stages", 3)}
    compiled = triton.compile(ASTSource(fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", capability, 32), options=options)
    return Binary(kernel.name, target, compiled.asm["ptx"], compiled.asm["cubin"],
                  compiled.metadata.shared, compiled.metadata.num_warps, constexprs)


def compile_program(program, targets=("sm_80", "sm_90"), sizes=None) -> list:
    """Every kernel of `program` compiled for every target, with the GPU default config
    for `sizes` (size name -> int; unbound sizes default to 64)."""
    sizes = dict(sizes or {})
    for node in program.graph.inputs:
        for name in shapes.symbols_of(node.shape):
            sizes.setdefault(name, 64)
    out = []
    for kernel in program.kernels:
        config = default_config(kernel, sizes, interpreted=False)
        out.extend(compile_kernel(program.source, kernel, t, config) for t in targets)
    return out
