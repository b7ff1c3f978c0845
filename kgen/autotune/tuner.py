"""The autotuner: a config per kernel, shape bucket and target, stored in the persistent
cache (kgen.autotune.cache) for launching code and artifacts to read (`config_for`).

Without a GPU of the target (the usual case ahead of time), the offline cost model picks:
the space (kgen.autotune.space) is ranked on estimated resources, the best few are
compiled for their real registers, spills and shared memory (kgen.autotune.facts), and the
best of those by the model wins; the rest of the space stays estimated, which keeps the
compile count small. If none of them compiles, the next few are tried, then the default.

On a GPU of the target, with values to run on (`Bench`): the space is compiled in a pool
of processes, every candidate runs on the reference's values of the kernel's inputs and
is checked against the reference (not only the winner; a candidate that fails to compile,
launch or agree scores as infinitely slow), and is timed with triton.testing.do_bench
(median). Matmul and conv kernels are timed beside torch's library op on equal shapes
(cuBLAS / cuDNN), and the cost model's pick is recorded beside the measured best, so the
model can be calibrated. With several devices (`devices`), each candidate is a `Trial`
(plain data) that a worker process per device runs on its GPU (kgen.autotune.workers);
the results come back in candidate order, so the choice is the one a single GPU makes.

A combo kernel (several independent kernels in one launch) is tuned through its parts,
each a kernel of its own, and their picks are joined. On a GPU the joined config is then
timed and checked as the one launch it is, beside the combo's default config."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from kgen import counters
from kgen.autotune import costmodel, facts as compile_facts, space
from kgen.autotune.cache import TuneCache, format_config
from kgen.autotune.workers import Workers, pinned_device
from kgen.errors import KgenError
from kgen.ir import shapes
from kgen.ir.optable import TABLE
from kgen.ir.reference import evaluate
from kgen.kernels import aot
from kgen.kernels.families import lookup
from kgen.kernels.launch import default_config, kernel_dims, plan_launch
from kgen.kernels.loader import interpreting, load_module
from kgen.kernels.runtime import to_numpy
from kgen.tolerance import TOLERANCE, output_error

COMPILED_PER_ROUND = {"quick": 2, "thorough": 6}  # offline: candidates compiled per kernel per round
ROUNDS = 3  # offline: at most this many rounds of compiles per kernel
# Offline, a kernel is done once one of its compiled candidates can run ("quick"), or once
# the candidate the model ranks first, compiled ones with their facts, is compiled ("thorough").
CHASE_LEADER = {"quick": False, "thorough": True}
TIMED = {"quick": None, "thorough": 48}  # on a GPU: candidates timed per kernel (None: all)


@dataclass
class TuneResult:
    """The decision for one kernel on one target at one set of sizes."""
    kernel: str
    rule: str
    target: str
    sizes: dict
    config: dict
    source: str  # cost model | measured | cache | default (why)
    predicted_us: float = None  # the cost model's time for `config`
    measured_us: float = None
    vendor_us: float = None  # torch's library op on equal shapes (matmul, conv)
    model_config: dict = None  # the cost model's pick, when timings decided
    model_measured_us: float = None  # its measured time
    space: int = 1  # candidates in the space
    compiled: int = 0
    failed: int = 0
    record: dict = field(default_factory=dict)  # what the cache stores


def config_for(kernel, sizes: dict, target: str, cache: TuneCache = None) -> dict:
    """The config to launch `kernel` with at `sizes` on `target`: the tuned one if the
    cache has it, otherwise the family's default."""
    config = (cache if cache is not None else TuneCache()).lookup(kernel, sizes, target)
    return config if config is not None else default_config(kernel, sizes, interpreted=False)


def device_target(devices=None):
    """The target name of this machine's CUDA device ("sm_90"), or of the first of
    `devices` (indices), or None without one."""
    import torch
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(devices[0] if devices else None)
    return f"sm_{major}{minor}"


def _ticker(say, total: int, what: str):
    """A tick() per item of `total` for a progress that counts (has `count`), else None."""
    count = getattr(say, "count", None)
    return count(total, what) if count and total else None


