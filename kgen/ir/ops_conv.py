"""Op table entries for 2-D convolution and pooling, NCHW, as torch.nn.functional has them.

    conv2d(x[N,C,H,W], w[F,C/G,KH,KW])    -> [N,F,OH,OW]   stride, padding, dilation, groups G
    conv2d_input_grad(g[N,F,OH,OW], w)     -> [N,C,H,W]     ... and input_size=(H, W)
    conv2d_weight_grad(x, g[N,F,OH,OW])    -> [F,C/G,KH,KW] ... and kernel_size=(KH, KW)
    max_pool2d(x[N,C,H,W])                 -> [N,C,OH,OW]   kernel_size, stride, padding
    max_pool2d_indices(x[N,C,H,W])         -> [N,C,OH,OW]   int64 flat argmax in each H*W plane
    max_pool2d_grad(g[N,C,OH,OW], x)       -> [N,C,H,W]     g routed to each window's argmax
    max_pool2d_gather(t[N,C,H,W], x)       -> [N,C,OH,OW]   t read at each window's argmax
    avg_pool2d(x[N,C,H,W])                 -> [N,C,OH,OW]   kernel_size, stride, padding
    avg_pool2d_grad(g[N,C,OH,OW])          -> [N,C,H,W]     ... and input_size=(H, W)

with OH = (H + 2*ph - dh*(KH-1) - 1) // sh + 1, as torch computes it. A convolution of
`groups` G splits the channels C and the filters F (both divisible by G) into G groups:
filter f sees only the C/G channels of its group f // (F/G), as in torch. Padding reads
zeros (conv, average) or -inf (max).

The pools take torch's options as attrs, each present only when it is not torch's default
(POOL_OPTIONS), so a pool with the defaults is the node it always was: dilation and
ceil_mode (the max ops), ceil_mode, count_include_pad and divisor_override (the average
ops). ceil_mode rounds OH up, less a last window that would start past the input and its
left padding (torch's rule); such windows hang over the edge, reading -inf (max) or
nothing (average). An average divides by divisor_override if given, else by its window's
size clipped to the padded input (count_include_pad, which is KH*KW unless a ceil_mode
window hangs over) or by its count of input elements (count_include_pad=False).

The gradient ops are template ops of their own, and differentiable again, in closed form:
with T(x, w, g) = <conv2d(x, w), g>, conv2d_input_grad(g, w) = dT/dx and
conv2d_weight_grad(x, g) = dT/dw, so each VJP of the three is another of the three.
max_pool2d_grad and max_pool2d_gather are each other's transposes (JAX calls them
select_and_scatter_add and select_and_gather_add); the argmax is piecewise constant in x,
so neither passes a gradient to x. avg_pool2d and avg_pool2d_grad transpose each other.
Their builders are here, beside the rules that call them, and not in kgen.ops: programs
get them from kgen.grad. kgen.ops's conv2d and pools take their arguments through
conv_attrs and pool_attrs below, as the gradient builders do.

The argmax of a window is its first maximum in window order (row by row), a NaN counting
as the maximum (the first NaN), and the first position inside the image when every value
there is -inf, as torch does on CPU. Half-precision operands accumulate in float32.
Channel, spatial and kernel sizes must be ints; the batch size may be symbolic.

Each entry also states its cost and its library twin: the three convolutions are implicit
GEMMs of 2 flops per (output element of the forward conv, weight tap); a pooling op does one
compare or add per window element of each pooled value; `vendor` is the torch call
computing the same value. A convolution of one group is one GEMM, and its `gemm` fact gives
its extents as kgen/kernels/conv.py tiles them; one of G > 1 groups is G GEMMs (or, when
depthwise, no GEMM at all: kgen/kernels/depthwise.py), so its `gemm` is None, as a batched
matmul's is: fusion rule E4 would read one GEMM's extents as the whole kernel's. Its
template reads each group's extents from `group_gemm`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import as_strided

from kgen.errors import DTypeError, ShapeError
from kgen.ir import dtypes, shapes
from kgen.ir.node import Node
from kgen.ir.optable import OpDef, register


def _ops():
    from kgen import ops  # at call time: kgen.ops builds on the ir (a cycle in the ir stage)
    return ops


def _conv_args(attrs) -> dict:
    """A node's stride, padding, dilation and groups, as keyword arguments of a conv builder."""
    return {**{k: attrs[k] for k in CONV_ATTRS}, "groups": attrs["groups"]}


def _pool_args(attrs) -> dict:
    """A node's kernel_size, stride, padding and options, as keyword arguments of a pool builder."""
    return {k: attrs[k] for k in POOL_ATTRS + tuple(POOL_OPTIONS) if k in attrs}


# --- shape rules and references shared by the ops ---------------------------------------------
_LEAST = {"stride": 1, "dilation": 1, "kernel_size": 1, "padding": 0, "input_size": 1}
CONV_ATTRS = ("stride", "padding", "dilation")
POOL_ATTRS = ("kernel_size", "stride", "padding")
POOL_OPTIONS = {"dilation": (1, 1), "ceil_mode": False, "count_include_pad": True, "divisor_override": None}
MAX_POOL_OPTIONS, AVG_POOL_OPTIONS = ("dilation", "ceil_mode"), ("ceil_mode", "count_include_pad", "divisor_override")


