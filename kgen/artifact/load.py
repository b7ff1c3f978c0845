"""Loading an artifact and running it: `kgen.load(path)`.

Loading reads the manifest and the files it lists (every one checked against its recorded
length and sha256), and builds the launches from the manifest alone: no tracing, lowering,
tuning, and nothing from kgen's IR pipeline is called. Kernels then run one of three ways:

  binary       on a CUDA GPU of a listed target: the stored cubins, loaded directly
               (kgen.artifact.gpu), no compiling;
  jit          on another CUDA GPU: Triton compiles the stored source for it at first
               launch (counted as "triton_compiles");
  interpreter  with no GPU: the stored source on Triton's interpreter, on CPU tensors.

A loaded function artifact keeps its state (the shared variables, as stored) and, like
the kgen.function it came from, replaces each state value by its update after a call."""
from __future__ import annotations

import io
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kgen import counters
from kgen.artifact import archive, gpu
from kgen.artifact import manifest as mf
from kgen.artifact.expr import SizeExpr
from kgen.artifact.rules import LaunchRule
from kgen.errors import InputError, KgenError, ShapeError
from kgen.ir import dtypes
from kgen.kernels import aot
from kgen.kernels.loader import interpreting, load_module
from kgen.kernels.inputs import FiniteWatch, check_finite_on, check_labels, convert_input, label_classes
from kgen.kernels.runtime import to_numpy
from kgen.kernels.splitk import ScratchBuffers, scratch_numel

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