def tune_program(program, sizes: dict, targets, tier: str = "quick", cache: TuneCache = None, inputs=None,
                 workers: int = None, force: bool = False, progress=None, bench=None, devices=None) -> list:
    """Tune every kernel of `program` at `sizes` for each of `targets`; returns a
    TuneResult per kernel and target. Kernels the cache has are not tuned again unless
    `force`. Timings decide on a GPU of the target when `inputs` (graph input name ->
    array) are given, or when a `bench` is; the cost model decides otherwise. Compiles
    run in `workers` processes (None: one per CPU core); timings on each CUDA device of
    `devices` (indices) in parallel, a worker per device, else in this process.
    `progress(message)` hears about long work, and if it has `count(total, what)`, that
    returns a tick() called per candidate compiled or timed (kgen.autotune.progress)."""
    cache = cache if cache is not None else TuneCache()
    say = progress or (lambda message: None)
    with Workers(workers) as compilers:
        return _tune_targets(program, sizes, targets, tier, cache, inputs, compilers, force, say, bench, devices)


def _tune_targets(program, sizes, targets, tier, cache, inputs, workers, force, say, bench, devices) -> list:
    results = []
    for target in targets:
        costmodel.gpu(target)
        todo, hits = [], {}
        for kernel in program.kernels:
            config = None if force else cache.lookup(kernel, sizes, target)
            if config is None:
                todo.append(kernel)
            else:
                hits[kernel.name] = _cached(cache, kernel, sizes, target, config)
        measuring = None
        if todo and (bench is not None or (inputs is not None and device_target(devices) == target)):
            bench = measuring = bench or Bench(program, inputs, sizes, devices=devices)  # one reference run
        where = (f"timed on devices {','.join(map(str, measuring.devices))}" if measuring and measuring.devices
                 else "timed on this GPU" if measuring else "cost model")
        say(f"{target}: {len(hits)} of {len(program.kernels)} kernels cached, tuning {len(todo)} "
            f"({where}, {tier} tier)")
        if measuring:
            try:
                tuned = _tune_measured(program, todo, sizes, target, tier, cache, measuring, workers, say)
            finally:
                measuring.close()
        else:
            tuned = _tune_offline(program, todo, sizes, target, tier, cache, workers, say)
        for kernel in todo:
            result = tuned[kernel.name]
            cache.store(kernel, sizes, target, result.config, result.record)
            counters.bump("tunings")
        results.extend(hits.get(k.name) or tuned[k.name] for k in program.kernels)
    return results


def _cached(cache, kernel, sizes, target, config) -> TuneResult:
    record = cache.record(kernel, sizes, target) or {}
    return TuneResult(kernel.name, kernel.config_rule, target, dict(sizes), config, "cache",
                      record.get("predicted_us"), record.get("measured_us"), record.get("vendor_us"),
                      space=record.get("space", 1), record=record)


# --- without a GPU: the cost model -----------------------------------------------------------------
def _singles(program, kernels) -> tuple:
    """(source, kernels) to tune one by one: the plain kernels and the parts of the combo
    kernels, whose sources are full kernels, appended to the program's source."""
    parts = [part for kernel in kernels for part in kernel.parts]
    return program.source + "".join("\n\n" + part.text for part in parts), [k for k in kernels if not k.parts] + parts


def _tune_offline(program, kernels, sizes, target, tier, cache, workers, say) -> dict:
    """The cost model's pick for each kernel; a combo kernel's parts are tuned as kernels of
    their own and their picks joined (`_combo_result`)."""
    source, singles = _singles(program, kernels)
    results = _tune_offline_kernels(source, singles, sizes, target, tier, cache, workers, say)
    for combo in (k for k in kernels if k.parts):
        results[combo.name] = _combo_result(combo, [results[p.name] for p in combo.parts], sizes, target)
    return results