def _fmt(node) -> str:
    return shapes.format_shape(node.shape)


def _check_float(*nodes) -> None:
    if any(n.dtype != nodes[0].dtype for n in nodes) or not nodes[0].dtype.is_float:
        given = " and ".join(n.type_str() for n in nodes)
        raise DTypeError(f"expected {'operands of one' if len(nodes) > 1 else 'a'} floating dtype, got {given}")


def _check_4d(node, what: str, layout: str, static_from: int = 1) -> None:
    """`node` must be 4-D ([N, C, H, W]-like, named by `layout`) with int dims from `static_from` on."""
    if node.ndim != 4:
        raise ShapeError(f"{what} must be 4-D {layout}, got {_fmt(node)}")
    symbolic = [i for i, d in enumerate(node.shape) if i >= static_from and not isinstance(d, int)]
    if symbolic:
        which = "int sizes" if static_from == 0 else "int sizes but for the batch size"
        raise ShapeError(f"{what} {_fmt(node)} ({layout}) must have {which}, got a symbolic axis {symbolic[0]}")


def _check_pairs(attrs: dict, keys) -> None:
    """Each attribute of `keys` is present and a pair of ints in range."""
    for key in keys:
        if key not in attrs:
            raise ShapeError(f"missing attribute {key!r} (expected {', '.join(keys)})")
        value, low = attrs[key], _LEAST[key]
        if not (isinstance(value, tuple) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)):
            raise ShapeError(f"{key} must be a pair of ints >= {low}, got {value!r}")


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def out_hw(hw, khw, attrs) -> tuple:
    """(OH, OW) of a window of `khw` sliding over an image of `hw` with the attrs' stride,
    padding and (if given) dilation."""
    dilation = attrs.get("dilation", (1, 1))
    return tuple(_out_size(hw[i], khw[i], attrs["stride"][i], attrs["padding"][i], dilation[i]) for i in range(2))


def _check_fits(hw, khw, attrs) -> tuple:
    """(OH, OW), or a ShapeError when the (dilated) window is larger than the padded image."""
    out = out_hw(hw, khw, attrs)
    if min(out) < 1:
        dilation = attrs.get("dilation", (1, 1))
        span = tuple(dilation[i] * (khw[i] - 1) + 1 for i in range(2))
        padded = tuple(hw[i] + 2 * attrs["padding"][i] for i in range(2))
        raise ShapeError(f"the {'dilated ' if 'dilation' in attrs else ''}window {span[0]}x{span[1]} "
                         f"is larger than the padded input {padded[0]}x{padded[1]}")
    return out


def _check_grad_size(g, expected: tuple, input_hw) -> None:
    if tuple(g.shape[2:]) != tuple(expected):
        raise ShapeError(f"g {_fmt(g)} must have spatial size {expected[0]}x{expected[1]}, the output "
                         f"size of an input of {input_hw[0]}x{input_hw[1]}")


def _check_pool_padding(attrs) -> None:
    k, p = attrs["kernel_size"], attrs["padding"]
    if any(p[i] > k[i] // 2 for i in range(2)):
        raise ShapeError(f"padding {p} must be at most half the kernel size {k}")


def _same_nc(a, b, what: str) -> None:
    if not (shapes.dims_equal(a.shape[0], b.shape[0]) and a.shape[1] == b.shape[1]):
        raise ShapeError(f"{what} {_fmt(a)} and x {_fmt(b)} differ in batch size or channels")


def _accumulating(*arrays):
    """Half-precision arrays widened to float32, as kernels accumulate them."""
    return [a.astype(np.float32) if a.dtype == np.float16 else a for a in arrays]


def _pad(x, padding, value):
    (ph, pw) = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(padded, khw, out, stride, dilation=(1, 1)):
    """A read-only view [N, C, OH, OW, KH, KW] of every window of a padded image."""
    sn, sc, sh, sw = padded.strides
    shape = padded.shape[:2] + tuple(out) + tuple(khw)
    steps = (sn, sc, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1])
    return as_strided(padded, shape, steps, writeable=False)


def _scatter_windows(values, shape, khw, out, attrs, contribution):
    """An image of `shape` [N, C, H, W] holding, at each pixel, the sum over the windows that
    cover it of contribution(kh, kw) (an [N, C, OH, OW] array for window offset kh, kw)."""
    (ph, pw), (sh, sw) = attrs["padding"], attrs["stride"]
    (dh, dw) = attrs.get("dilation", (1, 1))
    spans = [max(shape[2 + i] + 2 * attrs["padding"][i],  # a ceil_mode window may hang over the edge
                 (out[i] - 1) * attrs["stride"][i] + (dh, dw)[i] * (khw[i] - 1) + 1) for i in range(2)]
    padded = np.zeros(shape[:2] + tuple(spans), values.dtype)
    for kh in range(khw[0]):
        for kw in range(khw[1]):
            rows = slice(kh * dh, kh * dh + sh * (out[0] - 1) + 1, sh)
            cols = slice(kw * dw, kw * dw + sw * (out[1] - 1) + 1, sw)
            padded[:, :, rows, cols] += contribution(kh, kw)
    return padded[:, :, ph:ph + shape[2], pw:pw + shape[3]]


