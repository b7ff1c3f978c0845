"""The checks every way into a compiled program shares: a compiled Program's calls
(kgen.function, kgen.nn's fit/evaluate/predict and steps, kgen.check) and a loaded artifact's
(kgen.load, `kgen run --inputs F.npz`) convert their arguments here, so one input is accepted
or refused the same way on every path (docs/bad_inputs.md has the table).

- `convert_input`: a value for a declared input as a tensor on the program's device, or an
  InputError naming the input, what was expected and what was given;
- `label_classes` / `check_labels`: integer inputs that are class labels (compared with the
  class indices 0..C-1 by one_hot, cross_entropy, nll_loss, the accuracy metric) or indices
  of an embedding table's C rows must lie in [0, C), as torch requires, found from the
  graph's text form (which an artifact stores);
- `FiniteWatch`: the opt-in check (check_finite=True, KGEN_CHECK_FINITE=1) that stops at the
  first kernel writing a NaN or an infinity, naming it, the value and any input to blame."""
from __future__ import annotations

import ast
import os
import re
from functools import lru_cache
from typing import Optional

import numpy as np
import torch

from kgen.errors import InputError, NonFiniteError

_INT_RANGE = {t: (torch.iinfo(t).min, torch.iinfo(t).max) for t in
              (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# --- converting one argument -------------------------------------------------------------------
def convert_input(value, what: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`value` (a NumPy array, a torch tensor, or Python numbers) for an input declared
    `dtype`, as a contiguous tensor on `device`. The policy (docs/bad_inputs.md):

    - a torch tensor must hold data on the CPU, on `device`, or on a usable CUDA device;
    - arrays and tensors keep their dtype, except that integers of another width are
      converted when every value fits the declared type (int64 labels for an int32 input),
      and a float32 NumPy array for a float16/bfloat16 input is rounded (NumPy has no
      bfloat16);
    - Python numbers, lists of them and 0-d values take the declared dtype where their kind
      allows it (ints and floats for a float input, ints for an int input);
    - anything else is an InputError naming the input (`what`)."""
    if isinstance(value, torch.Tensor):
        problem = device_problem(value.device, device)
        if problem:
            raise InputError(f"{what}: {problem}")
        tensor, lenient, from_numpy = value.detach(), value.dim() == 0, False
    else:
        array = _numeric_array(value, what)
        lenient = not isinstance(value, np.ndarray) or array.ndim == 0
        tensor, from_numpy = torch.from_numpy(np.array(array, order="C")), True
    tensor = _as_dtype(tensor, what, dtype, lenient, from_numpy)
    return tensor.to(device).contiguous()


def device_problem(have: torch.device, want: torch.device, cuda_available: Optional[bool] = None) -> str:
    """What is wrong with a tensor on `have` for a program on `want` ("" if nothing): it may
    be on the CPU, on `want`, or on a CUDA device this machine has (copied to `want`)."""
    where = "the CPU" if want.type == "cpu" else f"{want} or the CPU"
    if have.type == "meta":
        return f"expected a tensor with data on {where}, got a tensor on the meta device, which holds no values"
    if have.type in ("cpu", want.type) and have.type != "cuda":
        return ""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if have.type == "cuda" and cuda_available:
        return ""
    why = " (this machine has no usable CUDA device)" if have.type == "cuda" else ""
    return f"expected a tensor on {where}, got one on {have}{why}"


def _numeric_array(value, what: str) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes, dict)):
        raise InputError(f"{what}: expected an array or tensor, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged lists, objects NumPy cannot read
        raise InputError(f"{what}: expected an array or tensor, got a {type(value).__name__} that is not "
                         f"one ({e})") from None
    if array.dtype.kind not in "fiub":
        given = type(value).__name__ if array.dtype == object else f"{type(value).__name__} of {array.dtype}"
        raise InputError(f"{what}: expected a numeric array or tensor, got {given}")
    if array.dtype.kind == "u" and array.dtype.itemsize > 1:  # torch has no uint16..64 arithmetic
        array = _fit_integers(array, np.int64, what)
    return array


def _fit_integers(array: np.ndarray, dtype, what: str) -> np.ndarray:
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise InputError(f"{what}: expected {np.dtype(dtype)} values, got {array.dtype} values from "
                         f"{array.min()} to {array.max()}, which {np.dtype(dtype)} cannot hold")
    return array.astype(dtype)


def _as_dtype(tensor: torch.Tensor, what: str, want: torch.dtype, lenient: bool, from_numpy: bool) -> torch.Tensor:
    have = tensor.dtype
    if have == want:
        return tensor
    if want.is_floating_point:
        if lenient and have != torch.bool:
            return tensor.to(want)  # a Python number (or a 0-d value) for a float input
        if from_numpy and have == torch.float32 and want in (torch.float16, torch.bfloat16):
            return tensor.to(want)  # NumPy has no bfloat16: float32 values are rounded
        if have.is_floating_point and have.itemsize > want.itemsize:
            fix = (f".astype(np.{dtype_name(want) if want != torch.bfloat16 else 'float32'})" if from_numpy
                   else f".to(torch.{dtype_name(want)})")
            raise InputError(f"{what}: expected {dtype_name(want)}, got {dtype_name(have)} (convert with {fix} first)")
    elif want in _INT_RANGE and have in _INT_RANGE:
        lo, hi = _INT_RANGE[want]
        if tensor.numel() and (int(tensor.min()) < lo or int(tensor.max()) > hi):
            raise InputError(f"{what}: expected {dtype_name(want)} values, got {dtype_name(have)} values from "
                             f"{int(tensor.min())} to {int(tensor.max())}, which {dtype_name(want)} cannot hold")
        return tensor.to(want)  # every value fits: int64 labels for an int32 input
    raise InputError(f"{what}: expected dtype {dtype_name(want)}, got {dtype_name(have)}")


# --- class labels --------------------------------------------------------------------------------
_LINE = re.compile(r"^\s*(?P<name>\S+): (?P<type>.+?) = (?P<op>\w+)(?:\[(?P<attrs>.*)\])?(?: (?P<args>.*))?$")
_INPUT = re.compile(r"[(,] ?(\w+): (\w+\[[^\]]*\])")
_VALUE_PRESERVING = ("reshape", "broadcast_to", "transpose", "slice", "cast")


def label_classes(graph_text: str) -> dict:
    """Input name -> class count C, for each integer graph input compared with the class
    indices 0..C-1 (an `iota` along a static axis of size C): the pattern ops.one_hot builds,
    and with it cross_entropy, nll_loss, the losses of kgen.nn and the accuracy metric; and
    each that indexes the rows of an embedding table [C, D] (ops.embedding), which no kernel
    may read outside.
    Read from the graph's text form, which a Program prints and an artifact stores, so a
    function and the artifact compiled from it find the same labels."""
    defs = {}
    for line in graph_text.splitlines():
        if line.startswith("graph("):  # the inputs: graph(x: f32[N,4], y: i32[N]) {
            defs.update({name: ("input", dtype, "", []) for name, dtype in _INPUT.findall(line)})
        m = _LINE.match(line)
        if m:
            defs[m["name"]] = (m["op"], m["type"], m["attrs"] or "", (m["args"] or "").split())
    found = {}
    for op, _, _, args in defs.values():
        if op == "embedding" and len(args) == 2:  # indices of the rows of a table [V, D]
            rows, source = _table_rows(defs.get(args[1])), _integer_input(args[0], defs)
            if rows and source:
                found[source] = min(rows, found.get(source, rows))
        if op != "equal" or len(args) != 2:
            continue
        for mine, other in (args, args[::-1]):
            classes, source = _iota_extent(defs.get(other)), _integer_input(mine, defs)
            if classes and source:
                found[source] = min(classes, found.get(source, classes))
    return found


def _table_rows(definition) -> Optional[int]:
    """V of a definition typed [V, D] (an embedding's table), if static."""
    m = re.match(r"\w+\[(\d+),", definition[1]) if definition else None
    return int(m.group(1)) if m else None


def _iota_extent(definition) -> Optional[int]:
    if definition is None or definition[0] != "iota":
        return None
    attrs = definition[2]
    axis, start = re.search(r"axis=(-?\d+)", attrs), attrs.find("shape=(")
    if axis is None or start < 0:
        return None
    dims, depth, current = [], 0, ""
    for ch in attrs[start + len("shape=("):]:
        if ch == ")" and depth == 0:
            break
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            dims.append(current.strip())
            current = ""
        else:
            current += ch
    dims = [d for d in dims + [current.strip()] if d]
    extent = dims[int(axis.group(1))] if -len(dims) <= int(axis.group(1)) < len(dims) else ""
    return int(extent) if extent.isdigit() else None


def _integer_input(name: str, defs: dict) -> Optional[str]:
    """The integer graph input `name` is a view or cast of, if it is one."""
    for _ in range(len(defs)):
        definition = defs.get(name)
        if definition is None:
            return None
        op, type_text, _, args = definition
        if op == "input":
            return name if re.match(r"[iu]\d", type_text) else None
        if op not in _VALUE_PRESERVING or len(args) != 1:
            return None
        name = args[0]
    return None


def check_labels(tensor: torch.Tensor, what: str, classes: int) -> None:
    """Every value of the label input `tensor` in [0, classes), or an InputError naming the
    first one outside (torch's cross_entropy and one_hot refuse them too; a kernel would
    count them as matching no class, a loss of zero)."""
    if not tensor.numel() or (int(tensor.min()) >= 0 and int(tensor.max()) < classes):
        return
    index = ((tensor < 0) | (tensor >= classes)).nonzero()[0].tolist()
    value = int(tensor[tuple(index)])
    raise InputError(f"{what}: expected class labels in [0, {classes}) ({classes} classes, as one_hot / "
                     f"cross_entropy / nll_loss use them, or rows of an embedding table), got {value} at index {index}")


# --- NaN and infinity ----------------------------------------------------------------------------
def check_finite_on(flag: Optional[bool]) -> bool:
    """`flag`, or where it is None, the environment's KGEN_CHECK_FINITE (on unless unset, '' or '0')."""
    if flag is not None:
        return bool(flag)
    return os.environ.get("KGEN_CHECK_FINITE", "") not in ("", "0")


def first_non_finite(tensor: torch.Tensor):
    """(index, value) of the first NaN or infinity of `tensor` in row-major order, or None."""
    if not tensor.dtype.is_floating_point or not tensor.numel():
        return None
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return None
    index = bad.nonzero()[0].tolist()
    return index, float(tensor[tuple(index)])


class FiniteWatch:
    """Checks, after each launch of one run, the values the launch wrote. Built before the
    first launch from the run's inputs ((text line, tensor) pairs, the lines as the graph
    prints its input nodes), so it knows which of them were already non-finite."""

    def __init__(self, source: str, inputs):
        self.source = source
        self.bad_inputs = {}
        for line, tensor in inputs:
            found = first_non_finite(tensor)
            if found is not None:
                self.bad_inputs[line] = found

    def after(self, kernel: str, written, read) -> None:
        """Raise NonFiniteError if kernel `kernel` wrote a NaN or an infinity into one of
        `written` ((line, tensor) pairs); `read` names the lines of the values it read."""
        for line, tensor in written:
            found = first_non_finite(tensor)
            if found is not None:
                raise NonFiniteError(self._message(kernel, line, found, read))

    def _message(self, kernel: str, line: str, found, read) -> str:
        index, value = found
        at = f"at index {index}" if index else "(a scalar)"
        lines = [f"check_finite: kernel {kernel} wrote {value} {at} to {line}",
                 "The kernel computes (from its generated source):"]
        lines += [f"  {node}" for node in kernel_nodes(self.source, kernel)] or ["  (its source names no nodes)"]
        blamed = [(r, self.bad_inputs[r]) for r in dict.fromkeys(read) if r in self.bad_inputs]
        if blamed:
            lines.append("It read inputs that were already non-finite, the cause:")
            lines += [f"  {r}: {v} at index {i}" for r, (i, v) in blamed]
        else:
            lines.append("Every value it read was finite: this kernel made the NaN/inf (e.g. log or sqrt of "
                         "a negative number, log(0), a division by zero, an overflow).")
        return "\n".join(lines)


@lru_cache(maxsize=16)
def _docstrings(source: str) -> dict:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    return {node.name: ast.get_docstring(node) or "" for node in tree.body if isinstance(node, ast.FunctionDef)}


def kernel_nodes(source: str, kernel: str) -> list:
    """The IR node lines kernel `kernel`'s docstring in the generated `source` names."""
    doc = _docstrings(source).get(kernel, "")
    return [line.strip() for line in doc.splitlines() if _LINE.match(line.strip())]
