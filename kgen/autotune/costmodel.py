"""The offline cost model: a predicted time for one launch of a kernel with one config on a
named GPU, with no GPU at hand. It ranks the candidates of a config space (kgen.autotune.space)
so the tuner (kgen.autotune.tuner) can pick one when nothing can be timed.

What it uses, per candidate:

  resources   registers and spilled bytes per thread and shared memory per block: from the
              AOT compile where there is one (kgen.autotune.facts), otherwise estimated
              (`estimate_resources`: each kernel family's fit to compiles of its template with
              Triton 3.9, kgen.kernels.families)
  occupancy   blocks resident per SM, limited by threads, registers (allocated in 256-register
              units per warp), shared memory (plus 1 KB reserved per block) and the block limit
  waves       programs run in waves of SMs x blocks-per-SM; the last, partial wave costs
              nearly a whole one (wave quantization), and fewer programs than SMs leave SMs idle
  loops       a family's `steps` per program (a persistent scan's time loop:
              one memory latency per step, the steps being a dependent chain) and, for a
              family with `rereads`, the bytes it reads again from L2 (a persistent scan's
              loop-invariant weights, each step)
  roofline    per wave, the larger of compute time (flops at the peak of the unit the kernel
              uses: FMA for float32 dots, which kgen computes exactly, tensor cores for
              half-precision ones; scaled by how well the tile and the resident warps feed it),
              memory time (compulsory bytes at HBM bandwidth, GEMM tile re-reads and spills at
              L2 bandwidth, the re-reads at HBM bandwidth when the operands overflow L2 and the
              tiles are not walked in groups (GROUP_M 1); an SM draws bandwidth only as fast as its bytes in flight allow,
              Little's law) and a latency floor (one memory latency per loop step that
              pipelining does not overlap); a split-K GEMM adds its tail, the tile's last
              program reading every slice's partial alone

Every constant below is a stated guess or a datasheet figure; the tuner records the model's
pick beside the measured best whenever a GPU times the same candidates, so the model can be
calibrated against them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from kgen.errors import KgenError
from kgen.ir import shapes
from kgen.kernels.families import lookup
from kgen.kernels.launch import dot_operand, half_dot, kernel_dims, plan_launch
from kgen.lowering.stats import node_flops


@dataclass(frozen=True)
class GPU:
    """What the model knows of a target: the SM limits that decide occupancy and the
    rates of the roofline (datasheet figures, dense; latency and L2 rate approximate)."""
    name: str
    sms: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    registers_per_sm: int
    max_registers_per_thread: int
    shared_per_sm: int  # bytes an SM can give its blocks
    max_shared_per_block: int  # bytes, the opt-in maximum Triton checks at load
    hbm_gbps: float
    l2_gbps: float
    fp32_tflops: float  # FMA on CUDA cores
    tf32_tflops: float  # tensor cores (unused today: kgen's float32 dots are exact, "ieee")
    fp16_tflops: float  # tensor cores, float32 accumulation
    memory_latency_ns: float
    l2_bytes: int  # L2 cache size


GPUS = {
    "sm_80": GPU("A100 SXM4 80GB", sms=108, max_threads_per_sm=2048, max_blocks_per_sm=32,
                 registers_per_sm=65536, max_registers_per_thread=255, shared_per_sm=167936,
                 max_shared_per_block=166912, hbm_gbps=2039, l2_gbps=4800, fp32_tflops=19.5,
                 tf32_tflops=156, fp16_tflops=312, memory_latency_ns=550, l2_bytes=40 << 20),
    "sm_90": GPU("H100 SXM5 80GB", sms=132, max_threads_per_sm=2048, max_blocks_per_sm=32,
                 registers_per_sm=65536, max_registers_per_thread=255, shared_per_sm=233472,
                 max_shared_per_block=232448, hbm_gbps=3352, l2_gbps=7000, fp32_tflops=66.9,
                 tf32_tflops=494.7, fp16_tflops=989.4, memory_latency_ns=600, l2_bytes=50 << 20),
}

LAUNCH_US = 2.5  # host launch plus kernel start, paid once per launch
SHARED_RESERVED_PER_BLOCK = 1024  # bytes the driver keeps per resident block (sm_80 and later)
REGISTER_UNIT = 256  # registers are allocated per warp in units of this many
WARPS_TO_HIDE_LATENCY = 8  # resident warps per SM that keep its units busy
SM_BANDWIDTH_SHARE = 4.0  # an SM draws at most this multiple of its even share of HBM bandwidth
TILE_FOR_FULL_FMA = 64  # float32 accumulators per thread (8x8) that make FMA dots compute-bound
TILE_FOR_FULL_MMA = 128 * 128  # output tile at which tensor-core dots reach their peak


def gpu(target: str) -> GPU:
    if target not in GPUS:
        raise KgenError(f"the cost model has no facts for target {target!r}: expected one of "
                        f"{', '.join(GPUS)}")
    return GPUS[target]


# --- the work of a launch ----------------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """Bytes and flops of a kernel at concrete sizes, and what kind of dot it computes."""
    bytes: int  # compulsory: each buffer read once, each output written once
    flops: int
    loads: int  # input buffers
    dot: str = None  # "fp32" (exact FMA products), "fp16" (tensor cores) or None
    dot_bytes: int = 4  # size of a dot operand element
    dims: tuple = ()  # the kernel's named extents at these sizes, as (name, value) pairs


def _buffer_bytes(node, sizes) -> int:
    return shapes.evaluate(shapes.numel(node.shape), sizes) * max(1, node.dtype.bits // 8)


def kernel_work(kernel, sizes: dict) -> Work:
    """The Work of `kernel` at `sizes`, counted as kgen.lowering.stats counts it."""
    operand = dot_operand(kernel)
    return Work(bytes=sum(_buffer_bytes(n, sizes) for n in tuple(kernel.reads) + tuple(kernel.roots)),
                flops=sum(node_flops(n, sizes) for n in kernel.nodes),
                loads=len(kernel.reads),
                dot=None if operand is None else ("fp16" if half_dot(kernel) else "fp32"),
                dot_bytes=max(1, operand.bits // 8) if operand is not None else 4,
                dims=tuple(sorted(kernel_dims(kernel, sizes).items())))


# --- resources: compiled, or estimated ---------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    registers: int  # per thread, at most the target's maximum
    spill_bytes: int  # per thread
    shared_bytes: int  # per block
    demand: int  # registers the kernel wants per thread (above the maximum: spills)
    compiled: bool  # from a compile (facts) or estimated


def from_facts(facts) -> Resources:
    """Resources of a compiled candidate (kgen.autotune.facts.Facts)."""
    return Resources(facts.registers, facts.spill_bytes, facts.shared_bytes,
                     facts.registers + facts.spill_bytes // 4, True)


def estimate_resources(kernel, config: dict, work: Work, target: str) -> Resources:
    """Registers and shared memory a config will use, before compiling it: the kernel
    family's rough fit to compiles of its template with Triton 3.9 for sm_80/sm_90 (see each
    family's `resources`), good to tens of percent, enough to rank candidates and to prune
    hopeless ones (`rank` rescales them by the compiled candidates of the same kernel).
    Above the target's maximum, registers spill (4 bytes each)."""
    demand, shared = lookup(kernel.config_rule).resources(config, work)
    demand = int(math.ceil(demand))
    most = gpu(target).max_registers_per_thread
    return Resources(min(demand, most), 4 * max(0, demand - most), int(shared), demand, False)


