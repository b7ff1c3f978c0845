"""Ahead-of-time compilation of generated kernels to PTX and cubin for named GPU targets,
with no GPU needed: `triton.compile` on the kernel's source with a GPUTarget.

A compile is described by a `CompileJob` (plain data: source text, kernel name, signature,
constexprs, options, target), so jobs can run in a pool of worker processes
(`compile_parallel`): Triton's compile holds the GIL in LLVM, and ptxas is a subprocess."""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field

from kgen import counters
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
    metadata: dict = field(default_factory=dict)  # Triton's metadata of the compile (JSON-able)
    registers: int = 0  # per thread, from the cubin (cubin_resources): Triton's n_regs needs a GPU
    spill_bytes: int = 0  # the stack frame per thread, where ptxas puts spilled registers


@dataclass(frozen=True)
class CompileJob:
    """One kernel of a module for one target with one config, as plain (picklable) data."""
    source: str
    kernel: str
    signature: tuple  # (param name, Triton signature type), in parameter order
    constexprs: tuple  # (name, value)
    options: tuple  # (name, value): num_warps, num_stages
    target: str
    aligned: tuple = ()  # indices of the parameters compiled as multiples of ALIGN (`aligned_params`)


ALIGN = 16  # bytes a pointer, and the factor an int argument, may be assumed a multiple of


def aligned_params(kernel) -> tuple:
    """The parameters a binary may assume multiples of ALIGN, as Triton's JIT specializes
    them at a call (without it, loads and stores stay 4 bytes wide): every buffer pointer
    (kgen allocates buffers aligned; an artifact copies a misaligned input first) and every
    int argument that is a multiple of ALIGN at any sizes (784*N, a static 2048), not one
    that varies between calls (N). Their indices, in parameter order."""
    return tuple(i for i, p in enumerate(kernel.params)
                 if p.kind in ("in", "out", "scratch") or (p.kind == "int" and _always_multiple(p.expr, ALIGN)))


def _always_multiple(expr, factor: int) -> bool:
    import sympy
    expr = sympy.expand(sympy.sympify(expr))
    if expr.is_Integer:
        return int(expr) % factor == 0
    try:
        coefficients = sympy.Poly(expr, *sorted(expr.free_symbols, key=str)).coeffs()
    except sympy.PolynomialError:
        return False
    return all(c.is_Integer and int(c) % factor == 0 for c in coefficients)


def parse_target(target: str) -> int:
    if target not in TARGETS:
        raise KgenError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    return TARGETS[target]


def kernel_job(source: str, kernel, target: str, config: dict) -> CompileJob:
    """The job compiling `kernel` of the module `source` for `target` with `config`
    (constexprs, plus num_warps / num_stages)."""
    parse_target(target)
    constexprs = tuple((p.name, config[p.name]) for p in kernel.params if p.kind == "constexpr")
    signature = tuple((p.name, p.signature()) for p in kernel.params)
    options = (("num_warps", config.get("num_warps", 4)), ("num_stages", config.get("num_stages", 3)))
    return CompileJob(source, kernel.name, signature, constexprs, options, target, aligned_params(kernel))


def triton_compile(job: CompileJob):
    """Triton's CompiledKernel for `job` (a cache hit once it was compiled)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(load_module(job.source, interpreted=False), job.kernel)
    attrs = {(i,): [["tt.divisibility", ALIGN]] for i in job.aligned}
    source = ASTSource(fn, signature=dict(job.signature), constexprs=dict(job.constexprs), attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", parse_target(job.target), 32), options=dict(job.options))


def compile_job(job: CompileJob) -> Binary:
    import json

    constexprs = dict(job.constexprs)
    compiled = triton_compile(job)
    counters.bump("compiles")
    metadata = json.loads(json.dumps(compiled.metadata._asdict(), default=vars))
    resources = cubin_resources(compiled.asm["cubin"], job.kernel)
    return Binary(job.kernel, job.target, compiled.asm["ptx"], compiled.asm["cubin"],
                  compiled.metadata.shared, compiled.metadata.num_warps, constexprs, metadata,
                  resources["registers"], resources["stack_bytes"])


def compile_kernel(source: str, kernel, target: str, config: dict) -> Binary:
    """Compile one kernel of the module `source` for `target` with block sizes `config`
    (constexprs, plus num_warps / num_stages)."""
    return compile_job(kernel_job(source, kernel, target, config))


def compile_parallel(jobs, workers: int = None, pool: "CompilePool" = None) -> list:
    """The Binary of every job, in order; equal jobs are compiled once. With more than one
    job and worker, jobs run in a pool of forked processes (`pool`, if one was started
    ahead), the largest kernels first."""
    jobs = list(jobs)
    unique = list(dict.fromkeys(jobs))
    if pool is None or not pool.parallel:
        workers = min(workers or os.cpu_count() or 1, len(unique))
        if workers <= 1:
            done = {job: compile_job(job) for job in unique}
            return [done[job] for job in jobs]
        for source in {job.source for job in unique}:
            load_module(source, interpreted=False)  # once, here: forked workers inherit it
        with CompilePool(workers) as own:
            return compile_parallel(jobs, pool=own)
    largest_first = sorted(unique, key=_size, reverse=True)
    binaries = pool.map(largest_first)
    counters.bump("compiles", len(binaries))  # compiled in the workers, counted there
    done = dict(zip(largest_first, binaries))
    return [done[job] for job in jobs]


class CompilePool:
    """Worker processes for `compile_parallel`, started and warmed up at once: each pays
    Triton's once-per-process compile start-up (~0.5 s) in the background, overlapping
    whatever the caller does next, such as tracing and lowering the program to compile.
    Workers are forked (cheap: they inherit kgen and Triton, imported) unless this process
    has started CUDA, which a fork must not inherit; then they are spawned (each imports
    kgen, ~2 s). A context manager."""

    def __init__(self, workers: int = None):
        self.workers = workers or os.cpu_count() or 1
        self.parallel = self.workers > 1
        method = "fork" if _can_fork() else "spawn"
        self._pool = (multiprocessing.get_context(method).Pool(self.workers, initializer=warm_up)
                      if self.parallel else None)

    def map(self, jobs: list) -> list:
        if self._pool is None:
            return [compile_job(job) for job in jobs]
        return self._pool.map(compile_job, jobs, chunksize=1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_WARM_UP = """import triton