def pool_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1, ceil_mode=False) -> int:
    """A pool's output length along one axis, as torch computes it: with ceil_mode the
    count rounds up, less a last window that would start past the input and its left padding."""
    reach = size + 2 * pad - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return reach // stride + 1
    out = -(-reach // stride) + 1
    return out - 1 if (out - 1) * stride >= size + pad else out


def pool_out_hw(hw, attrs) -> tuple:
    """(OH, OW) of a pool node's attrs over an image of `hw`."""
    (kh, kw), (sh, sw), (ph, pw) = (attrs[k] for k in POOL_ATTRS)
    (dh, dw), ceil = attrs.get("dilation", (1, 1)), attrs.get("ceil_mode", False)
    return pool_out_size(hw[0], kh, sh, ph, dh, ceil), pool_out_size(hw[1], kw, sw, pw, dw, ceil)


def _pool_pad(x, attrs, out, value):
    """x padded with `value`: the padding, and room for windows hanging over the far edge."""
    widths = [(0, 0), (0, 0)]
    for i in range(2):
        k, s, p = (attrs[key][i] for key in POOL_ATTRS)
        span = (out[i] - 1) * s + attrs.get("dilation", (1, 1))[i] * (k - 1) + 1
        widths.append((p, max(p, span - x.shape[2 + i] - p)))
    return np.pad(x, widths, constant_values=value)


def _pool_windows(x, attrs, out, value):
    """A read-only view [N, C, OH, OW, KH, KW] of every pool window over x, outside reading `value`."""
    return _windows(_pool_pad(x, attrs, out, value), attrs["kernel_size"], out, attrs["stride"],
                    attrs.get("dilation", (1, 1)))


def _window_lengths(size: int, out: int, kernel: int, stride: int, pad: int, include_pad: bool):
    """Per output position along one axis, the length an average pool divides by (torch's
    rule): its window clipped to the padded input, or to the input if not `include_pad`."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    if not include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


def avg_divisor(attrs, hw, out):
    """What an average pool divides each window's sum by: divisor_override, or an [OH, OW]
    array of window sizes (the product of the two axes' _window_lengths)."""
    if attrs.get("divisor_override") is not None:
        return attrs["divisor_override"]
    include = attrs.get("count_include_pad", True)
    lengths = [_window_lengths(hw[i], out[i], attrs["kernel_size"][i], attrs["stride"][i], attrs["padding"][i],
                              include) for i in range(2)]
    return np.outer(*lengths)


def argmax_positions(x, attrs):
    """For each window of max_pool2d over `x`, the (row, column) in `x` of its argmax (the
    first maximum, a NaN counting as the maximum, the first position inside the image when
    all are -inf): two int arrays of shape [N, C, OH, OW]."""
    (kh, kw), stride, padding = attrs["kernel_size"], attrs["stride"], attrs["padding"]
    dilation = attrs.get("dilation", (1, 1))
    out = pool_out_hw(x.shape[2:], attrs)
    values = _pool_windows(x, attrs, out, -np.inf).reshape(x.shape[:2] + out + (kh * kw,))
    inside = _pool_windows(np.ones((1, 1) + x.shape[2:], bool), attrs, out, False)
    inside = np.broadcast_to(inside.reshape((1, 1) + out + (kh * kw,)), values.shape)
    best = np.argmax(values, axis=-1)  # numpy: the first maximum, or the first NaN
    all_lowest = np.all(~inside | (values == -np.inf), axis=-1)
    best = np.where(all_lowest, np.argmax(inside, axis=-1), best)
    rows = np.arange(out[0]).reshape(-1, 1) * stride[0] - padding[0] + best // kw * dilation[0]
    cols = np.arange(out[1]).reshape(1, -1) * stride[1] - padding[1] + best % kw * dilation[1]
    return rows, cols


def _batch_channel_index(shape):
    n, c = shape[:2]
    return np.arange(n).reshape(-1, 1, 1, 1), np.arange(c).reshape(1, -1, 1, 1)


def _check_groups(attrs, filters, channels=None) -> int:
    """The attrs' groups G, which must divide the filters and the channels (if given: the
    input gradient's channels are the weight's times G)."""
    if "groups" not in attrs:
        raise ShapeError("missing attribute 'groups' (expected stride, padding, dilation, groups)")
    groups = attrs["groups"]
    if not (isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1):
        raise ShapeError(f"groups must be an int >= 1, got {groups!r}")
    if filters % groups or (channels is not None and channels % groups):
        sizes = f"the {channels} channels and " if channels is not None else ""
        raise ShapeError(f"groups={groups} must divide {sizes}the {filters} filters")
    return groups


def _per_group(groups: int, axis: int, part):
    """part(i) for each group i, joined along `axis` (one group: part(0) itself)."""
    return part(0) if groups == 1 else np.concatenate([part(i) for i in range(groups)], axis=axis)


def _conv_flops(out, weight):
    """2 flops per (element of the forward conv's output `out`, tap of a filter of `weight`)."""
    return 2 * shapes.numel(out.shape) * shapes.numel(weight.shape[1:])


def _pool_flops(pooled, attrs):
    """One compare or add per window element of each element of `pooled`."""
    (kh, kw) = attrs["kernel_size"]
    return shapes.numel(pooled.shape) * kh * kw


def _torch_conv_attrs(node) -> dict:
    return {**{k: tuple(node.attrs[k]) for k in CONV_ATTRS}, "groups": node.attrs["groups"]}


def _torch_pool_args(node) -> tuple:
    return tuple(tuple(node.attrs[k]) for k in POOL_ATTRS)


def _torch_max_args(node) -> tuple:
    """kernel_size, stride, padding, dilation and ceil_mode, as torch's max pools take them."""
    return _torch_pool_args(node) + (node.attrs.get("dilation", (1, 1)), node.attrs.get("ceil_mode", False))


def _torch_avg_options(node) -> tuple:
    """ceil_mode, count_include_pad and divisor_override, as torch's average pools take them."""
    return tuple(node.attrs.get(k, POOL_OPTIONS[k]) for k in AVG_POOL_OPTIONS)


def _torch_argmax(x, node):
    """torch's flat index (into each H*W image) of every max_pool2d window's maximum of x."""
    return F.max_pool2d(x, *_torch_max_args(node), return_indices=True)[1]


# --- arguments as torch takes them, and the gradient ops' builders -----------------------------
def pair(value, what: str) -> tuple:
    """An int or a pair of ints, as a pair (torch.nn.functional's convention)."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if is_int(value):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise ShapeError(f"{what} must be an int or a pair of ints, got {value!r}")


def spatial_size(size, what: str) -> tuple:
    """(H, W) from a pair, or from a full [N, C, H, W] shape as torch.nn.grad takes it."""
    size = tuple(size) if isinstance(size, (tuple, list)) else size
    if isinstance(size, tuple) and len(size) == 4:
        size = size[2:]
    return pair(size, what)


def conv_padding(padding, kernel, stride, dilation) -> tuple:
    """conv2d's padding as torch takes it (ints, a pair, "valid" or "same"): the pair padded
    on both sides, and the pair padded after that at the bottom and right only. Only "same"
    has the second, where a (dilated) window's span less one is odd: torch pads the extra
    row or column after the image, and so does kgen.ops.conv2d (a pad view of x)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ShapeError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        if stride != (1, 1):
            raise ShapeError(f"conv2d: padding='same' needs stride 1, got stride {stride}")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return (total[0] // 2, total[1] // 2), (total[0] % 2, total[1] % 2)
    return pair(padding, "conv2d: padding"), (0, 0)


def _groups(groups) -> int:
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, (bool, np.bool_)) or groups < 1:
        raise ShapeError(f"conv2d: groups must be an int >= 1, got {groups!r}")
    return int(groups)


def conv_attrs(stride, padding, dilation, kernel, groups=1) -> dict:
    """The attrs of a convolution node with a (KH, KW) `kernel`, from torch-style arguments
    (a padding="same" that needs an extra row or column after the image is refused here:
    kgen.ops.conv2d pads x for it)."""
    stride, dilation = pair(stride, "conv2d: stride"), pair(dilation, "conv2d: dilation")
    both, extra = conv_padding(padding, kernel, stride, dilation)
    if any(extra):
        raise ShapeError(f"conv2d: padding='same' with kernel {tuple(kernel)} and dilation {dilation} pads "
                         f"one more after the image than before it, which only kgen.ops.conv2d does")
    return {"stride": stride, "padding": both, "dilation": dilation, "groups": _groups(groups)}


def _pool_option(op: str, key: str, value):
    """One pool option from a torch-style argument, checked."""
    if key == "dilation":
        return pair(value, f"{op}: dilation")
    if key == "divisor_override":
        if value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
                             and value >= 1):
            return None if value is None else int(value)
        raise ShapeError(f"{op}: divisor_override must be None or an int >= 1, got {value!r}")
    if not isinstance(value, (bool, np.bool_)):
        raise ShapeError(f"{op}: {key} must be True or False, got {value!r}")
    return bool(value)


def pool_attrs(op: str, kernel_size, stride, padding, **options) -> dict:
    """The attrs of a pooling node from torch-style arguments; `stride` defaults to
    `kernel_size`. Options (POOL_OPTIONS) at torch's default are left out."""
    kernel = pair(kernel_size, f"{op}: kernel_size")
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) else \
        pair(stride, f"{op}: stride")
    attrs = {"kernel_size": kernel, "stride": stride, "padding": pair(padding, f"{op}: padding")}
    for key, value in options.items():
        value = _pool_option(op, key, value)
        if value != POOL_OPTIONS[key]:
            attrs[key] = value
    return attrs