def _combo_result(combo, parts: list, sizes, target) -> TuneResult:
    """A combo kernel's config from its parts' picks: each under its `p<i>_` prefix, with
    the most warps any part wants and the fewest stages (one launch has one of each). The
    predicted time is the parts' sum, an upper bound (they share the GPU)."""
    config = {f"p{i}_{k}": v for i, r in enumerate(parts) for k, v in r.config.items()
              if k not in ("num_warps", "num_stages")}
    config["num_warps"] = max(r.config.get("num_warps", 4) for r in parts)
    config["num_stages"] = min(r.config.get("num_stages", 3) for r in parts)
    predicted = sum(r.predicted_us or 0.0 for r in parts)
    record = {"source": "parts tuned alone", "sizes": dict(sizes), "predicted_us": predicted,
              "space": sum(r.space for r in parts), "compiled": sum(r.compiled for r in parts),
              "failed": sum(r.failed for r in parts),
              "parts": [{"kernel": r.kernel, "rule": r.rule, "config": r.config, "source": r.source,
                         "predicted_us": r.predicted_us, "measured_us": r.measured_us} for r in parts]}
    return TuneResult(combo.name, combo.config_rule, target, dict(sizes), config, "parts tuned alone",
                      predicted, space=record["space"], compiled=record["compiled"], failed=record["failed"],
                      record=record)


def _tune_offline_kernels(source, kernels, sizes, target, tier, cache, workers, say) -> dict:
    """Rank each kernel's space; compile the best few by estimate (all kernels' compiles in
    one pool) until each has a compiled candidate the model ranks first among them."""
    spaces = {k.name: space.candidates(k, sizes, target, tier) for k in kernels}
    compiled = {k.name: {} for k in kernels}  # config key -> Facts
    open_kernels = [k for k in kernels if len(spaces[k.name]) > 1]
    for round_ in range(ROUNDS):
        requests = []
        for kernel in open_kernels:
            ranking = _ranking(kernel, sizes, target, spaces[kernel.name], compiled[kernel.name])
            fresh = [c for _, c in ranking if costmodel.config_key(c) not in compiled[kernel.name]]
            requests += [(kernel, c) for c in fresh[:COMPILED_PER_ROUND[tier]]]
        if not requests:
            break
        say(f"{target}: compiling {len(requests)} candidates of {len(open_kernels)} kernels"
            + (f" (round {round_ + 1})" if round_ else ""))
        found = compile_facts.gather(source, requests, target, workers, cache.facts,
                                     _ticker(say, len(requests), f"{target} compiles"))
        for (kernel, config), facts in zip(requests, found):
            compiled[kernel.name][costmodel.config_key(config)] = facts
        open_kernels = [k for k in open_kernels
                        if not _settled(k, sizes, target, spaces[k.name], compiled[k.name], CHASE_LEADER[tier])]
    return {k.name: _offline_result(k, sizes, target, tier, spaces[k.name], compiled[k.name]) for k in kernels}


def _ranking(kernel, sizes, target, configs, compiled: dict) -> list:
    resources = {key: costmodel.from_facts(f) for key, f in compiled.items() if f.ok}
    ranking = costmodel.rank(kernel, sizes, target, configs, resources)
    failed = {key for key, f in compiled.items() if not f.ok}
    return [(p, c) for p, c in ranking if costmodel.config_key(c) not in failed]


def _best_compiled(kernel, sizes, target, configs, compiled: dict):
    """The model's best compiled candidate that can run, as (prediction, config), or None."""
    for prediction, config in _ranking(kernel, sizes, target, configs, compiled):
        key = costmodel.config_key(config)
        if key in compiled and compiled[key].ok and math.isfinite(prediction.us):
            return prediction, config
    return None


def _settled(kernel, sizes, target, configs, compiled: dict, chase_leader: bool) -> bool:
    best = _best_compiled(kernel, sizes, target, configs, compiled)
    if best is None or not chase_leader:
        return best is not None
    leader = _ranking(kernel, sizes, target, configs, compiled)[0][1]
    return costmodel.config_key(leader) in compiled