import triton.language as tl


@triton.jit
def kgen_warm_up(x, n, XBLOCK: tl.constexpr):
    i = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    tl.store(x + i, tl.load(x + i, mask=i < n) + 1.0, mask=i < n)
"""


def warm_up() -> None:
    """Pay Triton's compile start-up in this process: compile a tiny kernel (past Triton's
    cache, which would skip the start-up). Best effort: a real compile reports errors."""
    from triton import knobs
    job = CompileJob(_WARM_UP, "kgen_warm_up", (("x", "*fp32"), ("n", "i32"), ("XBLOCK", "constexpr")),
                     (("XBLOCK", 128),), (("num_warps", 4), ("num_stages", 3)), "sm_80")
    try:
        with knobs.compilation.scope():
            knobs.compilation.always_compile = True
            compile_job(job)
    except Exception:  # noqa: BLE001 (a warm-up that fails costs nothing; the real compile will say why)
        pass


def _size(job: CompileJob) -> int:
    """A guess at a job's compile time: the length of its kernel's source."""
    start = job.source.find(f"def {job.kernel}(")
    end = job.source.find("@triton.jit", start)
    return (end if end >= 0 else len(job.source)) - start


def _can_fork() -> bool:
    """Forking is cheap (the workers inherit kgen and Triton, imported) and safe while
    this process has not started CUDA."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    import torch
    return not torch.cuda.is_initialized()


def compile_program(program, targets=("sm_80", "sm_90"), sizes=None, workers: int = 1) -> list:
    """Every kernel of `program` compiled for every target, with the GPU default config
    for `sizes` (size name -> int; unbound sizes default to 64), by `workers` processes
    (None: one per CPU core)."""
    sizes = dict(sizes or {})
    for node in program.graph.inputs:
        for name in shapes.symbols_of(node.shape):
            sizes.setdefault(name, 64)
    jobs = []
    for kernel in program.kernels:
        config = default_config(kernel, sizes, interpreted=False)
        jobs.extend(kernel_job(program.source, kernel, t, config) for t in targets)
    return compile_parallel(jobs, workers)


# --- registers and spills of a cubin, read without a GPU ------------------------------------------
# ptxas records a kernel's resource usage as attributes of the cubin's ELF section .nv.info:
# (format u8, attribute u8, size u16, payload) records, the per-kernel ones holding
# (symbol index u32, value u32). The same numbers as `cuobjdump --dump-resource-usage`
# (REG, STACK) and the `ptxas -v` log print; Triton fills `n_regs`/`n_spills` only when a
# driver loads the kernel. The stack frame is where ptxas puts spilled registers (kgen's
# kernels have no local arrays or calls), so it is non-zero exactly when the kernel spills.
_EIATTR_FRAME_SIZE, _EIATTR_REGCOUNT = 0x11, 0x2F
_EIFMT_SVAL = 4  # a record with a size and a payload; the others carry two bytes (or none)


def cubin_resources(cubin: bytes, kernel: str) -> dict:
    """{"registers": per thread, "stack_bytes": stack frame per thread} of `kernel` in a
    cubin (a 64-bit little-endian ELF)."""
    import struct

    if cubin[:5] != b"\x7fELF\x02":
        raise KgenError(f"cubin of {kernel}: expected a 64-bit ELF, got bytes starting {cubin[:5]!r}")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    entsize, count, names_index = struct.unpack_from("<HHH", cubin, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * entsize) for i in range(count)]

    def cstring(offset: int) -> str:
        return cubin[offset:cubin.index(b"\0", offset)].decode()

    by_name = {cstring(sections[names_index][4] + s[0]): s for s in sections}
    symtab, strtab = by_name[".symtab"], by_name[".strtab"]
    symbols = [cstring(strtab[4] + struct.unpack_from("<I", cubin, symtab[4] + 24 * i)[0])
               for i in range(symtab[5] // 24)]
    if kernel not in symbols:
        raise KgenError(f"cubin: expected a symbol {kernel!r}, found {', '.join(s for s in symbols if s)}")
    index, values = symbols.index(kernel), {}
    info = by_name[".nv.info"]
    at, end = info[4], info[4] + info[5]
    while at < end:
        fmt, attribute = cubin[at], cubin[at + 1]
        size = struct.unpack_from("<H", cubin, at + 2)[0] if fmt == _EIFMT_SVAL else 0
        if fmt == _EIFMT_SVAL and size == 8:
            symbol, value = struct.unpack_from("<II", cubin, at + 4)
            if symbol == index:
                values[attribute] = value
        at += 4 + size if fmt == _EIFMT_SVAL else (2 if fmt == 1 else 4)
    return {"registers": values.get(_EIATTR_REGCOUNT, 0), "stack_bytes": values.get(_EIATTR_FRAME_SIZE, 0)}
