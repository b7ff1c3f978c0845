"""The runtime: allocates buffers and launches a compiled program's kernels on torch
tensors, on a CUDA GPU when there is one, otherwise on CPU tensors under Triton's
interpreter."""
from __future__ import annotations

import numpy as np
import torch

from kgen.errors import InputError
from kgen.ir import shapes
from kgen.kernels import cudagraph
from kgen.kernels.launch import plan_launch
from kgen.kernels.loader import interpreting, load_module
from kgen.lowering.buffers import plan_buffers
from kgen.lowering.fusion import is_in_memory_source


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Program:
    """A compiled graph: its kernels in launch order, ready to run on torch tensors."""

    def __init__(self, graph, plan, kernels, source: str, device=None, cuda_graphs=None, buffers=None):
        self.graph = graph
        self.plan = plan
        self.buffers = buffers if buffers is not None else plan_buffers(plan)
        self.kernels = kernels
        self.source = source
        self.device = torch.device(device) if device is not None else default_device()
        self.interpreted = self.device.type != "cuda"
        self._module = None
        self._constants = {n: torch.as_tensor(n.attrs["value"]).to(self.device)
                           for n in graph.nodes if n.op == "constant" and n.shape != ()}
        self._launch_cache = {}
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

    # --- launching -------------------------------------------------------------------------
    def launch(self, kernel, env: dict, sizes: dict) -> None:
        """Run one kernel; `env` maps nodes to tensors and must hold its inputs and outputs."""
        key = (kernel.name, tuple(sorted(sizes.items())))
        if key not in self._launch_cache:
            self._launch_cache[key] = plan_launch(kernel, sizes, self.interpreted)
        launch = self._launch_cache[key]
        grid, ints, config = launch.grid, launch.ints, launch.config
        if any(g == 0 for g in grid):
            return
        args = [env[p.node] if p.kind in ("in", "out") else ints[p.name]
                for p in kernel.params if p.kind != "constexpr"]
        fn = getattr(self.module, kernel.name)
        if self.interpreted:
            with interpreting():
                fn[grid](*args, **config)
        else:
            fn[grid](*args, **config)

    def run(self, tensors: dict, poison: bool = False, graphs: bool = True) -> list:
        """Run every kernel; `tensors` maps each graph input node to a tensor on the
        program's device. Returns the outputs (fresh tensors). With `cuda_graphs` on, a
        repeated step replays a CUDA graph; `graphs=False` launches plainly (capture does)."""
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
        if poison:
            for t in slots + [env[n] for n in plan.fresh]:
                if t.dtype.is_floating_point:
                    t.fill_(float("nan"))
        env.update({new: env[old] for new, old in plan.inplace.items()})  # B3: written over old
        for kernel in self.kernels:
            self.launch(kernel, env, sizes)
        return [env[o].clone() if is_in_memory_source(o) else env[o] for o in self.graph.outputs]

    def to_tensor(self, value, node) -> torch.Tensor:
        """An argument for input `node` as a tensor on this program's device (checked)."""
        what = f"input {node.name!r}"
        if isinstance(value, torch.Tensor):
            tensor = value
        else:
            try:
                array = np.asarray(value)
            except Exception as e:
                raise InputError(f"{what}: expected an array or tensor, got {type(value).__name__}") from e
            if array.dtype == object:
                raise InputError(f"{what}: expected a numeric array, got {type(value).__name__}")
            if array.ndim == 0 and node.ndim == 0 and array.dtype.kind in "fiub":
                array = array.astype(node.dtype.numpy)  # a Python scalar for a 0-d input
            if array.dtype.kind == "f" and array.dtype.itemsize == 8 and node.dtype.is_float and array.ndim:
                raise InputError(f"{what}: expected {node.dtype}, got float64 (convert with "
                                 f".astype(np.float32) first)")
            tensor = torch.from_numpy(np.array(array, order="C"))
            if node.dtype.torch == torch.bfloat16 and tensor.dtype == torch.float32:
                tensor = tensor.to(torch.bfloat16)  # NumPy has no bfloat16: round float32 values
        if tensor.dtype != node.dtype.torch:
            raise InputError(f"{what}: expected dtype {node.dtype}, got {str(tensor.dtype).replace('torch.', '')}")
        return tensor.to(self.device).contiguous()
