"""The torch frontend's op table: one translator per core ATen op, onto kgen.ops.

torch.export's graphs, after `run_decompositions()`, hold core ATen: a functional op set of
about two hundred ops into which torch decomposes everything else (`linear` arrives as
`permute` + `addmm`, `silu` as `sigmoid` + `mul`, `nn.GRU` as its unrolled cells). Each
entry below takes the op's arguments as torch passes them, with the FX nodes replaced by
kgen values (a Node; a sympy size for a symbolic int; a tuple for a multi-output op) and
returns kgen values built with kgen.ops, so every op lands on the op table's primitives
and composites and nothing here computes. An op with no entry is refused by the graph
walker (kgen/frontends/fx.py), which names it and the torch module it came from.

`ctx` (first argument) is the walker's `Context`: whether the graph runs in training mode,
and the device state it needs (a dropout's seed) with the updates that advance it.
"""
from __future__ import annotations

import builtins
import math

import sympy
import torch

from kgen import ops
from kgen.errors import KgenError, ShapeError
from kgen.ir import dtypes, shapes
from kgen.ir.node import Node

ATEN: dict = {}

INT64_MAX = 2**63 - 1  # torch's "to the end" in a slice


def aten(*names):
    """Register the decorated translator for the ATen ops `names` ("add.Tensor" is aten.add.Tensor;
    a name with its own namespace, "kgen.stop_gradient.default", is taken as it is)."""
    def register(fn):
        for name in names:
            key = name if name.startswith("kgen.") else "aten." + name
            if key in ATEN:
                raise ValueError(f"ATen op {key!r} is translated twice")
            ATEN[key] = fn
        return fn
    return register


def _dtype(torch_dtype):
    """A torch dtype as kgen's; float64 becomes float32, kgen's widest float (a model that
    casts to float64 is computed in float32, as its float32 inputs are)."""
    if torch_dtype is None:
        return None
    return dtypes.float32 if torch_dtype == torch.float64 else dtypes.dtype(torch_dtype)


def _axes(dims, ndim):
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    return tuple(d % builtins.max(ndim, 1) for d in dims) if dims else None


# --- elementwise ---------------------------------------------------------------------------------
def _scaled(b, alpha):
    return b if alpha == 1 else ops.mul(b, alpha) if isinstance(b, Node) else b * alpha


@aten("add.Tensor")
def _add(ctx, a, b, alpha=1):
    if not isinstance(a, Node) and not isinstance(b, Node):  # sizes: a + b of sympy values
        return a + alpha * b
    return ops.add(a, _scaled(b, alpha))


@aten("sub.Tensor")
def _sub(ctx, a, b, alpha=1):
    return ops.sub(a, _scaled(b, alpha))


_BINARY = {"mul": ops.mul, "maximum": ops.maximum, "minimum": ops.minimum, "eq": ops.equal,
           "ne": ops.not_equal, "lt": ops.less, "le": ops.less_equal, "gt": ops.greater,
           "ge": ops.greater_equal}
for _name, _fn in _BINARY.items():
    aten(*(f"{_name}.{kind}" for kind in (("Tensor", "Scalar") if _name not in ("maximum", "minimum")
                                          else ("default",))))(lambda ctx, a, b, _fn=_fn: _fn(a, b))


@aten("div.Tensor", "div.Scalar")
def _div(ctx, a, b):
    return ops.div(a, b)


@aten("div.Tensor_mode")
def _div_mode(ctx, a, b, rounding_mode=None):
    return ops.div(a, b, rounding_mode=rounding_mode)


@aten("remainder.Tensor", "remainder.Scalar")
def _remainder(ctx, a, b):
    return ops.remainder(a, b)


@aten("fmod.Tensor", "fmod.Scalar")
def _fmod(ctx, a, b):
    return ops.fmod(a, b)


@aten("pow.Tensor_Scalar", "pow.Tensor_Tensor")
def _pow(ctx, a, b):
    return ops.pow(a, b)


@aten("pow.Scalar")
def _pow_scalar(ctx, a, b):
    return ops.pow(ops.constant(float(a), b.dtype if b.dtype.is_float else dtypes.float32), b)