def _offline_result(kernel, sizes, target, tier, configs, compiled) -> TuneResult:
    failed = sum(not f.ok for f in compiled.values())
    if len(configs) == 1:
        best, source = (costmodel.predict(kernel, sizes, target, configs[0]), configs[0]), "default (only candidate)"
    else:
        best, source = _best_compiled(kernel, sizes, target, configs, compiled), "cost model"
        if best is None:
            default = configs[0]
            best, source = (costmodel.predict(kernel, sizes, target, default), default), "default (none compiled)"
    prediction, config = best
    ranking = _ranking(kernel, sizes, target, configs, compiled)
    record = {"source": source, "tier": tier, "sizes": dict(sizes), "dims": kernel_dims(kernel, sizes),
              "predicted_us": prediction.us, "bound": prediction.bound, "programs": prediction.programs,
              "blocks_per_sm": prediction.blocks_per_sm, "waves": prediction.waves,
              "resources": asdict(prediction.resources) if prediction.resources else None,
              "space": len(configs), "compiled": len(compiled), "failed": failed,
              "ranking": _ranking_record(ranking, compiled),
              "failures": [{"config": dict(key), "error": f.error} for key, f in compiled.items() if not f.ok]}
    return TuneResult(kernel.name, kernel.config_rule, target, dict(sizes), dict(config), source,
                      prediction.us, space=len(configs), compiled=len(compiled), failed=failed, record=record)


def _ranking_record(ranking, compiled: dict, shown: int = 8) -> list:
    """The compiled candidates and the best estimated ones, fastest first, for the record."""
    rows = [{"config": c, "predicted_us": p.us, "bound": p.bound, "compiled": costmodel.config_key(c) in compiled}
            for p, c in ranking]
    kept = [r for r in rows if r["compiled"]]
    kept += [r for r in rows if not r["compiled"]][:max(0, shown - len(kept))]
    return sorted(kept, key=lambda r: r["predicted_us"])


# --- on a GPU: timings --------------------------------------------------------------------------------
def compiled_launcher(source: str, kernel, target: str, config: dict):
    """run(grid, args) launching the AOT binary of `kernel` with `config` on the current
    GPU: the same compile as kgen.kernels.aot (a Triton cache hit once the pool built it),
    so what is timed is what an artifact ships. `args` are all parameters, constexprs in place."""

    binary = aot.triton_compile(aot.kernel_job(source, kernel, target, config))

    def run(grid, args):
        binary[tuple(grid) + (1,) * (3 - len(grid))](*args)
    return run


def interpreter_launcher(source: str, kernel, target: str, config: dict):
    """run(grid, args) on Triton's interpreter (CPU tensors): the measuring path without a
    GPU, for checking it; its times say nothing about a GPU."""

    fn = getattr(load_module(source, interpreted=True), kernel.name)
    constexprs = {p.name: config[p.name] for p in kernel.params if p.kind == "constexpr"}
    kept = [i for i, p in enumerate(kernel.params) if p.kind != "constexpr"]

    def run(grid, args):
        with interpreting():
            fn[tuple(grid)](*[args[i] for i in kept], **constexprs)
    return run


def median_us(fn) -> float:
    """The median time of `fn` on the GPU, in microseconds (triton.testing.do_bench)."""
    import triton.testing
    return triton.testing.do_bench(fn, return_mode="median") * 1000.0


@dataclass(frozen=True)
class OutlineParam:
    """What a launcher reads of a kernel parameter, with no IR node (nodes do not pickle)."""
    name: str
    kind: str
    expr: object  # an "int" parameter's sympy expression (aot.aligned_params reads it)
    type: str  # Triton's signature type

    def signature(self) -> str:
        return self.type


@dataclass(frozen=True)
class Outline:
    """What a launcher reads of a kernel (its name and parameters) as plain data, so a
    device worker can launch it: `compiled_launcher`, `interpreter_launcher` and the tests'
    launchers take one in place of the KernelSource."""
    name: str
    params: tuple

    @classmethod
    def of(cls, kernel) -> "Outline":
        return cls(kernel.name, tuple(OutlineParam(p.name, p.kind, p.expr, p.signature()) for p in kernel.params))


@dataclass(frozen=True)
class Trial:
    """One candidate to run, check and time, as plain data: the job of a device worker."""
    source: str  # the module holding the kernel
    kernel: Outline
    target: str
    config: dict
    grid: tuple
    buffers: tuple  # ("in", reference array, torch dtype) | ("out", shape, torch dtype, fill with NaN)
    args: tuple  # per parameter: ("buffer", index) | ("scratch", elements, torch dtype, zeroed) | ("value", v)
    expected: tuple  # (buffer index, reference array) per output
    tolerance: float


