"""Fuzz catalog entries for reductions (sum, mean, max over any axes, keepdims) and the row
ops built on them (softmax, log_softmax, logsumexp).

Empty axes: a sum over one is 0 and is drawn; a mean over one is NaN and a max over one is
undefined, so those (and softmax-like ops across an empty axis) are never drawn.
"""
from __future__ import annotations

import math

from kgen.fuzz.catalog import Gen, float_pred, need, norm_axes, numeric_pred, register, want_float
from kgen.fuzz.program import BOOL, FLOAT, Illegal, Info


def axis_code(axis) -> str:
    if axis is None or isinstance(axis, int):
        return repr(axis)
    return "(" + ", ".join(map(str, axis)) + ("," if len(axis) == 1 else "") + ")"


def draw_axis(g: Gen, info: Info, nonempty: bool, allow_none=True, allow_tuple=True):
    """An axis argument for `info`: None, an int or a tuple (negative now and then), whose
    axes are never empty when `nonempty`."""
    rank = len(info.shape)
    usable = [a for a in range(rank) if not nonempty or g.low(info.shape[a]) >= 1]
    if rank == 0:
        return None
    if not usable:
        raise Illegal("every axis is empty")
    r = g.rng.random()
    if allow_none and r < 0.2 and len(usable) == rank:
        return None
    if not allow_tuple or r < 0.6:
        a = g.choice(usable)
        return a - rank if g.chance(0.3) else a
    axes = g.rng.sample(usable, g.rng.randint(1, len(usable)))
    return [a - rank if g.chance(0.3) else a for a in axes]


def reduced(shape, axes, keepdims) -> tuple:
    return tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdims else \
        tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_infer(name):
    def infer(step, infos, sizes):
        (x,) = infos
        need(x.dtype != BOOL, "cannot reduce bools")
        axes = norm_axes(step["axis"], len(x.shape))
        dims = [x.shape[a] for a in axes]
        shape = reduced(x.shape, axes, step["keepdims"])
        if name == "sum":
            cmin, cmax = sizes.count_range(dims)
            return Info(shape, x.dtype, min(x.lo * cmin, x.lo * cmax), max(x.hi * cmin, x.hi * cmax), 0.0,
                        x.dtype != FLOAT and x.exact)
        if name == "mean":
            need(sizes.count_range(dims)[0] >= 1, "a mean over no elements")
            return Info(shape, FLOAT, x.lo, x.hi)
        need(all(sizes.low(d) >= 1 for d in dims), "a max over an empty axis")
        return Info(shape, x.dtype, x.lo, x.hi, x.absmin, x.exact)
    return infer


def _reduce_propose(name):
    def propose(g: Gen):
        x = g.pick(numeric_pred)
        if x is None:
            raise Illegal("no operand")
        info = g.infos[x]
        axis = draw_axis(g, info, nonempty=(name != "sum"))
        g.add(name, [x], axis=axis, keepdims=g.chance(0.4), spell=g.choice(["fn", "method"]))
    return propose


def _reduce_kgen(name):
    def code(step, args, infos):
        axis, keep = axis_code(step["axis"]), step["keepdims"]
        if step.get("spell") == "method":
            return f"{args[0]}.{name}(axis={axis}, keepdims={keep})"
        return f"ops.{name}({args[0]}, axis={axis}, keepdims={keep})"
    return code


def _reduce_torch(name):
    def code(step, args, infos):
        x, rank = args[0], len(infos[0].shape)
        if name == "mean":
            x = f"{x}.to(torch.float64)"
        if rank == 0:
            return x
        axis = step["axis"]
        dims = tuple(range(rank)) if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
        fn = {"sum": "torch.sum", "mean": "torch.mean", "max": "torch.amax"}[name]
        return f"{fn}({x}, dim={axis_code(list(dims))}, keepdim={step['keepdims']})"
    return code


for _name in ("sum", "mean", "max"):
    register(_name, _reduce_propose(_name), _reduce_infer(_name), _reduce_kgen(_name), _reduce_torch(_name),
             weight=1.5)


# --- softmax, log_softmax, logsumexp ------------------------------------------------------------
def _row_infer(name):
    def infer(step, infos, sizes):
        (x,) = infos
        want_float(x)
        axes = norm_axes(step["axis"], len(x.shape))
        need(len(x.shape) >= 1, f"{name} of a scalar")
        dims = [x.shape[a] for a in axes]
        need(all(sizes.low(d) >= 1 for d in dims), f"{name} across an empty axis")
        count = sizes.count_range(dims)[1]
        if name == "softmax":
            return Info(x.shape, FLOAT, 0.0, 1.0)
        if name == "log_softmax":
            return Info(x.shape, FLOAT, -(x.hi - x.lo) - math.log(count), 0.0)
        return Info(reduced(x.shape, axes, step["keepdims"]), FLOAT, x.lo, x.hi + math.log(count))
    return infer


def _row_propose(name):
    def propose(g: Gen):
        x = g.pick(lambda i: float_pred(i) and len(i.shape) >= 1)
        if x is None:
            raise Illegal("no operand")
        info = g.infos[x]
        if name == "logsumexp":
            axis = draw_axis(g, info, nonempty=True, allow_none=False)
            g.add(name, [x], axis=axis, keepdims=g.chance(0.4))
        else:
            g.add(name, [x], axis=draw_axis(g, info, nonempty=True, allow_none=False, allow_tuple=False))
    return propose


def _row_kgen(name):
    def code(step, args, infos):
        extra = f", keepdims={step['keepdims']}" if name == "logsumexp" else ""
        return f"ops.{name}({args[0]}, axis={axis_code(step['axis'])}{extra})"
    return code


def _row_torch(name):
    def code(step, args, infos):
        if name == "logsumexp":
            return f"torch.logsumexp({args[0]}, dim={axis_code(step['axis'])}, keepdim={step['keepdims']})"
        return f"torch.{name}({args[0]}, dim={step['axis']})"
    return code


for _name in ("softmax", "log_softmax", "logsumexp"):
    register(_name, _row_propose(_name), _row_infer(_name), _row_kgen(_name), _row_torch(_name), weight=1.5)