# The gradient ops are IR primitives that the VJP rules below build (and tests, to check
# them alone), not kgen.ops functions, as torch's aten backward ops are no torch.* functions.
# They take nodes of one floating dtype as the rules have them; the shape rules check it.
def conv2d_input_grad(g, w, input_size, stride=1, padding=0, dilation=1, groups=1) -> Node:
    """The gradient of conv2d with respect to its input x, of spatial size `input_size`
    ((H, W) or x's whole shape), given the output gradient g (torch.nn.grad.conv2d_input)."""
    attrs = conv_attrs(stride, padding, dilation, w.shape[2:], groups)
    attrs["input_size"] = spatial_size(input_size, "conv2d_input_grad: input_size")
    return Node("conv2d_input_grad", (g, w), attrs)


def conv2d_weight_grad(x, g, kernel_size, stride=1, padding=0, dilation=1, groups=1) -> Node:
    """The gradient of conv2d with respect to its weight, of kernel size `kernel_size`
    ((KH, KW) or w's whole shape), given x and the output gradient g (torch.nn.grad.conv2d_weight)."""
    kernel = spatial_size(kernel_size, "conv2d_weight_grad: kernel_size")
    attrs = conv_attrs(stride, padding, dilation, kernel, groups)
    attrs["kernel_size"] = kernel
    return Node("conv2d_weight_grad", (x, g), attrs)