def run_trial(trial: Trial, launcher=None, timer=None, device=None) -> tuple:
    """(microseconds, problem) of `trial` on `device` (default: the device this worker is
    pinned to): infinity and why if the candidate fails to compile or launch, or its
    outputs disagree with the reference. `launcher` and `timer`: the GPU's by default."""
    import torch
    launcher, timer = launcher or compiled_launcher, timer or median_us
    device = device or pinned_device()
    try:
        run = launcher(trial.source, trial.kernel, trial.target, trial.config)
        buffers = []
        for spec in trial.buffers:
            if spec[0] == "in":
                buffers.append(torch.from_numpy(np.array(spec[1], order="C")).to(device, spec[2]))
            else:
                buffers.append(torch.empty(spec[1], dtype=spec[2], device=device))
                if spec[3]:
                    buffers[-1].fill_(float("nan"))
        args = [buffers[a[1]] if a[0] == "buffer" else a[1] if a[0] == "value" else
                (torch.zeros if a[3] else torch.empty)(max(1, a[1]), dtype=a[2], device=device)
                for a in trial.args]  # fresh scratch: counters at zero
        run(trial.grid, args)
        error = max((output_error(to_numpy(buffers[i]), want) for i, want in trial.expected), default=0.0)
        if not error <= trial.tolerance:
            return math.inf, f"disagrees with the reference (error {error:.2e} > {trial.tolerance:.0e})"
        return float(timer(lambda: run(trial.grid, args))), ""
    except Exception as e:  # noqa: BLE001 (a failing candidate is scored, not fatal)
        return math.inf, f"{type(e).__name__}: {compile_facts.last_line(e)}"


