"""CUDA graph capture of a compiled step, so that a small model at a small batch pays
about one launch per step instead of one per kernel (issue 4, part 5).

A Program's launches depend only on its input shapes (sizes become grids and int
arguments) and on its buffers' addresses, so for one set of input shapes the whole step can
be recorded once with torch.cuda.CUDAGraph and replayed. `GraphCache.run` does that:

- the first call with a set of shapes runs plainly (Triton compiles the kernels then), so a
  shape set seen only once (a one-off batch size) is never captured;
- the second call captures: the inputs are copied into static buffers, one plain run on
  those buffers on a side stream warms up (so no kernel is compiled or loaded while
  capturing: the buffers the capture sees are aligned alike), then the same run is
  recorded and replayed. Steps are pure functions of their inputs (updates are outputs),
  so running one twice changes nothing. Written buffers come from the graph's private
  memory pool and live as long as the graph;
- every later call copies its inputs into the static buffers, replays, and returns copies
  of the static outputs: about three launches (a multi-tensor copy per dtype, the replay,
  one copy out) instead of one per kernel. The copies out matter: Function hands update
  outputs on as the new shared values, and a caller may keep last step's loss, so nothing
  returned may be overwritten by the next replay.

Capture is skipped (the caller launches plainly) where it is not possible or not safe: a
device that is not CUDA (the interpreter), a stream that is already being captured (the
user's own graph records kgen's launches instead), an input on another device, a program
with no kernels, poisoned runs (kgen.check), and, once a capture has failed, every later
call of that program (with one warning). A few shape sets are kept, least recently used
out first.

On by default on CUDA; KGEN_CUDA_GRAPHS=0 (or off/false/no) turns it off for programs
created afterwards, and `Program(..., cuda_graphs=False)` or `program.cuda_graphs = False`
turns it off for one program. Replays are ordered on the current stream like plain
launches; a GraphCache is not meant to be shared between threads.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import torch

ENV = "KGEN_CUDA_GRAPHS"
_OFF = ("0", "off", "false", "no")


def enabled(device, option=None) -> bool:
    """Whether a program on `device` replays CUDA graphs: never off CUDA; else `option`
    when given (True/False), else on unless the environment switch says off."""
    if torch.device(device).type != "cuda":
        return False
    if option is not None:
        return bool(option)
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


class CudaBackend:
    """The torch.cuda calls capture needs, in one place so tests can pass a fake."""

    def available(self, device) -> bool:
        return torch.device(device).type == "cuda" and torch.cuda.is_available()

    def is_capturing(self) -> bool:
        return torch.cuda.is_current_stream_capturing()

    def warm_up(self, step) -> None:
        """Run `step` once on a side stream, as torch asks before a capture."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()
        torch.cuda.current_stream().wait_stream(stream)

    def capture(self, step):
        """Record `step`; returns (its outputs, a function that replays it). The outputs
        are static: each replay rewrites them in place."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = step()
        return outputs, graph.replay


class Captured:
    """One recorded step: its static input buffers, static outputs and replay."""

    def __init__(self, inputs: dict, outputs: list, replay):
        self.inputs = inputs  # graph input node -> static buffer the replay reads
        self.outputs = outputs  # static tensors each replay rewrites
        self.replay = replay


class GraphCache:
    """The CUDA graphs of one program, one per set of input shapes (see the module doc).

    `run(tensors)` returns the step's outputs, or None when the caller must launch the
    kernels itself (first sight of these shapes, capture impossible, or disabled)."""

    def __init__(self, program, backend=None, capacity: int = 4, warmup_calls: int = 1):
        self.program = program
        self.backend = backend or CudaBackend()
        self.capacity = max(1, capacity)
        self.warmup_calls = warmup_calls
        self.graphs: OrderedDict = OrderedDict()  # shape key -> Captured, least recent first
        self.seen: OrderedDict = OrderedDict()  # shape key -> plain calls so far
        self.disabled = None  # why capture was given up for this program, once it was
        self.captures = self.replays = 0  # counters for tests and benchmarks

    def key(self, tensors: dict) -> tuple:
        return tuple((tuple(tensors[n].shape), tensors[n].dtype) for n in self.program.graph.inputs)

    def run(self, tensors: dict):
        if self.disabled or not self._capturable(tensors):
            return None
        key = self.key(tensors)
        captured = self.graphs.get(key)
        if captured is None:
            if self._note_plain_call(key):
                return None
            captured = self._capture(tensors)
            if captured is None:
                return None
            self.graphs[key] = captured
            while len(self.graphs) > self.capacity:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        _copy_all(list(captured.inputs.values()), [tensors[n] for n in captured.inputs])
        captured.replay()
        self.replays += 1
        fresh = [torch.empty_like(t) for t in captured.outputs]
        _copy_all(fresh, captured.outputs)
        return fresh

    def _capturable(self, tensors: dict) -> bool:
        device = torch.device(self.program.device)
        if not self.program.kernels or not self.backend.available(device) or self.backend.is_capturing():
            return False  # (a step with no kernels would be an empty graph)
        return all(_same_device(tensors[n].device, device) for n in self.program.graph.inputs)

    def _note_plain_call(self, key) -> bool:
        """Count a call with these shapes; True while they still run plainly (warm-up)."""
        calls = self.seen.pop(key, 0)
        self.seen[key] = calls + 1
        while len(self.seen) > 16 * self.capacity:
            self.seen.popitem(last=False)
        return calls < self.warmup_calls

    def _capture(self, tensors: dict):
        program = self.program
        static = {n: torch.empty(tuple(tensors[n].shape), dtype=tensors[n].dtype, device=tensors[n].device)
                  for n in program.graph.inputs}
        _copy_all(list(static.values()), [tensors[n] for n in static])

        def step():
            return program.run(static, graphs=False)

        self.backend.warm_up(step)  # errors here are the plain run's own: let them through
        try:
            outputs, replay = self.backend.capture(step)
        except Exception as e:  # noqa: BLE001 (any capture failure means: launch plainly)
            self.disabled = f"CUDA graph capture failed: {type(e).__name__}: {e}"
            warnings.warn(f"kgen: {self.disabled}; this program launches its kernels directly",
                          RuntimeWarning, stacklevel=3)
            return None
        self.captures += 1
        return Captured(static, list(outputs), replay)


def _same_device(a: torch.device, b: torch.device) -> bool:
    index = torch.cuda.current_device() if b.type == "cuda" and b.index is None else b.index
    return a.type == b.type and (a.index if a.index is not None else index) == index


def _copy_all(destinations: list, sources: list) -> None:
    """dst.copy_(src) for each pair, as one multi-tensor launch per dtype where torch has one."""
    groups: dict = {}
    for dst, src in zip(destinations, sources):
        pair = groups.setdefault((dst.dtype, src.dtype), ([], []))
        pair[0].append(dst)
        pair[1].append(src)
    for dsts, srcs in groups.values():
        if hasattr(torch, "_foreach_copy_"):
            torch._foreach_copy_(dsts, srcs)
        else:
            for dst, src in zip(dsts, srcs):
                dst.copy_(src)