_UNARY = {"neg": ops.neg, "abs": ops.abs, "exp": ops.exp, "log": ops.log, "sqrt": ops.sqrt,
          "tanh": ops.tanh, "sigmoid": ops.sigmoid, "relu": ops.relu,
          "rsqrt": lambda x: ops.div(1.0, ops.sqrt(x)), "reciprocal": lambda x: ops.div(1.0, x),
          "log1p": lambda x: ops.log(ops.add(x, 1.0)), "expm1": lambda x: ops.sub(ops.exp(x), 1.0),
          "erf": lambda x: ops.erf(x), "floor": lambda x: ops.floor(x), "trunc": lambda x: ops.trunc(x)}
for _name, _fn in _UNARY.items():
    aten(f"{_name}.default")(lambda ctx, x, _fn=_fn: _fn(x))


@aten("gelu.default")
def _gelu(ctx, x, approximate="none"):
    return ops.gelu(x, approximate=approximate)


@aten("leaky_relu.default")
def _leaky_relu(ctx, x, negative_slope=0.01):
    return ops.leaky_relu(x, negative_slope)


@aten("elu.default")
def _elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    if scale != 1 or input_scale != 1:  # selu: elu scaled inside and out
        return ops.mul(ops.elu(ops.mul(x, input_scale), alpha), scale)
    return ops.elu(x, alpha)


@aten("hardtanh.default")
def _hardtanh(ctx, x, min_val=-1.0, max_val=1.0):
    return ops.hardtanh(x, min_val, max_val)


@aten("clamp.default", "clamp.Tensor")
def _clamp(ctx, x, min=None, max=None):
    return ops.clamp(x, min, max)


@aten("where.self")
def _where(ctx, cond, a, b):
    return ops.where(cond, a, b)


@aten("logical_not.default")
def _logical_not(ctx, x):
    return ops.equal(x, False if x.dtype is dtypes.bool_ else 0)


@aten("bitwise_not.default")
def _bitwise_not(ctx, x):
    if x.dtype is not dtypes.bool_:
        raise KgenError(f"bitwise_not: kgen takes bool tensors (logical not), got {x.type_str()}")
    return ops.equal(x, False)


def _logical(combine):
    def translate(ctx, a, b):
        for v in (a, b):
            if isinstance(v, Node) and v.dtype is not dtypes.bool_:
                raise KgenError(f"bitwise ops: kgen takes bool tensors (logical and/or/xor), got {v.type_str()}")
        return combine(a, b)
    return translate


aten("bitwise_and.Tensor")(_logical(lambda a, b: ops.where(a, b, False)))
aten("bitwise_or.Tensor")(_logical(lambda a, b: ops.where(a, True, b)))
aten("bitwise_xor.Tensor")(_logical(lambda a, b: ops.not_equal(a, b)))


@aten("_assert_tensor_metadata.default")
def _assert_metadata(ctx, x, size=None, stride=None, dtype=None, **kwargs):
    return None  # torch's own check of a value it traced; kgen checks shapes as it translates


@aten("_to_copy.default")
def _to_copy(ctx, x, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False,
             memory_format=None):
    return x if dtype is None else ops.cast(x, _dtype(dtype))


@aten("clone.default", "alias.default")
def _identity(ctx, x, memory_format=None):
    return x


@aten("kgen.stop_gradient.default")  # x.detach() and no-grad regions (kgen/frontends/fx.py, core_aten)
def _stop_gradient(ctx, x):
    return ops.stop_gradient(x)


@aten("scalar_tensor.default")
def _scalar_tensor(ctx, value, dtype=None, layout=None, device=None, pin_memory=None):
    return ops.constant(value, _dtype(dtype) or dtypes.float32)


@aten("full.default")
def _full(ctx, size, value, dtype=None, layout=None, device=None, pin_memory=None):
    return ops.broadcast_to(ops.constant(value, _dtype(dtype) or dtypes.float32), list(size))


@aten("copy.default")
def _copy(ctx, x, src, non_blocking=False):
    return ops.broadcast_to(ops.cast(src, x.dtype), x.shape)