def load(path, device=None) -> "Artifact":
    """The artifact at `path` (its directory, or one archive of it), ready to call.
    `device`: a torch device (default: the CUDA GPU if there is one, else the CPU, where
    kernels run on Triton's interpreter)."""
    directory = archive.unpack(path) if archive.is_archive(path) else Path(path)
    counters.watch_triton()
    manifest = mf.read(directory)
    files = mf.check_files(directory, manifest)
    try:
        return Artifact(directory, manifest, files, device)
    except mf.ArtifactError:
        raise
    except (KgenError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise mf.ArtifactError(f"{directory / mf.MANIFEST}: malformed ({type(e).__name__}: {e})") from None


class Buffer:
    """A buffer of the manifest's plan: kind, symbolic shape, dtype."""

    def __init__(self, key: str, entry: dict):
        self.key, self.kind, self.name = key, entry["kind"], entry.get("name", key)
        if entry["dtype"] not in DTYPES:
            raise KgenError(f"buffer {key}: unknown dtype {entry['dtype']!r}")
        self.dtype_name, self.dtype = entry["dtype"], DTYPES[entry["dtype"]]
        self.dims = [d if isinstance(d, int) else SizeExpr(d, f"the shape of {self.name!r}") for d in entry["shape"]]
        self.slot, self.inplace = entry.get("slot"), entry.get("inplace")  # storage shared (see write.py)
        self.node = entry.get("node", "")  # its line in the graph text
        self.shape_text = "[" + ",".join(str(d) if isinstance(d, int) else d.text for d in self.dims) + "]"

    def shape(self, sizes: dict) -> tuple:
        return tuple(d if isinstance(d, int) else d.evaluate(sizes) for d in self.dims)


class Kernel:
    """One stored kernel: its parameters, launch rule and config per bucket, launched as
    the artifact's mode says."""

    def __init__(self, entry: dict, artifact: "Artifact"):
        self.name = entry["name"]
        self.params = entry["params"]
        self.rule = LaunchRule(entry)
        constexprs = {p["name"] for p in self.params if p["kind"] == "constexpr"}
        self.scratch = {p["name"]: (int(p["numel"]), p["per"], dtypes.dtype(p["dtype"]).torch, bool(p["zeroed"]))
                        for p in self.params if p["kind"] == "scratch"}  # kgen.kernels.splitk
        for name, (_, per, _, _) in self.scratch.items():
            if per is not None and per not in constexprs:
                raise KgenError(f"kernel {self.name} scratch parameter {name} is sized by {per!r}, not a constexpr")
        self.buffers = artifact.scratch
        configs = entry["configs"].get(artifact.config_set)
        if configs is None:
            raise KgenError(f"kernel {self.name} has no configs for {artifact.config_set}")
        self.configs = {c["bucket"]: c for c in configs}
        self.mode = artifact.mode
        self.compiled = {}  # binary id -> CompiledKernel (binary mode)
        if self.mode == "binary":
            for config in configs:
                binary = artifact.manifest["binaries"][config["binary"]]
                if binary["kernel"] != self.name or binary["target"] != artifact.config_set:
                    raise KgenError(f"binary {config['binary']} is not {self.name} for {artifact.config_set}")
                self.compiled[config["binary"]] = gpu.load_cubin(
                    artifact.directory, binary, self.params, _constexprs(config["config"]),
                    artifact.files[binary["cubin"]])
        else:
            self.function = getattr(artifact.module, self.name)

    def plan(self, sizes: dict, bucket: int) -> "Planned":
        """The launch at `sizes` with the config of `bucket`."""
        chosen = self.configs[bucket]
        grid, ints = self.rule.at(sizes, chosen["config"])
        return Planned(grid, ints, chosen["config"], self.compiled.get(chosen.get("binary")))

    def launch(self, planned: "Planned", env: dict) -> None:
        if any(g == 0 for g in planned.grid):
            return
        args = [env[p["buffer"]] if p["kind"] in ("in", "out") else planned.ints[p["name"]] if p["kind"] == "int"
                else self._scratch(p["name"], planned.config) for p in self.params if p["kind"] != "constexpr"]
        constexprs = _constexprs(planned.config)
        if self.mode == "binary":  # every parameter in order; the launcher drops constexprs
            values = iter(args)
            args = [constexprs[p["name"]] if p["kind"] == "constexpr" else next(values) for p in self.params]
            planned.compiled[tuple(planned.grid) + (1,) * (3 - len(planned.grid))](*args)
        elif self.mode == "jit":
            self.function[planned.grid](*args, **planned.config)
        else:
            with interpreting():
                self.function[planned.grid](*args, **constexprs)


    def _scratch(self, name: str, config: dict) -> torch.Tensor:
        numel, per, dtype, zeroed = self.scratch[name]
        return self.buffers.get(self.name, name, scratch_numel(numel, per, config), dtype, zeroed)


@dataclass(frozen=True)
class Planned:
    grid: tuple
    ints: dict
    config: dict
    compiled: object = None  # the CompiledKernel of the config (binary mode)


def _constexprs(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}


class Artifact:
    """A loaded artifact. Call it like the function it was compiled from: with its
    arguments, in order (NumPy arrays or torch tensors); it returns torch tensors, and
    applies state updates as the function did. `run` runs it on explicit inputs instead."""

    def __init__(self, directory: Path, manifest: dict, files: dict, device=None):
        self.directory, self.manifest, self.files = directory, manifest, files
        self.device = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        self.mode, self.config_set = self._mode()
        self.source = files[manifest["source"]].decode()
        self._module = None
        self.buffers = {key: Buffer(key, entry) for key, entry in manifest["buffers"].items()}
        self.slots = [Buffer(f"slot{i}", {**entry, "kind": "slot"})
                      for i, entry in enumerate(manifest.get("slots", []))]
        self.inputs = manifest["inputs"]
        self.outputs = manifest["outputs"]
        self.buckets = manifest["buckets"]
        self._sizes = manifest["sizes"]
        self._constants = {key: self._stored_tensor(manifest["buffers"][key]["file"], b)
                           for key, b in self.buffers.items() if b.kind == "constant"}
        self.state = {i["name"]: self._stored_tensor(i["value"], self.buffers[i["buffer"]])
                      for i in self.inputs if i["role"] == "state"}
        self.scratch = ScratchBuffers(self.device)  # split-K workspaces and counters, kept between calls
        self.kernels = [Kernel(entry, self) for entry in manifest["kernels"]]
        self._check_references()
        self._plans = {}
        self._label_classes = None

    def _check_references(self) -> None:
        """Every buffer a kernel, input or output names exists, and the kernels are in
        launch order (a manifest passing its checksum can still be wrong: written by hand)."""
        if [k.name for k in self.kernels] != self.manifest["launch_order"]:
            raise KgenError("the kernels are not listed in launch order")
        named = [(f"kernel {k.name} parameter {p['name']}", p["buffer"]) for k in self.kernels
                 for p in k.params if p["kind"] in ("in", "out")]
        named += [(f"input {i['name']!r}", i["buffer"]) for i in self.inputs]
        named += [(f"output {o['name']!r}", o["buffer"]) for o in self.outputs]
        named += [(f"output {o['name']!r}", o["updates"]) for o in self.outputs if o["role"] == "update"]
        named += [(f"buffer {b.key}", b.inplace) for b in self.buffers.values() if b.inplace is not None]
        for what, key in named:
            if key not in self.buffers:
                raise KgenError(f"{what} names buffer {key!r}, which the buffer plan does not have")
        for b in self.buffers.values():
            if b.slot is not None and not (isinstance(b.slot, int) and 0 <= b.slot < len(self.slots)
                                           and self.slots[b.slot].dtype == b.dtype):
                raise KgenError(f"buffer {b.key} names slot {b.slot!r}, which the plan does not have "
                                f"(or of another dtype)")
        if not self.buckets or any(set(b) != set(self._sizes) for b in self.buckets):
            raise KgenError(f"every shape bucket must bind the sizes {self._sizes}")

    # --- how it runs ---------------------------------------------------------------------------
    def _mode(self) -> tuple:
        if self.device.type != "cuda":
            return "interpreter", mf.INTERPRETER
        target = gpu.device_target(self.device)
        if target in self.manifest["targets"]:
            return "binary", target
        return "jit", self.manifest["targets"][0]  # its configs; Triton compiles for this GPU

    @property
    def module(self):
        """The stored Triton module (interpreter and jit modes)."""
        if self._module is None:
            self._module = load_module(self.source, interpreted=self.mode == "interpreter")
        return self._module

    def _stored_tensor(self, name: str, buffer: Buffer) -> torch.Tensor:
        try:
            array = np.load(io.BytesIO(self.files[name]), allow_pickle=False)
        except ValueError as e:
            raise mf.ArtifactError(f"{self.directory / name}: not a NumPy array file ({e})") from None
        if array.shape != buffer.shape({}):
            raise mf.ArtifactError(f"{self.directory / name}: shape {list(array.shape)}, expected "
                                   f"{buffer.shape_text} for {buffer.name!r}")
        return torch.from_numpy(array).to(device=self.device, dtype=buffer.dtype).contiguous()

    # --- calling ---------------------------------------------------------------------------------
    @property
    def arguments(self) -> list:
        """The names of the arguments a call takes, in order."""
        return [i["name"] for i in self.inputs if i["role"] == "argument"]

    @property
    def updates(self) -> dict:
        """Output name -> the name of the state input it replaces after each call."""
        names = {i["buffer"]: i["name"] for i in self.inputs}
        return {o["name"]: names[o["updates"]] for o in self.outputs if o["role"] == "update"}

    def __call__(self, *args, check_finite: bool = None):
        """`check_finite` (default: $KGEN_CHECK_FINITE): stop at the first kernel writing a NaN
        or an infinity (a NonFiniteError naming it), leaving the state as it was."""
        arguments = [i for i in self.inputs if i["role"] == "argument"]
        if len(args) != len(arguments):
            raise InputError(f"this artifact takes {len(arguments)} inputs ({', '.join(self.arguments)}), "
                             f"got {len(args)}")
        tensors = {i["buffer"]: self.as_tensor(v, i) for i, v in zip(arguments, args)}
        checking = check_finite_on(check_finite)  # then updates go to copies, kept only if all is finite
        tensors.update({i["buffer"]: self.state[i["name"]].clone() if checking else self.state[i["name"]]
                        for i in self.inputs if i["role"] == "state"})
        results = self._run(tensors, checking)
        names = {i["buffer"]: i["name"] for i in self.inputs}
        outputs = []
        for spec, value in zip(self.outputs, results):
            if spec["role"] == "update":
                self.state[names[spec["updates"]]] = value
            else:
                outputs.append(value)
        if self.manifest.get("single_output"):
            return outputs[0]
        return outputs if outputs else None

    def run(self, inputs: dict, check_finite: bool = None) -> list:
        """Every output (updates included, in manifest order) for `inputs`: name -> value,
        for every argument and any state (the rest of the state as it is now). The state is
        not changed. `check_finite` as for a call."""
        unknown = sorted(set(inputs) - {i["name"] for i in self.inputs})
        if unknown:
            raise InputError(f"no input named {unknown[0]!r}: the inputs are "
                             f"{', '.join(i['name'] for i in self.inputs)}")
        tensors = {}
        for spec in self.inputs:
            if spec["name"] in inputs:
                tensors[spec["buffer"]] = self.as_tensor(inputs[spec["name"]], spec).clone()
            elif spec["role"] == "state":  # a copy: an update may be written over its input
                tensors[spec["buffer"]] = self.state[spec["name"]].clone()
            else:
                raise InputError(f"input {spec['name']!r} is missing")
        return self._run(tensors, check_finite_on(check_finite))

    def get_state(self, name: str) -> np.ndarray:
        return to_numpy(self._state_tensor(name)).copy()

    def set_state(self, name: str, value) -> None:
        self._state_tensor(name)
        spec = next(i for i in self.inputs if i["name"] == name)
        tensor, buffer = self.as_tensor(value, spec), self.buffers[spec["buffer"]]
        if tuple(tensor.shape) != buffer.shape({}):
            raise ShapeError(f"state {name!r}: expected shape {buffer.shape_text}, got {list(tensor.shape)}")
        self.state[name] = tensor.clone()

    def _state_tensor(self, name: str) -> torch.Tensor:
        if name not in self.state:
            raise InputError(f"no state named {name!r}: the state is {', '.join(self.state) or 'empty'}")
        return self.state[name]

    def as_tensor(self, value, spec: dict) -> torch.Tensor:
        """`value` for the input `spec` as a tensor on the artifact's device, converted and
        checked as a kgen.function's arguments are (kgen.kernels.inputs: dtype, device, class
        labels); shapes are checked when the sizes are bound."""
        buffer = self.buffers[spec["buffer"]]
        what = f"input {spec['name']!r}"
        tensor = convert_input(value, what, buffer.dtype, self.device)
        classes = self.label_classes.get(spec["buffer"])
        if classes is not None:
            check_labels(tensor, what, classes)
        if tensor.data_ptr() % aot.ALIGN:  # a view into a storage: the binaries assume aligned buffers
            tensor = tensor.clone()
        return tensor

    @property
    def label_classes(self) -> dict:
        """Input buffer -> class count, for the inputs that are class labels, found in the
        stored graph text as a Program finds them in its own (kgen.kernels.inputs.label_classes)."""
        if self._label_classes is None:
            text = self.files.get(self.manifest.get("graph_text", mf.GRAPH_TEXT), b"").decode(errors="replace")
            by_name = label_classes(text)
            self._label_classes = {key: by_name[b.name] for key, b in self.buffers.items()
                                   if b.kind == "input" and b.name in by_name}
        return self._label_classes

    # --- running ---------------------------------------------------------------------------------
    def bind_sizes(self, tensors: dict) -> dict:
        """The size values the input tensors' shapes give, checked against every input."""
        sizes = {}
        for spec in self.inputs:
            buffer, shape = self.buffers[spec["buffer"]], tuple(tensors[spec["buffer"]].shape)
            if len(shape) == len(buffer.dims):
                for d, n in zip(buffer.dims, shape):
                    if isinstance(d, SizeExpr) and d.text.isidentifier():
                        sizes.setdefault(d.text, n)
        for spec in self.inputs:
            buffer, shape = self.buffers[spec["buffer"]], tuple(tensors[spec["buffer"]].shape)
            if len(shape) != len(buffer.dims) or buffer.shape(sizes) != shape:
                raise ShapeError(f"input {spec['name']!r}: expected shape {buffer.shape_text}"
                                 f"{_bound(sizes)}, got {list(shape)}")
        return sizes

    def bucket(self, sizes: dict) -> int:
        """The smallest shape bucket covering `sizes` (the largest if none does)."""
        for i, bucket in enumerate(self.buckets):
            if all(sizes[name] <= bucket[name] for name in self._sizes):
                return i
        return len(self.buckets) - 1

    def _launches(self, sizes: dict) -> list:
        key = tuple(sorted(sizes.items()))
        if key not in self._plans:
            bucket = self.bucket(sizes)
            self._plans[key] = [k.plan(sizes, bucket) for k in self.kernels]
        return self._plans[key]

    def _run(self, tensors: dict, check_finite: bool = False) -> list:
        sizes = self.bind_sizes(tensors)
        watch = None
        if check_finite:
            watch = FiniteWatch(self.source, [(self.buffers[i["buffer"]].node, tensors[i["buffer"]])
                                              for i in self.inputs])
        env = dict(tensors)
        env.update(self._constants)
        slots = [torch.empty(slot.shape(sizes), dtype=slot.dtype, device=self.device) for slot in self.slots]
        for key, buffer in self.buffers.items():
            if buffer.kind != "allocated":
                continue
            if buffer.slot is not None:
                env[key] = slots[buffer.slot].view(buffer.shape(sizes))
            elif buffer.inplace is None:
                env[key] = torch.empty(buffer.shape(sizes), dtype=buffer.dtype, device=self.device)
        for key, buffer in self.buffers.items():
            if buffer.inplace is not None:  # an update written over the input it replaces
                env[key] = env[buffer.inplace]
        with torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext():
            for kernel, planned in zip(self.kernels, self._launches(sizes)):
                kernel.launch(planned, env)
                if watch is not None:
                    watch.after(kernel.name, [(self.buffers[p["buffer"]].node, env[p["buffer"]])
                                              for p in kernel.params if p["kind"] == "out"],
                                [self.buffers[p["buffer"]].node for p in kernel.params if p["kind"] == "in"])
        return [env[o["buffer"]].clone() if self.buffers[o["buffer"]].kind != "allocated" else env[o["buffer"]]
                for o in self.outputs]

    # --- for the command line and benchmarks ------------------------------------------------------
    def example_inputs(self, sizes: dict = None, seed: int = 0) -> list:
        """Random arguments of the recorded shapes at `sizes` (default: the first bucket):
        floats from a normal distribution, integers 0 or 1 (valid labels of any classifier)."""
        sizes = {**self.buckets[0], **(sizes or {})}
        rng = np.random.default_rng(seed)
        out = []
        for spec in self.inputs:
            if spec["role"] != "argument":
                continue
            buffer = self.buffers[spec["buffer"]]
            shape = buffer.shape(sizes)
            if buffer.dtype.is_floating_point:
                out.append(rng.standard_normal(shape).astype(np.float32))
            elif buffer.dtype == torch.bool:
                out.append(rng.random(shape) < 0.5)
            else:
                out.append(rng.integers(0, 2, size=shape).astype(torch.empty((), dtype=buffer.dtype).numpy().dtype))
        return out

    def __repr__(self):
        return (f"<kgen Artifact {self.directory}: {len(self.kernels)} kernels, "
                f"{self.mode} ({self.config_set}) on {self.device}>")


def _bound(sizes: dict) -> str:
    return f" with {', '.join(f'{k}={v}' for k, v in sorted(sizes.items()))}" if sizes else ""
