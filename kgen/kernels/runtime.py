"""The runtime: allocates buffers and launches a compiled program's kernels on torch
tensors, on a CUDA GPU when there is one, otherwise on CPU tensors under Triton's
interpreter."""
from __future__ import annotations

import numpy as np
import torch

from kgen.errors import DTypeError, InputError, KgenError
from kgen.ir import dtypes, shapes
from kgen.kernels import cudagraph, inputs
from kgen.kernels.launch import Launch, dot_operand, plan_launch
from kgen.kernels.launch_config import check_config
from kgen.kernels.loader import interpreting, load_module
from kgen.kernels.splitk import ScratchBuffers
from kgen.lowering.buffers import plan_buffers
from kgen.lowering.fusion import is_in_memory_source


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class FamilyDefaults:
    """A program's config source (`Program(configs=...)`): where its launches on a GPU get
    their configs, and what `Program.tune` does. This one, for a program nobody tunes, gives
    every kernel its config family's default and cannot tune. Whoever builds a program with
    an autotuner hands it the autotuner's source instead (kgen.compiler passes
    kgen.autotune.config_source.TUNED), which reads and fills the autotune cache; kgen.kernels
    itself never imports the autotuner."""

    def config(self, kernel, sizes: dict, target: str, cache) -> dict:
        """The config to launch `kernel` with at `sizes` on `target`; `cache` is the
        program's `tune_cache` (None: the source's own default)."""
        return None  # plan_launch takes the family's default

    def new_cache(self):
        """The cache a first `Program.tune` keeps its picks in."""
        return None

    def tune(self, program, sizes: dict, target: str, tier: str, cache, inputs: dict, workers: int, force: bool,
             progress) -> list:
        """Tune every kernel of `program` at `sizes` on `target`; the results per kernel."""
        raise KgenError("Program.tune: this program was built without an autotuner (its configs are the "
                        "config families' defaults); kgen.compile builds programs that tune")