def max_pool2d_grad(g, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> Node:
    """The gradient of max_pool2d(x): each element of g goes to its window's argmax in x."""
    return Node("max_pool2d_grad", (g, x), pool_attrs("max_pool2d_grad", kernel_size, stride, padding,
                                                      dilation=dilation, ceil_mode=ceil_mode))


def max_pool2d_gather(t, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> Node:
    """t (shaped like x) read at the argmax of each max_pool2d window of x: the transpose of
    max_pool2d_grad, and max_pool2d's derivative in the direction t."""
    return Node("max_pool2d_gather", (t, x), pool_attrs("max_pool2d_gather", kernel_size, stride, padding,
                                                        dilation=dilation, ceil_mode=ceil_mode))


def avg_pool2d_grad(g, input_size, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                    divisor_override=None) -> Node:
    """The gradient of avg_pool2d with respect to its input of spatial size `input_size`."""
    attrs = pool_attrs("avg_pool2d_grad", kernel_size, stride, padding, ceil_mode=ceil_mode,
                       count_include_pad=count_include_pad, divisor_override=divisor_override)
    attrs["input_size"] = spatial_size(input_size, "avg_pool2d_grad: input_size")
    return Node("avg_pool2d_grad", (g,), attrs)


# --- conv2d: the implicit-GEMM template of kgen/kernels/conv.py ----------------------------------
def _infer_conv2d(inputs, attrs):
    x, w = inputs
    _check_float(x, w)
    _check_4d(x, "x", "[N, C, H, W]")
    _check_4d(w, "w", "[F, C, KH, KW]", static_from=0)
    _check_pairs(attrs, CONV_ATTRS)
    groups = _check_groups(attrs, w.shape[0], x.shape[1])
    if x.shape[1] != w.shape[1] * groups:
        per = f" ({w.shape[1]} per group of {groups})" if groups > 1 else ""
        raise ShapeError(f"x {_fmt(x)} has {x.shape[1]} channels but w {_fmt(w)} expects "
                         f"{w.shape[1] * groups}{per}")
    oh, ow = _check_fits(x.shape[2:], w.shape[2:], attrs)
    return x.dtype, (x.shape[0], w.shape[0], oh, ow)


def _conv2d_reference(node, arrays, shape):
    x, w = _accumulating(*arrays)
    a = node.attrs
    cols = _windows(_pad(x, a["padding"], 0), w.shape[2:], shape[2:], a["stride"], a["dilation"])
    c, f = w.shape[1], w.shape[0] // a["groups"]  # per group
    return _per_group(a["groups"], 3, lambda i: np.tensordot(cols[:, i * c:(i + 1) * c], w[i * f:(i + 1) * f],
                                                              axes=([1, 4, 5], [1, 2, 3]))).transpose(0, 3, 1, 2)


def _conv2d_vjp(g, node):
    x, w = node.inputs
    return (conv2d_input_grad(g, w, x.shape[2:], **_conv_args(node.attrs)),
            conv2d_weight_grad(x, g, w.shape[2:], **_conv_args(node.attrs)))


def _conv2d_gemm(node):  # rows N*OH*OW (output pixels), cols F/G, over C/G*KH*KW
    x, w = node.inputs
    return shapes.numel([node.shape[0], *node.shape[2:]]), w.shape[0] // node.attrs["groups"], \
        shapes.numel(w.shape[1:]), x, w


def group_gemm(node):
    """(M, N, K, A operand, B operand) of one group's GEMM of a convolution node, as
    kgen/kernels/conv.py tiles it: with one group, the node's `gemm` fact."""
    return _GROUP_GEMMS[node.op](node)


def is_depthwise(node) -> bool:
    """Whether a convolution node (conv2d or a gradient) has G > 1 groups of one channel
    (and some filters): kgen/kernels/depthwise.py computes it, with no GEMM."""
    weight = node if node.op == "conv2d_weight_grad" else node.inputs[1]  # [F, C/G, KH, KW]
    return node.attrs["groups"] > 1 and weight.shape[1] == 1 and weight.shape[0] > 0


def _one_gemm(group_extents):
    """A `gemm` fact: one group's GEMM when there is one group, else None (see the module)."""
    return lambda node: group_extents(node) if node.attrs["groups"] == 1 else None


register(OpDef("conv2d", "template", _infer_conv2d, _conv2d_reference, _conv2d_vjp, "conv2d", arity=2,
               epilogue=True,  # bias and activation run in the conv kernel (fusion rule E1)
               flops=lambda node: _conv_flops(node, node.inputs[1]), gemm=_one_gemm(_conv2d_gemm),
               vendor=lambda node, operands: F.conv2d(*operands, **_torch_conv_attrs(node))))


# --- conv2d_input_grad: dT/dx --------------------------------------------------------------------
def _infer_conv2d_input_grad(inputs, attrs):
    g, w = inputs
    _check_float(g, w)
    _check_4d(g, "g", "[N, F, OH, OW]")
    _check_4d(w, "w", "[F, C, KH, KW]", static_from=0)
    _check_pairs(attrs, CONV_ATTRS + ("input_size",))
    if g.shape[1] != w.shape[0]:
        raise ShapeError(f"g {_fmt(g)} has {g.shape[1]} channels but w {_fmt(w)} "
                         f"has {w.shape[0]} filters")
    groups = _check_groups(attrs, w.shape[0])
    hw = attrs["input_size"]
    _check_grad_size(g, _check_fits(hw, w.shape[2:], attrs), hw)
    return g.dtype, (g.shape[0], w.shape[1] * groups) + tuple(hw)


def _conv2d_input_grad_reference(node, arrays, shape):
    g, w = _accumulating(*arrays)
    groups = node.attrs["groups"]
    f = w.shape[0] // groups  # per group
    return _scatter_windows(g, shape, w.shape[2:], g.shape[2:], node.attrs, lambda kh, kw: _per_group(
        groups, 1, lambda i: np.einsum("nfpq,fc->ncpq", g[:, i * f:(i + 1) * f], w[i * f:(i + 1) * f, :, kh, kw])))


def _conv2d_input_grad_vjp(c, node):
    g, w = node.inputs  # <c, dT/dx(g, w)> = T(c, w, g)
    return (_ops().conv2d(c, w, **_conv_args(node.attrs)),
            conv2d_weight_grad(c, g, w.shape[2:], **_conv_args(node.attrs)))


def _conv2d_input_grad_gemm(node):  # rows N*H*W (input pixels), cols C/G, over F/G*KH*KW
    g, w = node.inputs
    groups = node.attrs["groups"]
    return shapes.numel([node.shape[0], *node.shape[2:]]), node.shape[1] // groups, \
        shapes.numel([w.shape[0] // groups, *w.shape[2:]]), g, w


def _conv2d_input_grad_vendor(node, operands):
    g, w = operands
    size = (g.shape[0], w.shape[1] * node.attrs["groups"]) + tuple(node.attrs["input_size"])
    return torch.nn.grad.conv2d_input(size, w, g, **_torch_conv_attrs(node))


register(OpDef("conv2d_input_grad", "template", _infer_conv2d_input_grad, _conv2d_input_grad_reference,
               _conv2d_input_grad_vjp, "conv2d_input_grad", arity=2,
               epilogue=True, flops=lambda node: _conv_flops(*node.inputs), gemm=_one_gemm(_conv2d_input_grad_gemm),
               vendor=_conv2d_input_grad_vendor))


# --- conv2d_weight_grad: dT/dw -------------------------------------------------------------------
def _infer_conv2d_weight_grad(inputs, attrs):
    x, g = inputs
    _check_float(x, g)
    _check_4d(x, "x", "[N, C, H, W]")
    _check_4d(g, "g", "[N, F, OH, OW]")
    _check_pairs(attrs, CONV_ATTRS + ("kernel_size",))
    if not shapes.dims_equal(x.shape[0], g.shape[0]):
        raise ShapeError(f"x {_fmt(x)} and g {_fmt(g)} differ in batch size")
    groups = _check_groups(attrs, g.shape[1], x.shape[1])
    khw = attrs["kernel_size"]
    _check_grad_size(g, _check_fits(x.shape[2:], khw, attrs), x.shape[2:])
    return x.dtype, (g.shape[1], x.shape[1] // groups) + tuple(khw)


def _conv2d_weight_grad_reference(node, arrays, shape):
    x, g = _accumulating(*arrays)
    a = node.attrs
    cols = _windows(_pad(x, a["padding"], 0), shape[2:], g.shape[2:], a["stride"], a["dilation"])
    c, f = shape[1], shape[0] // a["groups"]  # per group
    return _per_group(a["groups"], 0, lambda i: np.tensordot(g[:, i * f:(i + 1) * f], cols[:, i * c:(i + 1) * c],
                                                              axes=([0, 2, 3], [0, 2, 3])))


def _conv2d_weight_grad_vjp(c, node):
    x, g = node.inputs  # <c, dT/dw(x, g)> = T(x, c, g)
    return (conv2d_input_grad(g, c, x.shape[2:], **_conv_args(node.attrs)),
            _ops().conv2d(x, c, **_conv_args(node.attrs)))


def _conv2d_weight_grad_gemm(node):  # rows F/G, cols C/G*KH*KW, over N*OH*OW
    x, g = node.inputs
    return node.shape[0] // node.attrs["groups"], shapes.numel(node.shape[1:]), \
        shapes.numel([g.shape[0], *g.shape[2:]]), g, x


def _conv2d_weight_grad_vendor(node, operands):
    x, g = operands
    size = (g.shape[1], x.shape[1]) + tuple(node.attrs["kernel_size"])
    return torch.nn.grad.conv2d_weight(x, size, g, **_torch_conv_attrs(node))


register(OpDef("conv2d_weight_grad", "template", _infer_conv2d_weight_grad, _conv2d_weight_grad_reference,
               _conv2d_weight_grad_vjp, "conv2d_weight_grad", arity=2,
               epilogue=True, flops=lambda node: _conv_flops(node.inputs[1], node),
               gemm=_one_gemm(_conv2d_weight_grad_gemm),
               vendor=_conv2d_weight_grad_vendor))

_GROUP_GEMMS = {"conv2d": _conv2d_gemm, "conv2d_input_grad": _conv2d_input_grad_gemm,
                "conv2d_weight_grad": _conv2d_weight_grad_gemm}


# --- max_pool2d (the templates of kgen/kernels/pool.py from here on) -----------------------------
def _check_pool_options(attrs, allowed) -> None:
    """Only the options of `allowed` may be set, each to a valid value other than torch's default."""
    for key in set(attrs) - set(POOL_ATTRS) - {"input_size"}:
        if key not in allowed:
            raise ShapeError(f"unknown attribute {key!r} (expected {', '.join(POOL_ATTRS + tuple(allowed))})")
        value = attrs[key]
        if key == "dilation":
            _check_pairs(attrs, ("dilation",))
        elif key == "divisor_override":
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ShapeError(f"divisor_override must be an int >= 1, got {value!r}")
        elif value is not (not POOL_OPTIONS[key]):  # a flag is present only when not torch's default
            raise ShapeError(f"{key} is present only as {not POOL_OPTIONS[key]}, got {value!r}")


def _check_windows_hold_input(hw, out, attrs) -> None:
    """Every window must hold an element of the image: a dilated window can step over it,
    where torch gives -inf and an index outside the image."""
    dilation = attrs.get("dilation", (1, 1))
    for i in range(2):
        k, s, p = (attrs[key][i] for key in POOL_ATTRS)
        for o in range(out[i]):
            if not any(0 <= o * s - p + j * dilation[i] < hw[i] for j in range(k)):
                raise ShapeError(f"window {o} along axis {2 + i} (kernel {k}, stride {s}, padding {p}, "
                                 f"dilation {dilation[i]}) holds no element of the input's {hw[i]}")


def _pool_shape(hw, attrs, allowed) -> tuple:
    """(OH, OW) of a pool of the options `allowed` over an image of `hw`, checked."""
    _check_pairs(attrs, POOL_ATTRS)
    _check_pool_options(attrs, allowed)
    _check_pool_padding(attrs)
    out = pool_out_hw(hw, attrs)
    if min(out) < 1:  # then floor's count is below 1 too: the window is larger than the padded input
        _check_fits(hw, attrs["kernel_size"], attrs)
    _check_windows_hold_input(hw, out, attrs)
    return out


def _infer_pool(allowed):
    def infer(inputs, attrs):
        (x,) = inputs
        _check_float(x)
        _check_4d(x, "x", "[N, C, H, W]")
        oh, ow = _pool_shape(x.shape[2:], attrs, allowed)
        return x.dtype, (x.shape[0], x.shape[1], oh, ow)
    return infer


def _max_pool2d_reference(node, arrays, shape):
    (x,) = arrays
    return _pool_windows(x, node.attrs, shape[2:], -np.inf).max(axis=(4, 5))


def _max_pool2d_vjp(g, node):
    return (max_pool2d_grad(g, node.inputs[0], **_pool_args(node.attrs)),)


register(OpDef("max_pool2d", "template", _infer_pool(MAX_POOL_OPTIONS), _max_pool2d_reference, _max_pool2d_vjp,
               "max_pool2d", arity=1,
               epilogue=True, flops=lambda node: _pool_flops(node, node.attrs),
               vendor=lambda node, operands: F.max_pool2d(*operands, *_torch_max_args(node))))


# --- max_pool2d_indices: each window's argmax, as torch's return_indices gives it ----------------
def _infer_max_pool2d_indices(inputs, attrs):
    return dtypes.int64, _infer_pool(MAX_POOL_OPTIONS)(inputs, attrs)[1]


def _max_pool2d_indices_reference(node, arrays, shape):
    (x,) = arrays
    rows, cols = argmax_positions(x, node.attrs)
    return np.broadcast_to(rows * x.shape[3] + cols, shape).astype(np.int64)


# A template of its own (the IR has one output per node), as max_pool2d's argmax rule finds it;
# its int64 result passes no gradient and feeds no epilogue.
register(OpDef("max_pool2d_indices", "template", _infer_max_pool2d_indices, _max_pool2d_indices_reference, None,
               "max_pool2d_indices", arity=1,
               flops=lambda node: _pool_flops(node, node.attrs),
               vendor=lambda node, operands: _torch_argmax(*operands, node)))


# --- max_pool2d_grad: g routed to each window's argmax -------------------------------------------
def _infer_max_pool2d_grad(inputs, attrs):
    g, x = inputs
    _check_float(g, x)
    _check_4d(g, "g", "[N, C, OH, OW]")
    pooled = _infer_pool(MAX_POOL_OPTIONS)((x,), attrs)[1]
    _same_nc(g, x, "g")
    _check_grad_size(g, pooled[2:], x.shape[2:])
    return x.dtype, x.shape


def _max_pool2d_grad_reference(node, arrays, shape):
    g, x = arrays
    rows, cols = argmax_positions(x, node.attrs)
    out = np.zeros(shape, np.result_type(g.dtype, np.float32))
    np.add.at(out, _batch_channel_index(g.shape) + (rows, cols), g)
    return out


def _max_pool2d_grad_vjp(c, node):
    return (max_pool2d_gather(c, node.inputs[1], **_pool_args(node.attrs)), None)


def _max_pool2d_grad_vendor(node, operands):
    g, x = operands
    return torch.ops.aten.max_pool2d_with_indices_backward(g, x, *_torch_max_args(node), _torch_argmax(x, node))


register(OpDef("max_pool2d_grad", "template", _infer_max_pool2d_grad, _max_pool2d_grad_reference,
               _max_pool2d_grad_vjp, "max_pool2d_grad", arity=2,
               epilogue=True, flops=lambda node: _pool_flops(node.inputs[0], node.attrs),
               vendor=_max_pool2d_grad_vendor))


# --- max_pool2d_gather: t read at each window's argmax -------------------------------------------
def _infer_max_pool2d_gather(inputs, attrs):
    t, x = inputs
    _check_float(t, x)
    _check_4d(t, "t", "[N, C, H, W]")
    pooled = _infer_pool(MAX_POOL_OPTIONS)((x,), attrs)[1]
    if not (t.ndim == x.ndim and all(shapes.dims_equal(a, b) for a, b in zip(t.shape, x.shape))):
        raise ShapeError(f"t {_fmt(t)} must have x's shape {_fmt(x)}")
    return x.dtype, pooled


def _max_pool2d_gather_reference(node, arrays, shape):
    t, x = arrays
    rows, cols = argmax_positions(x, node.attrs)
    return t[_batch_channel_index(shape) + (rows, cols)]


def _max_pool2d_gather_vjp(c, node):
    return (max_pool2d_grad(c, node.inputs[1], **_pool_args(node.attrs)), None)


def _max_pool2d_gather_vendor(node, operands):
    t, x = operands
    index = _torch_argmax(x, node)
    return t.flatten(2).gather(2, index.flatten(2)).reshape(index.shape)


register(OpDef("max_pool2d_gather", "template", _infer_max_pool2d_gather, _max_pool2d_gather_reference,
               _max_pool2d_gather_vjp, "max_pool2d_gather", arity=2,
               epilogue=True, flops=lambda node: _pool_flops(node, node.attrs),
               vendor=_max_pool2d_gather_vendor))


# --- avg_pool2d ----------------------------------------------------------------------------------
def _avg_pool2d_reference(node, arrays, shape):
    (x,) = _accumulating(*arrays)
    windows = _pool_windows(x, node.attrs, shape[2:], 0)
    return windows.sum(axis=(4, 5)) / avg_divisor(node.attrs, x.shape[2:], shape[2:])


def _avg_pool2d_vjp(g, node):
    return (avg_pool2d_grad(g, node.inputs[0].shape[2:], **_pool_args(node.attrs)),)


register(OpDef("avg_pool2d", "template", _infer_pool(AVG_POOL_OPTIONS), _avg_pool2d_reference, _avg_pool2d_vjp,
               "avg_pool2d", arity=1,
               epilogue=True, flops=lambda node: _pool_flops(node, node.attrs),
               vendor=lambda node, operands: F.avg_pool2d(*operands, *_torch_pool_args(node),
                                                          *_torch_avg_options(node))))


# --- avg_pool2d_grad -----------------------------------------------------------------------------
def _infer_avg_pool2d_grad(inputs, attrs):
    (g,) = inputs
    _check_float(g)
    _check_4d(g, "g", "[N, C, OH, OW]")
    _check_pairs(attrs, ("input_size",))
    hw = attrs["input_size"]
    _check_grad_size(g, _pool_shape(hw, attrs, AVG_POOL_OPTIONS), hw)
    return g.dtype, (g.shape[0], g.shape[1]) + tuple(hw)


def _avg_pool2d_grad_reference(node, arrays, shape):
    (g,) = _accumulating(*arrays)
    a = node.attrs
    scaled = g / avg_divisor(a, shape[2:], g.shape[2:])
    return _scatter_windows(g, shape, a["kernel_size"], g.shape[2:], a, lambda i, j: scaled)


def _avg_pool2d_grad_vjp(c, node):
    return (_ops().avg_pool2d(c, **_pool_args(node.attrs)),)


def _avg_pool2d_grad_vendor(node, operands):
    (g,) = operands
    x = g.new_zeros(tuple(g.shape[:2]) + tuple(node.attrs["input_size"]))  # only its shape is read
    return torch.ops.aten.avg_pool2d_backward(g, x, *_torch_pool_args(node), *_torch_avg_options(node))


register(OpDef("avg_pool2d_grad", "template", _infer_avg_pool2d_grad, _avg_pool2d_grad_reference,
               _avg_pool2d_grad_vjp, "avg_pool2d_grad", arity=1,
               epilogue=True, flops=lambda node: _pool_flops(node.inputs[0], node.attrs),
               vendor=_avg_pool2d_grad_vendor))