class Bench:
    """Runs candidates of a program's kernels on the reference's values of their inputs,
    checks every output against the reference, and times them (`launcher` and `timer` are
    the GPU's by default; tests pass the interpreter's). With `devices` (CUDA indices;
    tests pass torch device names), candidates run on all of them at once, a worker
    process per device (kgen.autotune.workers); `launcher` and `timer` must then be
    module-level functions, which pickle."""

    def __init__(self, program, inputs: dict, sizes: dict, launcher=None, timer=None, device=None, devices=None):
        graph = program.graph
        missing = [n.name for n in graph.inputs if n.name not in inputs]
        if missing:
            raise KgenError(f"tuning on a GPU needs a value for every graph input: missing {', '.join(missing)}")
        self.program, self.sizes = program, dict(sizes)
        self.launcher, self.timer = launcher or compiled_launcher, timer or median_us
        self.devices = list(devices) if devices else None
        first = self.devices[0] if self.devices else None
        self.device = device if device is not None else (f"cuda:{first}" if isinstance(first, int) else
                                                         first or program.device)
        self.reference = evaluate(graph, {n.name: inputs[n.name] for n in graph.inputs}, "float64")
        self._workers = None

    def trial(self, kernel, config: dict, target: str, source: str = None) -> Trial:
        """`kernel` with `config` as a Trial on the reference's values. `source`: the module
        holding `kernel` (default: the program's)."""
        launch = plan_launch(kernel, self.sizes, interpreted=False, config=config)
        buffers, index = [], {}
        for node in dict.fromkeys(p.node for p in kernel.params if p.kind in ("in", "out")):
            index[node] = len(buffers)
            if node in kernel.roots:
                shape = tuple(int(d) for d in np.shape(self.reference[node]))
                buffers.append(("out", shape, node.dtype.torch, node.dtype.is_float))
            else:
                buffers.append(("in", np.asarray(self.reference[node]), node.dtype.torch))
        args = tuple(("buffer", index[p.node]) if p.kind in ("in", "out") else
                     ("value", launch.ints[p.name]) if p.kind == "int" else
                     ("scratch", launch.scratch[p.name], p.dtype.torch, p.zeroed) if p.kind == "scratch" else
                     ("value", config[p.name]) for p in kernel.params)
        expected = tuple((index[r], np.asarray(self.reference[r])) for r in kernel.roots if r in index)
        tolerance = max(TOLERANCE[n.dtype] for n in tuple(kernel.roots) + tuple(kernel.reads) + tuple(kernel.nodes))
        return Trial(source or self.program.source, Outline.of(kernel), target, dict(config), tuple(launch.grid),
                     tuple(buffers), args, expected, tolerance)

    def score(self, kernel, config: dict, target: str, source: str = None) -> tuple:
        """(microseconds, problem) of one candidate, in this process (see run_trial)."""
        return self.scores(kernel, [config], target, source, here=True)[0]

    def scores(self, kernel, configs: list, target: str, source: str = None, tick=None, here: bool = False) -> list:
        """(microseconds, problem) per config of `kernel`, on every device at once when
        the bench has several (unless `here`)."""
        trials, results = [], [None] * len(configs)
        for i, config in enumerate(configs):
            try:
                trials.append((i, self.trial(kernel, config, target, source)))
            except Exception as e:  # noqa: BLE001 (a config that cannot even be planned scores as failed)
                results[i] = (math.inf, f"{type(e).__name__}: {compile_facts.last_line(e)}")
        if self.devices and not here:
            if self._workers is None:
                self._workers = Workers(devices=self.devices)
            run = partial(run_trial, launcher=self.launcher, timer=self.timer)
            found = self._workers.map(run, [t for _, t in trials], tick)
        else:
            found = []
            for _, t in trials:
                found.append(run_trial(t, self.launcher, self.timer, self.device))
                if tick:
                    tick()
        for (i, _), result in zip(trials, found):
            results[i] = result
        return results

    def vendor_us(self, kernel):
        """The time of torch's library op for the kernel's matmul/conv on equal shapes, or None."""
        case = vendor_case(kernel, self.sizes, self.device)
        return None if case is None else float(self.timer(case))

    def close(self) -> None:
        """End the device workers (a later `scores` starts them again)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None


def vendor_call(node, operands: list):
    """torch's library op computing `node` from `operands` (the op table's `vendor`)."""
    if node.opdef.vendor is None:
        with_one = ", ".join(sorted(name for name, d in TABLE.items() if d.vendor))
        raise KgenError(f"no library op for {node.op!r}: expected one of {with_one}")
    return node.opdef.vendor(node, operands)


def vendor_case(kernel, sizes: dict, device):
    """A call of torch's library op on random operands shaped like the kernel's one
    matmul/conv (its one node with a `vendor` call), or None (other families, or several
    such nodes)."""
    import torch
    nodes = [n for n in kernel.nodes if n.opdef.vendor]
    if not lookup(kernel.config_rule).gemm or len(nodes) != 1:
        return None
    node = nodes[0]
    operands = [torch.randn([shapes.evaluate(d, sizes) for d in i.shape], device=device).to(i.dtype.torch)
                for i in node.inputs]
    return lambda: vendor_call(node, operands)


def _tune_measured(program, kernels, sizes, target, tier, cache, bench, workers, say) -> dict:
    """The measured best of each kernel. A combo kernel's parts are timed as kernels of
    their own and their picks joined (`_combo_result`); the joined config is then timed and
    checked as the launch it is, beside the combo's default config, and the faster wins."""
    source, singles = _singles(program, kernels)
    results = {k.name: _tune_measured_kernel(source, k, sizes, target, tier, cache, bench, workers, say)
               for k in singles}
    for combo in (k for k in kernels if k.parts):
        joined = _combo_result(combo, [results[p.name] for p in combo.parts], sizes, target)
        results[combo.name] = _measured_combo(combo, joined, sizes, target, bench, say)
    return results