def blocks_per_sm(target: str, num_warps: int, resources: Resources) -> int:
    """Blocks of `num_warps` warps resident on one SM (0: the block does not fit)."""
    g = gpu(target)
    threads = 32 * num_warps
    per_warp = -(-max(1, resources.registers) * 32 // REGISTER_UNIT) * REGISTER_UNIT
    by_registers = (g.registers_per_sm // per_warp) // num_warps
    by_shared = g.shared_per_sm // (resources.shared_bytes + SHARED_RESERVED_PER_BLOCK)
    return max(0, min(g.max_blocks_per_sm, g.max_threads_per_sm // threads, by_registers, by_shared))


def cannot_run(target: str, num_warps: int, resources: Resources) -> str:
    """Why a block of this shape cannot launch on `target` ("" if it can)."""
    g = gpu(target)
    if 32 * num_warps > 1024:
        return f"{32 * num_warps} threads per block, the limit is 1024"
    if resources.shared_bytes > g.max_shared_per_block:
        return f"{resources.shared_bytes} B of shared memory per block, the limit is {g.max_shared_per_block}"
    if blocks_per_sm(target, num_warps, resources) == 0:
        return "a block does not fit on an SM"
    return ""


# --- the prediction -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    us: float  # one launch, microseconds; inf when the config cannot run
    programs: int = 0
    blocks_per_sm: int = 0
    waves: int = 0
    bound: str = ""  # compute | memory | latency | launch, or why it cannot run
    resources: Resources = None
    parts: dict = field(default_factory=dict)  # per-wave times in us, for reports


@dataclass(frozen=True)
class _Loop:
    """The loop of one program: steps, loads in flight (pipelining depth), extra bytes
    read again (GEMM tiles read by other programs too: through L2, or from HBM when the
    operands overflow L2 and the tiles are not walked in groups) and how well the tile
    feeds the arithmetic units (0..1)."""
    steps: int = 1
    depth: int = 1
    l2_bytes: float = 0.0
    tile_efficiency: float = 1.0
    rereads_from_hbm: bool = False


def _loop(kernel, sizes: dict, config: dict, work: Work, target: str, programs: int) -> _Loop:
    family, dims = lookup(kernel.config_rule), kernel_dims(kernel, sizes)
    threads = 32 * config.get("num_warps", 4)
    steps = family.steps(dims, config)
    if family.gemm:
        m, n, k = dims["m"], dims["n"], dims["k"]
        bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
        split = config.get("SPLIT_K", 1)  # split-K (kgen.kernels.splitk): slices of K per tile
        tiles_m, tiles_n = -(-m // bm), -(-n // bn)
        batch = max(1, programs // max(1, tiles_m * tiles_n * split))
        rereads = batch * work.dot_bytes * (m * k * (tiles_n - 1) + k * n * (tiles_m - 1))
        if split > 1:  # each slice's partial tile written and read back (from L2), plus its counter
            rereads += 2 * split * (m * n * 4 + tiles_m * tiles_n * 4)
        if work.dot == "fp16":
            efficiency = min(1.0, math.sqrt(bm * bn / TILE_FOR_FULL_MMA))
            if target == "sm_90" and not (bm >= 64 and config.get("num_warps", 4) % 4 == 0):
                efficiency *= 0.6  # no warpgroup MMA (wgmma): Hopper's older mma.sync path
        else:
            efficiency = min(1.0, math.sqrt(bm * bn / threads / TILE_FOR_FULL_FMA))
        overflow = config.get("GROUP_M", 1) == 1 and (m * k + k * n) * work.dot_bytes > gpu(target).l2_bytes
        return _Loop(steps, max(1, config.get("num_stages", 3) - 1), rereads, efficiency, overflow)
    if family.rereads:  # a persistent loop: its weights again every step, from L2
        return _Loop(steps=steps, l2_bytes=family.rereads(dims, config))
    return _Loop(steps=steps)


def predict(kernel, sizes: dict, target: str, config: dict, resources: Resources = None,
            work: Work = None) -> Prediction:
    """The predicted time of one launch of `kernel` at `sizes` with `config` on `target`;
    `resources` from a compile if there is one, else estimated."""
    g = gpu(target)
    work = work or kernel_work(kernel, sizes)
    warps = config.get("num_warps", 4)
    resources = resources or estimate_resources(kernel, config, work, target)
    launch = plan_launch(kernel, sizes, interpreted=False, config=config)
    programs = math.prod(launch.grid)
    if programs == 0:
        return Prediction(LAUNCH_US, 0, 0, 0, "launch", resources)
    problem = cannot_run(target, warps, resources)
    if problem:
        return Prediction(math.inf, programs, 0, 0, problem, resources)
    resident = blocks_per_sm(target, warps, resources)
    loop = _loop(kernel, sizes, config, work, target, programs)
    threads = 32 * warps
    flops = work.flops / programs
    rereads = loop.l2_bytes / programs
    hbm = work.bytes / programs + (rereads if loop.rereads_from_hbm else 0.0)
    spills = 2 * resources.spill_bytes * threads * loop.steps  # stored and loaded again each step
    l2 = (0.0 if loop.rereads_from_hbm else rereads) + spills
    in_flight = (work.bytes / programs + rereads) / loop.steps * loop.depth
    peak = {"fp16": g.fp16_tflops, "fp32": g.fp32_tflops}.get(work.dot, g.fp32_tflops) * 1e12 / g.sms
    latency = g.memory_latency_ns * 1e-9

    def wave(per_sm: int, sms: int) -> dict:
        hide = min(1.0, per_sm * warps / WARPS_TO_HIDE_LATENCY)
        sm_rate = min(SM_BANDWIDTH_SHARE * g.hbm_gbps * 1e9 / g.sms, per_sm * in_flight / latency)
        hbm_rate = min(g.hbm_gbps * 1e9, sms * sm_rate)
        l2_rate = g.l2_gbps * 1e9 * min(1.0, SM_BANDWIDTH_SHARE * sms / g.sms)
        return {"compute": per_sm * flops / (peak * loop.tile_efficiency * hide),
                "memory": per_sm * sms * (hbm / hbm_rate + l2 / l2_rate),
                "latency": latency * (1 + loop.steps / loop.depth)}

    full, rest = divmod(programs, g.sms * resident)
    waves = [(full, wave(resident, g.sms))] + ([(1, wave(-(-rest // g.sms), min(rest, g.sms)))] if rest else [])
    seconds = sum(count * max(parts.values()) for count, parts in waves if count)
    split = config.get("SPLIT_K", 1)
    if split > 1:  # split-K's tail: a tile's last program reads every slice's partial tile alone
        tile_bytes = 4 * config["BLOCK_M"] * config["BLOCK_N"]
        seconds += split * tile_bytes / (SM_BANDWIDTH_SHARE * g.l2_gbps * 1e9 / g.sms)
    slowest = max(waves, key=lambda w: max(w[1].values()) if w[0] else -1)[1]
    bound = max(slowest, key=slowest.get)
    return Prediction(LAUNCH_US + seconds * 1e6, programs, resident, full + (1 if rest else 0), bound,
                      resources, {k: round(v * 1e6, 3) for k, v in slowest.items()})


def config_key(config: dict) -> tuple:
    """A config as a hashable value (for dicts keyed by config)."""
    return tuple(sorted(config.items()))


def rank(kernel, sizes: dict, target: str, configs: list, resources: dict = None) -> list:
    """(prediction, config) for every config, fastest first; `resources` maps a config's
    `config_key` to its compiled Resources. The other configs are estimated, their register
    demand scaled by how far the estimate was off for this kernel's compiled configs (the
    median ratio), so compiled and estimated candidates compare fairly. Ties go to the
    earlier config (a space lists the default first)."""
    resources = dict(resources or {})
    work = kernel_work(kernel, sizes)
    estimates = {config_key(c): estimate_resources(kernel, c, work, target) for c in configs}
    ratios = sorted(r.demand / estimates[k].demand for k, r in resources.items() if k in estimates)
    scale = ratios[len(ratios) // 2] if ratios else 1.0
    most = gpu(target).max_registers_per_thread
    for key, estimate in estimates.items():
        if key not in resources:
            demand = int(math.ceil(estimate.demand * scale))
            resources[key] = Resources(min(demand, most), 4 * max(0, demand - most), estimate.shared_bytes,
                                       demand, False)
    predictions = [(predict(kernel, sizes, target, c, resources[config_key(c)], work), i, c)
                   for i, c in enumerate(configs)]
    predictions.sort(key=lambda t: (t[0].us, t[1]))
    return [(p, c) for p, _, c in predictions]