class Program:
    """A compiled graph: its kernels in launch order, ready to run on torch tensors."""

    def __init__(self, graph, plan, kernels, source: str, device=None, cuda_graphs=None, buffers=None,
                 configs=None):
        self.graph = graph
        self.plan = plan
        self.buffers = buffers if buffers is not None else plan_buffers(plan)
        self.kernels = kernels
        self.source = source
        self.device = torch.device(device) if device is not None else default_device()
        self.interpreted = self.device.type != "cuda"
        self._module = None
        self._constants = {n: torch.as_tensor(n.attrs["value"]).to(self.device).contiguous()  # kernels index it flat
                           for n in graph.nodes if n.op == "constant" and n.shape != ()}
        self._launch_cache = {}
        self._pinned = {}  # kernel name -> the config it launches with (`pin_config`)
        self.scratch = ScratchBuffers(self.device)  # split-K workspaces and counters (kgen.kernels.splitk)
        self.configs = configs if configs is not None else FamilyDefaults()  # on a GPU: where configs come from
        self.tune_cache = None  # on a GPU: the autotune cache configs are read from (None: the default one)
        self.cuda_graphs = cudagraph.enabled(self.device, cuda_graphs)  # replay repeated steps
        self.graphs = cudagraph.GraphCache(self)  # (see kgen/kernels/cudagraph.py)

    @property
    def module(self):
        if self._module is None:
            self._module = load_module(self.source, self.interpreted)
        return self._module

    # --- sizes and buffers -----------------------------------------------------------------
    def bind_sizes(self, tensors: dict) -> dict:
        sizes = {}
        for node in self.graph.inputs:
            shapes.bind_shape(node.shape, tuple(tensors[node].shape), sizes, f"input {node.name!r}")
        return sizes

    def allocate(self, node, sizes: dict) -> torch.Tensor:
        shape = [shapes.evaluate(d, sizes) for d in node.shape]
        return torch.empty(shape, dtype=node.dtype.torch, device=self.device)

    @property
    def target(self):
        """The GPU target this program launches on ("sm_90"), or None on the interpreter."""
        if self.interpreted:
            return None
        major, minor = torch.cuda.get_device_capability(self.device)
        return f"sm_{major}{minor}"

    # --- launching -------------------------------------------------------------------------
    def launch_plan(self, kernel, sizes: dict) -> Launch:
        """How `kernel` launches at `sizes`, planned once per sizes: with its pinned config
        if it has one (`pin_config`); else on the interpreter with the config family's
        default, and on a GPU with the config its config source gives for this device's
        target: from a compiled program's, the config the autotune cache holds
        (`Program.tune`, `kgen tune`), else the default."""
        key = (kernel.name, tuple(sorted(sizes.items())))
        if key not in self._launch_cache:
            config = self._pinned.get(kernel.name)
            if config is None and not self.interpreted:
                config = self.configs.config(kernel, sizes, self.target, self.tune_cache)
            self._launch_cache[key] = plan_launch(kernel, sizes, self.interpreted, config)
        return self._launch_cache[key]

    def pin_config(self, kernel_name: str, config) -> None:
        """Launch kernel `kernel_name` with `config` (its constexprs, and num_warps /
        num_stages for a GPU) at every size from now on, whatever the cache or the default
        say; None unpins it."""
        kernel = next((k for k in self.kernels if k.name == kernel_name), None)
        if kernel is None:
            raise KgenError(f"pin_config: no kernel {kernel_name!r}: expected one of "
                            f"{', '.join(k.name for k in self.kernels)}")
        problem = config is not None and check_config(kernel, config)
        if problem:
            raise KgenError(f"pin_config: kernel {kernel_name}: {problem}")
        if config is None:
            self._pinned.pop(kernel_name, None)
        else:
            self._pinned[kernel_name] = dict(config)
        self._replan()

    def tune(self, inputs: dict, tier: str = "quick", cache=None, workers: int = None, force: bool = False,
             progress=None) -> list:
        """Tune every kernel on this program's GPU at the sizes of `inputs` (graph input, by
        node as `run` takes them or by name -> array or tensor): candidates are compiled,
        checked against the reference and timed, and the fastest are kept in the autotune
        cache, which later launches read (all by the program's config source). Returns the
        tuner's results (TuneResult per kernel)."""
        if self.interpreted:
            raise KgenError("Program.tune times kernels on a CUDA GPU, and this program runs on the CPU "
                            "(Triton's interpreter, which ignores GPU configs). Without a GPU, "
                            "`kgen tune MODEL --target sm_90` ranks configs with the cost model for artifacts.")
        named = {getattr(key, "name", key): value for key, value in inputs.items()}
        missing = [n.name for n in self.graph.inputs if n.name not in named]
        if missing:
            raise InputError(f"Program.tune: expected a value for every graph input, missing {', '.join(missing)}")
        arrays = {n.name: to_numpy(named[n.name]) for n in self.graph.inputs}
        sizes = self.bind_sizes({n: arrays[n.name] for n in self.graph.inputs})
        if cache is not None:
            self.tune_cache = cache
        elif self.tune_cache is None:
            self.tune_cache = self.configs.new_cache()
        results = self.configs.tune(self, sizes, self.target, tier, self.tune_cache, arrays, workers, force,
                                    progress)
        self._replan()
        return results

    def _replan(self) -> None:
        """Plan launches afresh (configs changed), and capture CUDA graphs afresh with them."""
        self._launch_cache.clear()
        self.graphs = cudagraph.GraphCache(self)

    def launch(self, kernel, env: dict, sizes: dict) -> None:
        """Run one kernel; `env` maps nodes to tensors and must hold its inputs and outputs."""
        launch = self.launch_plan(kernel, sizes)
        grid, ints, config = launch.grid, launch.ints, launch.config
        if any(g == 0 for g in grid):
            return
        args = [env[p.node] if p.kind in ("in", "out") else
                self.scratch.get(kernel.name, p.name, launch.scratch[p.name], p.dtype.torch, p.zeroed)
                if p.kind == "scratch" else ints[p.name] for p in kernel.params if p.kind != "constexpr"]
        fn = getattr(self.module, kernel.name)
        if self.interpreted:
            if dot_operand(kernel) is dtypes.bfloat16:
                raise DTypeError(f"{kernel.name}: a bfloat16 dot, which Triton's interpreter computes wrongly "
                                 f"(it holds bfloat16 values as uint16): run it on a CUDA GPU or compile it ahead "
                                 f"of time (kgen.compile_artifact); on the CPU use float16")
            with interpreting():
                fn[grid](*args, **config)
        else:
            fn[grid](*args, **config)

    def run(self, tensors: dict, poison: bool = False, graphs: bool = True, check_finite: bool = None,
            out: dict = None, after_launch=None) -> list:
        """Run every kernel; `tensors` maps each graph input node to a tensor on the
        program's device. Returns the outputs (fresh tensors). With `cuda_graphs` on, a
        repeated step replays a CUDA graph; `graphs=False` launches plainly (capture does).
        `check_finite` (default: $KGEN_CHECK_FINITE) stops at the first kernel that writes a
        NaN or an infinity with a NonFiniteError naming it (kgen.kernels.inputs.FiniteWatch).
        `out` maps output nodes to tensors of their shape to write them into (views of a
        caller's flat buffer: the kernels write there, no copy, where B1 gives the output a
        tensor of its own; otherwise it is copied there at the end); `after_launch(i)` is
        called after the i-th kernel is launched (kgen.nn.distributed starts a gradient
        bucket's all-reduce there). Either launches plainly."""
        watch = None
        if out or after_launch is not None:
            graphs = False
        if inputs.check_finite_on(check_finite):
            watch = inputs.FiniteWatch(self.source, [(self.graph.line(n), tensors[n]) for n in self.graph.inputs])
            graphs = False  # launch by launch, to look after each
        if graphs and self.cuda_graphs and not poison:
            outputs = self.graphs.run(tensors)
            if outputs is not None:
                return outputs
        sizes = self.bind_sizes(tensors)
        env = dict(tensors)
        env.update(self._constants)
        plan = self.buffers
        slots = [self.allocate(first, sizes) for first in plan.slots]
        env.update({node: slots[si].view([shapes.evaluate(d, sizes) for d in node.shape])
                    for node, si in plan.slot_of.items()})
        env.update({node: self.allocate(node, sizes) for node in plan.fresh})
        placed = self._placed(out or {}, env, plan.fresh, sizes)
        if poison:
            for t in slots + [env[n] for n in plan.fresh]:
                if t.dtype.is_floating_point:
                    t.fill_(float("nan"))
        env.update({new: env[old] for new, old in plan.inplace.items()})  # B3: written over old
        for i, kernel in enumerate(self.kernels):
            self.launch(kernel, env, sizes)
            if watch is not None:
                line = self.graph.line
                watch.after(kernel.name, [(line(p.node), env[p.node]) for p in kernel.params if p.kind == "out"],
                            [line(p.node) for p in kernel.params if p.kind == "in"])
            if after_launch is not None:
                after_launch(i)
        for node, tensor in (out or {}).items():
            if node not in placed:
                tensor.copy_(env[node].reshape(tensor.shape))
        return [env[o].clone() if is_in_memory_source(o) else env[o] for o in self.graph.outputs]

    def _placed(self, out: dict, env: dict, fresh, sizes: dict) -> set:
        """Put the caller's `out` tensors in `env` for the outputs that get a fresh tensor
        (B1); the others are copied into theirs after the run. Returns the ones placed."""
        fresh = set(fresh)
        for node, tensor in out.items():
            want = tuple(shapes.evaluate(d, sizes) for d in node.shape)
            if tuple(tensor.shape) != want or tensor.dtype != node.dtype.torch or not tensor.is_contiguous():
                raise KgenError(f"Program.run: out tensor for {self.graph.line(node)} must be a contiguous "
                                f"{node.dtype} tensor of shape {list(want)}, got {tensor.dtype} "
                                f"{list(tensor.shape)}")
        placed = {node for node in out if node in fresh}
        env.update({node: out[node] for node in placed})
        return placed

    def to_tensor(self, value, node) -> torch.Tensor:
        """An argument for input `node` as a tensor on this program's device, converted and
        checked as every path converts inputs (kgen.kernels.inputs), class labels included."""
        what = f"input {node.name!r}"
        tensor = inputs.convert_input(value, what, node.dtype.torch, self.device)
        classes = self.label_classes.get(node.name)
        if classes is not None:
            inputs.check_labels(tensor, what, classes)
        return tensor

    @property
    def label_classes(self) -> dict:
        """Input name -> class count, for the inputs that are class labels (see inputs.label_classes)."""
        if getattr(self, "_label_classes", None) is None:
            self._label_classes = inputs.label_classes(str(self.graph))
        return self._label_classes


def to_numpy(value) -> np.ndarray:
    """An input value as a NumPy array (bfloat16 tensors widened to float32)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return np.asarray(value)