@aten("arange.start_step")
def _arange(ctx, start, end, step=1, dtype=None, layout=None, device=None, pin_memory=None):
    n = math.ceil((end - start) / step) if all(isinstance(v, (int, float)) for v in (start, end, step)) else None
    if n is None:
        raise ShapeError(f"arange: kgen takes static bounds, got start {start}, end {end}, step {step}")
    dt = _dtype(dtype) or (dtypes.float32 if any(isinstance(v, float) for v in (start, end, step)) else dtypes.int64)
    return ops.add(ops.mul(ops.iota((max(n, 0),), 0, dt), step), start)


@aten("full_like.default")
def _full_like(ctx, x, value, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    return ops.broadcast_to(ops.constant(value, _dtype(dtype) or x.dtype), x.shape)


# --- reductions ----------------------------------------------------------------------------------
@aten("sum.dim_IntList")
def _sum(ctx, x, dim=None, keepdim=False, dtype=None):
    x = x if dtype is None else ops.cast(x, _dtype(dtype))
    if x.dtype is dtypes.bool_:
        x = ops.cast(x, dtypes.int64)
    return ops.sum(x, _axes(dim, x.ndim), keepdims=keepdim)


@aten("mean.dim", "mean.default")
def _mean(ctx, x, dim=None, keepdim=False, dtype=None):
    x = x if dtype is None else ops.cast(x, _dtype(dtype))
    return ops.mean(x, _axes(dim, x.ndim), keepdims=keepdim)


@aten("amax.default")
def _amax(ctx, x, dim=(), keepdim=False):
    return ops.max(x, _axes(dim, x.ndim), keepdims=keepdim)


@aten("amin.default")
def _amin(ctx, x, dim=(), keepdim=False):
    return ops.neg(ops.max(ops.neg(x), _axes(dim, x.ndim), keepdims=keepdim))


@aten("any.dims", "any.dim", "any.default")
def _any(ctx, x, dim=None, keepdim=False):
    """Whether any element is non-zero: a max over x != 0 (a bool result, as torch's)."""
    hit = ops.cast(ops.not_equal(x, False if x.dtype is dtypes.bool_ else 0), dtypes.int32)
    return ops.not_equal(ops.max(hit, _axes(dim, x.ndim), keepdims=keepdim), 0)


@aten("var.correction")
def _var(ctx, x, dim=None, correction=None, keepdim=False):
    axes = _axes(dim, x.ndim) or tuple(range(x.ndim))
    count = shapes.numel([x.shape[a] for a in axes])
    centred = ops.sub(x, ops.mean(x, axes, keepdims=True))
    dof = count - (1 if correction is None else correction)
    return ops.div(ops.sum(ops.mul(centred, centred), axes, keepdims=keepdim), ops.size_constant(dof))


@aten("gather.default")
def _gather(ctx, x, dim, index, sparse_grad=False):
    """torch.gather as a one-hot product along `dim` (what cross-entropy's decomposition
    picks the labels' scores with): cheap for a short `dim`, as a class axis is."""
    dim %= x.ndim
    size = x.shape[dim]
    if not isinstance(size, int):
        raise ShapeError(f"gather: axis {dim} of {x.type_str()} is symbolic; kgen gathers along static axes")
    last = list(range(x.ndim))
    last.append(last.pop(dim))
    picked = ops.one_hot(ops.transpose(index, last), size, x.dtype) * ops.expand_dims(ops.transpose(x, last), -2)
    back = list(range(x.ndim - 1))
    back.insert(dim, x.ndim - 1)
    return ops.transpose(ops.sum(picked, -1), back)


# --- views ---------------------------------------------------------------------------------------
@aten("view.default")
def _view(ctx, x, shape):
    return ops.reshape(x, list(shape))


@aten("permute.default")
def _permute(ctx, x, dims):
    return ops.transpose(x, [d % x.ndim for d in dims])


@aten("expand.default")
def _expand(ctx, x, size, implicit=False):
    lead = len(size) - x.ndim
    return ops.broadcast_to(x, [x.shape[i - lead] if isinstance(d, int) and d == -1 else d
                                for i, d in enumerate(size)])


@aten("unsqueeze.default")
def _unsqueeze(ctx, x, dim):
    return ops.expand_dims(x, dim % (x.ndim + 1))


@aten("squeeze.dims")
def _squeeze(ctx, x, dims):
    return ops.squeeze(x, [d % builtins.max(x.ndim, 1) for d in dims if x.shape[d] == 1])


def _clip_index(i, size):
    """A slice bound as torch takes it (negative from the end, clipped to [0, size])."""
    if isinstance(size, int):
        return builtins.min(builtins.max(i + size if i < 0 else i, 0), size)
    return size if i >= INT64_MAX else i


@aten("slice.Tensor")
def _slice(ctx, x, dim=0, start=None, end=None, step=1):
    dim %= x.ndim
    size = x.shape[dim]
    start = 0 if start is None else _clip_index(start, size)
    end = size if end is None else _clip_index(end, size)
    if start == 0 and shapes.dims_equal(end, size) and step == 1:
        return x
    if not isinstance(size, int):
        raise ShapeError(f"slice: axis {dim} of {x.type_str()} is symbolic; kgen slices static axes only")
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    return ops.getitem(x, tuple(index))


@aten("select.int")
def _select(ctx, x, dim, index):
    dim %= x.ndim
    return ops.getitem(x, (slice(None),) * dim + (index,))


@aten("cat.default")
def _cat(ctx, tensors, dim=0):
    kept = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]  # torch skips empty 1-D
    return kept[0] if len(kept) == 1 else ops.concatenate(kept, dim % kept[0].ndim)