def _measured_combo(combo, joined: TuneResult, sizes, target, bench, say) -> TuneResult:
    default = default_config(combo, sizes, interpreted=False)
    candidates = [joined.config] + ([default] if default != joined.config else [])
    say(f"{target}: {combo.name}: timing the parts' joined picks" + (" and the default" if len(candidates) > 1 else ""))
    times = [(*found, config) for found, config in zip(bench.scores(combo, candidates, target), candidates)]
    best_us, _, best = min(times, key=lambda t: t[0])
    source = "measured, parts joined" if best is joined.config else "measured, the default"
    if not math.isfinite(best_us):
        best, source = default, "default (no candidate ran correctly)"
    record = dict(joined.record, source=source, measured_us=best_us, device=_device_name(),
                  timings=[{"config": c, "us": us, "problem": problem} for us, problem, c in times],
                  when=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return TuneResult(combo.name, combo.config_rule, target, dict(sizes), dict(best), source, joined.predicted_us,
                      best_us, space=joined.space, compiled=joined.compiled + len(candidates),
                      failed=joined.failed + sum(not math.isfinite(us) for us, _, _ in times), record=record)


def _tune_measured_kernel(source, kernel, sizes, target, tier, cache, bench, workers, say) -> TuneResult:
    configs = space.candidates(kernel, sizes, target, tier)
    ranking = costmodel.rank(kernel, sizes, target, configs)
    timed = [c for _, c in ranking[:TIMED[tier]]] if TIMED[tier] else list(configs)
    if configs[0] not in timed:
        timed.append(configs[0])
    say(f"{target}: {kernel.name}: compiling and timing {len(timed)} candidates")
    found = compile_facts.gather(source, [(kernel, c) for c in timed], target, workers, cache.facts)
    ran = [c for c, facts in zip(timed, found) if facts.ok]
    scored = iter(bench.scores(kernel, ran, target, source, _ticker(say, len(ran), f"{kernel.name} timings")))
    times = [(*(next(scored) if facts.ok else (math.inf, facts.error)), config) for config, facts in zip(timed, found)]
    resources = {costmodel.config_key(c): costmodel.from_facts(f) for c, f in zip(timed, found) if f.ok}
    model = costmodel.rank(kernel, sizes, target, timed, resources)[0]
    best_us, _, best = min(times, key=lambda t: t[0])
    source = "measured"
    if not math.isfinite(best_us):
        best, source = configs[0], "default (no candidate ran correctly)"
    measured = {costmodel.config_key(c): us for us, _, c in times}
    vendor = bench.vendor_us(kernel)
    predicted = costmodel.predict(kernel, sizes, target, best, resources.get(costmodel.config_key(best)))
    failed = sum(not math.isfinite(us) for us, _, _ in times)
    record = {"source": source, "tier": tier, "sizes": dict(sizes), "dims": kernel_dims(kernel, sizes),
              "measured_us": best_us, "predicted_us": predicted.us, "vendor_us": vendor,
              "vs_vendor": best_us / vendor if vendor and math.isfinite(best_us) else None,
              "model_pick": model[1], "model_pick_predicted_us": model[0].us,
              "model_pick_measured_us": measured.get(costmodel.config_key(model[1])),
              "space": len(configs), "timed": len(timed), "failed": failed,
              "timings": [{"config": c, "us": us, "problem": problem} for us, problem, c in times],
              "device": _device_name(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return TuneResult(kernel.name, kernel.config_rule, target, dict(sizes), dict(best), source, predicted.us,
                      best_us, vendor, dict(model[1]), record["model_pick_measured_us"], len(configs),
                      len(timed), failed, record)


def _device_name() -> str:
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (interpreter)"


# --- reports ----------------------------------------------------------------------------------------
def format_results(results: list, title: str = "") -> str:
    """A table per target: the pick, predicted and measured time, and what decided."""
    lines = []
    for target in dict.fromkeys(r.target for r in results):
        rows = [r for r in results if r.target == target]
        lines.append(f"{title}{' ' if title else ''}on {target} ({costmodel.gpu(target).name})")
        lines.append(f"  {'kernel':<22} {'rule':<12} {'predicted':>10} {'measured':>10} {'vendor':>9}  "
                     f"{'decided by':<30} config")
        for r in rows:
            decided = r.source if r.source != "cost model" else f"cost model ({r.compiled} of {r.space} compiled)"
            if r.source == "measured":
                decided = f"timing ({r.compiled} of {r.space} timed)"
            lines.append(f"  {r.kernel:<22} {r.rule:<12} {_us(r.predicted_us):>10} {_us(r.measured_us):>10} "
                         f"{_us(r.vendor_us):>9}  {decided:<30} {format_config(r.config)}")
    return "\n".join(lines)


def _us(value) -> str:
    if value is None:
        return "-"
    return "failed" if not math.isfinite(value) else f"{value:.1f} us"