@aten("split_with_sizes.default")
def _split_with_sizes(ctx, x, sizes, dim=0):
    return tuple(ops.split(x, list(sizes), dim % x.ndim))


@aten("slice_scatter.default")
def _slice_scatter(ctx, x, src, dim=0, start=None, end=None, step=1):
    """x with src written over x[start:end:step] along `dim` (what a slice assignment
    becomes in core ATen): src placed by a pad view, chosen where the slice's mask holds."""
    dim %= x.ndim
    size = x.shape[dim]
    if not isinstance(size, int):
        raise ShapeError(f"slice_scatter: axis {dim} of {x.type_str()} is symbolic; kgen writes slices of static axes")
    start = 0 if start is None else _clip_index(start, size)
    low, steps = [0] * x.ndim, [1] * x.ndim
    low[dim], steps[dim] = start, step
    placed = ops.pad_strided(ops.cast(src, x.dtype), low, steps, x.shape)
    inside = ops.pad_strided(ops.broadcast_to(ops.constant(True, dtypes.bool_), src.shape), low, steps, x.shape)
    return ops.where(inside, placed, x)


@aten("constant_pad_nd.default")
def _constant_pad_nd(ctx, x, pad, value=0.0):
    widths = [[0, 0] for _ in range(x.ndim)]
    for k in range(len(pad) // 2):  # torch lists (before, after) from the last axis back
        widths[x.ndim - 1 - k] = [pad[2 * k], pad[2 * k + 1]]
    if any(w < 0 for pair in widths for w in pair):
        raise ShapeError(f"constant_pad_nd: negative padding {list(pad)} (cropping) is not supported")
    return ops.pad(x, widths, value=value) if value != 0 else ops.pad(x, widths)


# --- matrix products -----------------------------------------------------------------------------
@aten("mm.default", "bmm.default")
def _mm(ctx, a, b):
    return ops.matmul(a, b)


@aten("addmm.default")
def _addmm(ctx, bias, a, b, beta=1, alpha=1):
    product = _scaled(ops.matmul(a, b), alpha)
    return ops.add(product, _scaled(bias, beta)) if beta != 0 else product


# --- neural-network ops --------------------------------------------------------------------------
@aten("convolution.default")
def _convolution(ctx, x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        raise KgenError("convolution: transposed convolution (ConvTranspose) is not supported")
    spatial = w.ndim - 2
    stride, padding, dilation = (_per_axis(v, spatial) for v in (stride, padding, dilation))
    if spatial == 1:
        return ops.conv1d(x, w, bias, stride[0], padding[0], dilation[0], groups=groups)
    if spatial == 2:
        return ops.conv2d(x, w, bias, stride, padding, dilation, groups=groups)
    raise KgenError(f"convolution: {spatial}-D convolution is not supported (kgen has 1-D and 2-D)")


@aten("max_pool2d_with_indices.default")
def _max_pool2d(ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    values, indices = ops.max_pool2d(x, tuple(kernel_size), tuple(stride) or None, _pair(padding),
                                     _pair(dilation), ceil_mode, return_indices=True)
    return values, indices


@aten("avg_pool2d.default")
def _avg_pool2d(ctx, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    return ops.avg_pool2d(x, tuple(kernel_size), tuple(stride) or None, _pair(padding), ceil_mode,
                          count_include_pad, divisor_override)


@aten("_adaptive_avg_pool2d.default")
def _adaptive_avg_pool2d(ctx, x, output_size):
    return ops.adaptive_avg_pool2d(x, tuple(output_size))


def _per_axis(v, spatial: int) -> tuple:
    """A conv argument per spatial axis: torch repeats a one-element list."""
    v = tuple(v) if isinstance(v, (list, tuple)) else (v,)
    return v * spatial if len(v) == 1 else v


def _pair(v):
    return tuple(v) * (2 if len(v) == 1 else 1) if isinstance(v, (list, tuple)) else (v, v)


@aten("_softmax.default")
def _softmax(ctx, x, dim, half_to_float=False):
    return ops.softmax(x, axis=dim)


@aten("_log_softmax.default")
def _log_softmax(ctx, x, dim, half_to_float=False):
    return ops.log_softmax(x, axis=dim)


@aten("native_layer_norm.default")
def _native_layer_norm(ctx, x, normalized_shape, weight, bias, eps):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = ops.mean(x, axes, keepdims=True)
    centred = ops.sub(x, mean)
    rstd = ops.div(1.0, ops.sqrt(ops.add(ops.mean(ops.mul(centred, centred), axes, keepdims=True), eps)))
    return ops.layer_norm(x, tuple(normalized_shape), weight, bias, eps), mean, rstd


@aten("_native_batch_norm_legit_functional.default")
def _batch_norm_training(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
    if training:
        y, new_mean, new_var = ops.batch_norm(x, running_mean, running_var, weight, bias, training=True,
                                              momentum=momentum, eps=eps)
    else:
        y = ops.batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=momentum, eps=eps)
        new_mean, new_var = running_mean, running_var
    return y, _unused("save_mean"), _unused("save_invstd"), new_mean, new_var


@aten("_native_batch_norm_legit_no_training.default")
def _batch_norm_eval(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
    y = ops.batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=momentum, eps=eps)
    return y, _unused("save_mean"), _unused("save_invstd")


@aten("_native_batch_norm_legit.no_stats")
def _batch_norm_no_stats(ctx, x, weight, bias, training, momentum, eps):
    y, _, _ = ops.batch_norm(x, None, None, weight, bias, training=True, momentum=momentum, eps=eps)
    return y, _unused("save_mean"), _unused("save_invstd")


class Unused:
    """A result of a multi-output ATen op that kgen does not compute (batch norm's saved
    statistics, which only torch's own backward reads): the walker refuses a graph that
    reads one."""
    def __init__(self, what: str):
        self.what = what


_unused = Unused


@aten("native_dropout.default")
def _native_dropout(ctx, x, p, train):
    if not train or p == 0:
        return x, ops.broadcast_to(ops.constant(True, dtypes.bool_), x.shape)
    seed = ctx.seed()
    return ops.dropout(x, p, seed), _unused("dropout mask")


@aten("embedding.default")
def _embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    if scale_grad_by_freq:
        raise KgenError("embedding: scale_grad_by_freq=True is not supported")
    return ops.embedding(indices, weight, padding_idx=None if padding_idx < 0 else padding_idx)


@aten("sym_size.int")
def _sym_size(ctx, x, dim):
    return x.shape[dim]


# Python's arithmetic on symbolic sizes (SymInt expressions between the sym_size nodes).
SIZE_ARITHMETIC = {"mul": lambda a, b: a * b, "add": lambda a, b: a + b, "sub": lambda a, b: a - b,
                   "floordiv": lambda a, b: sympy.floor(sympy.sympify(a) / b),
                   "truediv": lambda a, b: sympy.sympify(a) / b}
