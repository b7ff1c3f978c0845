"""Fuzz catalog entries for views and joins: reshape, transpose/permute/swap_last,
broadcast_to, expand_dims, squeeze, flatten, sum_to, indexing (x[...]), slice_strided, pad
(with a fill value too), pad_strided, concatenate, stack and split (equal sections, or sizes).

A symbolic axis (N) is only ever taken whole by slicing and padding, as kgen requires; empty
axes (size 0) and empty operands of a concatenate are drawn on purpose.
"""
from __future__ import annotations

import sympy

from kgen.fuzz.catalog import Gen, broadcast, code_shape, need, norm_axis, register
from kgen.fuzz.program import (BOOL, FLOAT, N, Illegal, Info, dims_equal, like, numel, shape_json,
                               shape_of)


def _any(g: Gen, pred=None):
    x = g.pick(lambda i: i.dtype != BOOL and (pred is None or pred(i)))
    if x is None:
        raise Illegal("no operand")
    return x


def view(x: Info, shape, zero=False) -> Info:
    """x's values under a new shape (with zeros too, for pads)."""
    if zero:
        return like(x, shape=tuple(shape), lo=min(x.lo, 0), hi=max(x.hi, 0), absmin=0.0)
    return like(x, shape=tuple(shape))


def _factors(n: int) -> list:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


# --- reshape ------------------------------------------------------------------------------------
def _resolve(target, total):
    """The reshape's target with its -1 filled in (Illegal if that is not a whole dim)."""
    dims = [to for to in target]
    holes = [k for k, d in enumerate(dims) if d == -1]
    need(len(holes) <= 1, "two -1 in a reshape")
    known = numel([d for d in dims if d != -1])
    if holes:
        need(known != 0, "-1 next to an empty dim")
        missing = sympy.simplify(sympy.sympify(total) / known)
        coeff, rest = missing.as_coeff_Mul()
        need(coeff.is_Integer and (rest == 1 or rest.free_symbols <= {N} and rest.is_Pow or rest == N),
             f"cannot infer -1 as {missing}")
        dims[holes[0]] = int(missing) if missing.is_Integer else missing
    need(dims_equal(numel(dims), total), "reshape changes the element count")
    return tuple(dims)


def _reshape_infer(step, infos, sizes):
    (x,) = infos
    return view(x, _resolve(shape_of(step["shape"]), numel(x.shape)))


def _reshape_propose(g: Gen):
    x = _any(g)
    total = numel(g.infos[x].shape)
    coeff, rest = sympy.sympify(total).as_coeff_Mul()
    coeff = int(coeff)
    rank = g.rng.randint(0 if coeff == 1 and rest == 1 else 1, 4)
    if coeff == 0:
        shape = [g.choice([1, 2, 3, N] if g.symbolic else [1, 2, 3]) for _ in range(rank)]
        shape[g.rng.randrange(rank)] = 0
    else:
        shape = [1] * rank
        for f in _factors(coeff) if rank else []:
            shape[g.rng.randrange(rank)] *= f
        if rest != 1:
            k = g.rng.randrange(rank)
            shape[k] = shape[k] * rest
    if g.chance(0.3):
        shape.insert(g.rng.randint(0, len(shape)), 1)
    if g.chance(0.3) and coeff != 0 and shape:
        shape[g.rng.randrange(len(shape))] = -1
    g.add("reshape", [x], shape=shape_json(shape), spell=g.choice(["fn", "method"]))


def _reshape_kgen(step, args, infos):
    shape = code_shape(shape_of(step["shape"]))
    return f"{args[0]}.reshape({shape})" if step.get("spell") == "method" else f"ops.reshape({args[0]}, {shape})"


def _reshape_torch(step, args, infos):
    return f"{args[0]}.reshape({code_shape(_resolve(shape_of(step['shape']), numel(infos[0].shape)))})"


register("reshape", _reshape_propose, _reshape_infer, _reshape_kgen, _reshape_torch, weight=1.5)


# --- transpose, permute, swap_last ----------------------------------------------------------------
def _perm(step, rank):
    axes = step.get("axes")
    if axes is None:
        return list(reversed(range(rank)))
    axes = [norm_axis(a, rank) for a in axes]
    need(sorted(axes) == list(range(rank)), "not a permutation")
    return axes


def _transpose_infer(step, infos, sizes):
    (x,) = infos
    if step["op"] == "swap_last":
        need(len(x.shape) >= 2, "swap_last needs two axes")
        perm = list(range(len(x.shape)))
        perm[-2], perm[-1] = perm[-1], perm[-2]
    else:
        perm = _perm(step, len(x.shape))
    return view(x, [x.shape[a] for a in perm])


def _transpose_propose(name):
    def propose(g: Gen):
        x = _any(g, lambda i: len(i.shape) >= (2 if name == "swap_last" else 1))
        rank = len(g.infos[x].shape)
        attrs = {}
        if name != "swap_last":
            axes = list(range(rank))
            g.rng.shuffle(axes)
            attrs["axes"] = None if name == "transpose" and g.chance(0.25) else \
                [a - rank if g.chance(0.2) else a for a in axes]
            attrs["spell"] = g.choice(["fn", "method"])
        g.add(name, [x], **attrs)
    return propose


def _transpose_kgen(step, args, infos):
    x, axes = args[0], step.get("axes")
    if step["op"] == "swap_last":
        return f"ops.swap_last({x})"
    if step["op"] == "permute":
        return f"ops.permute({x}, {', '.join(map(str, axes))})" if step.get("spell") == "fn" else \
            f"{x}.transpose({', '.join(map(str, axes))})"
    if axes is None:
        return f"{x}.T" if step.get("spell") == "method" else f"ops.transpose({x})"
    return f"ops.transpose({x}, {tuple(axes)!r})" if step.get("spell") == "fn" else f"{x}.transpose({tuple(axes)!r})"


def _transpose_torch(step, args, infos):
    rank = len(infos[0].shape)
    if step["op"] == "swap_last":
        return f"{args[0]}.transpose(-1, -2)"
    return f"{args[0]}.permute({tuple(_perm(step, rank))!r})"


for _name in ("transpose", "permute", "swap_last"):
    register(_name, _transpose_propose(_name), _transpose_infer, _transpose_kgen, _transpose_torch)


# --- broadcast_to, expand_dims, squeeze, flatten, sum_to ---------------------------------------------
def _broadcast_infer(step, infos, sizes):
    (x,) = infos
    target = shape_of(step["shape"])
    need(len(target) >= len(x.shape), "broadcast_to a lower rank")
    out = broadcast(x.shape, target)
    need(all(dims_equal(a, b) for a, b in zip(out, target)), "not a broadcast")
    return view(x, target)


def _broadcast_propose(g: Gen):
    x = _any(g)
    shape = g.infos[x].shape
    lead = g.rng.randint(0, max(0, 4 - len(shape)))
    target = tuple(g.dim(allow_n=all(isinstance(d, int) for d in shape)) for _ in range(lead))
    target += tuple(g.dim() if d == 1 and g.chance(0.7) else d for d in shape)
    if sum(1 for d in target if d == N) > 1:
        raise Illegal("two N")
    g.add("broadcast_to", [x], shape=shape_json(target))


register("broadcast_to", _broadcast_propose, _broadcast_infer,
         lambda step, args, infos: f"ops.broadcast_to({args[0]}, {code_shape(shape_of(step['shape']))})",
         lambda step, args, infos: f"torch.broadcast_to({args[0]}, {code_shape(shape_of(step['shape']))})")


def _expand_infer(step, infos, sizes):
    (x,) = infos
    a = norm_axis(step["axis"], len(x.shape) + 1)
    return view(x, x.shape[:a] + (1,) + x.shape[a:])


def _expand_propose(g: Gen):
    x = _any(g, lambda i: len(i.shape) < 4)
    rank = len(g.infos[x].shape)
    g.add("expand_dims", [x], axis=g.rng.randint(-rank - 1, rank))


register("expand_dims", _expand_propose, _expand_infer,
         lambda step, args, infos: f"ops.expand_dims({args[0]}, {step['axis']})",
         lambda step, args, infos: f"torch.unsqueeze({args[0]}, {step['axis']})")


def _squeeze_axes(step, x: Info) -> tuple:
    axis = step["axis"]
    if axis is None:
        return tuple(a for a, d in enumerate(x.shape) if d == 1)
    axes = [axis] if isinstance(axis, int) else axis
    axes = [norm_axis(a, len(x.shape)) for a in axes]
    need(len(set(axes)) == len(axes), "repeated axis")
    need(all(x.shape[a] == 1 for a in axes), "squeeze of an axis that is not 1")
    return tuple(sorted(axes))


def _squeeze_infer(step, infos, sizes):
    (x,) = infos
    axes = _squeeze_axes(step, x)
    return view(x, [d for a, d in enumerate(x.shape) if a not in axes])


def _squeeze_propose(g: Gen):
    x = _any(g, lambda i: 1 in i.shape)
    shape = g.infos[x].shape
    ones = [a for a, d in enumerate(shape) if d == 1]
    r = g.rng.random()
    if r < 0.3:
        axis = None
    elif r < 0.7:
        axis = g.choice(ones)
        axis = axis - len(shape) if g.chance(0.3) else axis
    else:
        axis = g.rng.sample(ones, g.rng.randint(1, len(ones)))
    g.add("squeeze", [x], axis=axis)


def _squeeze_torch(step, args, infos):
    axes = _squeeze_axes(step, infos[0])
    return f"torch.squeeze({args[0]}, dim={axes!r})" if axes else args[0]


def _axis_arg(axis) -> str:
    return repr(tuple(axis)) if isinstance(axis, list) else repr(axis)


register("squeeze", _squeeze_propose, _squeeze_infer,
         lambda step, args, infos: f"ops.squeeze({args[0]}, {_axis_arg(step['axis'])})", _squeeze_torch)


def _flatten_infer(step, infos, sizes):
    (x,) = infos
    s = norm_axis(step["start"], max(len(x.shape), 1))
    return view(x, x.shape[:s] + (numel(x.shape[s:]),))


def _flatten_propose(g: Gen):
    x = _any(g, lambda i: len(i.shape) >= 1)
    rank = len(g.infos[x].shape)
    g.add("flatten", [x], start=g.rng.randint(-rank, rank - 1))


register("flatten", _flatten_propose, _flatten_infer,
         lambda step, args, infos: f"ops.flatten({args[0]}, {step['start']})",
         lambda step, args, infos: f"torch.flatten({args[0]}, {step['start']})")


def _sum_to_infer(step, infos, sizes):
    (x,) = infos
    target = shape_of(step["shape"])
    lead = len(x.shape) - len(target)
    need(lead >= 0, "sum_to a higher rank")
    need(all(dims_equal(t, d) or t == 1 for t, d in zip(target, x.shape[lead:])), "not a broadcast source")
    axes = list(range(lead)) + [lead + i for i, t in enumerate(target) if t == 1 and x.shape[lead + i] != 1]
    cmin, cmax = sizes.count_range([x.shape[a] for a in axes])
    return Info(target, x.dtype, min(x.lo * cmin, x.lo * cmax), max(x.hi * cmin, x.hi * cmax), 0.0,
                x.dtype != FLOAT and x.exact)


def _sum_to_propose(g: Gen):
    x = _any(g, lambda i: len(i.shape) >= 1)
    shape = g.infos[x].shape
    suffix = shape[g.rng.randint(0, len(shape)):]
    g.add("sum_to", [x], shape=shape_json(tuple(1 if g.chance(0.5) else d for d in suffix)))


def _sum_to_torch(step, args, infos):
    return f"T.sum_to({args[0]}, {code_shape(shape_of(step['shape']))})"


register("sum_to", _sum_to_propose, _sum_to_infer,
         lambda step, args, infos: f"ops.sum_to({args[0]}, {code_shape(shape_of(step['shape']))})",
         _sum_to_torch, weight=0.7)


# --- indexing -------------------------------------------------------------------------------------
def _slice_size(start, stop, step, n):
    b, e, s = slice(start, stop, step).indices(n)
    return max(0, -(-(e - b) // s))


def _getitem_infer(step, infos, sizes):
    (x,) = infos
    items = step["index"]
    need(sum(1 for i in items if i == "...") <= 1, "two ellipses")
    used = sum(1 for i in items if i not in ("None", "..."))
    need(used <= len(x.shape), "too many indices")
    at = items.index("...") if "..." in items else len(items)
    items = items[:at] + [[None, None, None]] * (len(x.shape) - used) + items[at + 1:]
    shape, axis = [], 0
    for i in items:
        if i == "None":
            shape.append(1)
            continue
        d = x.shape[axis]
        if isinstance(i, int):
            need(isinstance(d, int) and -d <= i < d, "index out of range")
        else:
            start, stop, stride = i
            need(stride is None or stride >= 1, "slices need a positive step")
            if start in (None, 0) and stop is None and stride in (None, 1):
                shape.append(d)
            else:
                need(isinstance(d, int), "a symbolic axis is taken whole")
                shape.append(_slice_size(start, stop, stride, d))
        axis += 1
    return view(x, shape)


def _draw_index(g: Gen, shape) -> list:
    items = []
    for d in shape:
        r = g.rng.random()
        if not isinstance(d, int) or r < 0.25:
            items.append([None, None, None])
        elif r < 0.45 and d >= 1:
            items.append(g.rng.randint(-d, d - 1))
        else:
            lo, hi = -d - 2, d + 2
            start = g.choice([None, g.rng.randint(lo, hi)])
            stop = g.choice([None, g.rng.randint(lo, hi)])
            items.append([start, stop, g.choice([None, 1, 2, 3])])
        if g.chance(0.1):
            items.append("None")
    while items and items[-1] == [None, None, None] and g.chance(0.5):
        items.pop()
    if g.chance(0.2):  # "..." stands for the axes no other item takes
        items.insert(g.rng.randint(0, len(items)), "...")
    return items or [[None, None, None]]


def _getitem_propose(g: Gen):
    x = _any(g, lambda i: len(i.shape) >= 1)
    g.add("getitem", [x], index=_draw_index(g, g.infos[x].shape))


def _index_code(items) -> str:
    parts = []
    for i in items:
        if i in ("None", "..."):
            parts.append(i)
        elif isinstance(i, int):
            parts.append(str(i))
        else:
            b, e, s = ("" if v is None else str(v) for v in i)
            parts.append(f"{b}:{e}" + (f":{s}" if s else ""))
    return ", ".join(parts)


register("getitem", _getitem_propose, _getitem_infer,
         lambda step, args, infos: f"{args[0]}[{_index_code(step['index'])}]",
         lambda step, args, infos: f"{args[0]}[{_index_code(step['index'])}]", weight=1.5)


# --- slice_strided, pad, pad_strided -------------------------------------------------------------
def _whole(b, s, out_d, in_d) -> bool:
    return b == 0 and s == 1 and dims_equal(out_d, in_d)


def _window_infer(step, infos, sizes):
    (x,) = infos
    slicing = step["op"] == "slice_strided"
    origin, stride, shape = step["start" if slicing else "low"], step["step"], shape_of(step["shape"])
    need(len(origin) == len(stride) == len(shape) == len(x.shape), "one entry per axis")
    for b, s, d, n in zip(origin, stride, shape, x.shape):
        count, extent = (d, n) if slicing else (n, d)
        need(_whole(b, s, d, n) or (isinstance(count, int) and isinstance(extent, int) and s >= 1 and b >= 0
                                     and (count == 0 or b + s * (count - 1) < extent)), "window out of range")
    return view(x, shape, zero=not slicing)


def _window_propose(name):
    def propose(g: Gen):
        x = _any(g, lambda i: len(i.shape) >= 1)
        shape = g.infos[x].shape
        origin, stride, out = [], [], []
        for n in shape:
            if not isinstance(n, int) or g.chance(0.3):
                origin.append(0), stride.append(1), out.append(n)
                continue
            s = g.choice([1, 1, 2, 3])
            if name == "slice_strided":
                count = g.rng.randint(0, max(0, (n - 1) // s + 1)) if n else 0
                b = g.rng.randint(0, max(0, n - 1 - s * (count - 1))) if count else g.rng.randint(0, n)
                origin.append(b), stride.append(s), out.append(count)
            else:
                b = g.rng.randint(0, 2)
                extent = b + s * (n - 1) + 1 + g.rng.randint(0, 2) if n else b + g.rng.randint(0, 2)
                origin.append(b), stride.append(s), out.append(extent)
        key = "start" if name == "slice_strided" else "low"
        g.add(name, [x], **{key: origin, "step": stride, "shape": shape_json(out)})
    return propose


def _window_kgen(step, args, infos):
    key = "start" if step["op"] == "slice_strided" else "low"
    return f"ops.{step['op']}({args[0]}, {tuple(step[key])!r}, {tuple(step['step'])!r}, " \
           f"{code_shape(shape_of(step['shape']))})"


def _window_torch(step, args, infos):
    key = "start" if step["op"] == "slice_strided" else "low"
    fn = "T.slice_strided" if step["op"] == "slice_strided" else "T.pad_strided"
    return f"{fn}({args[0]}, {tuple(step[key])!r}, {tuple(step['step'])!r}, {code_shape(shape_of(step['shape']))})"


for _name in ("slice_strided", "pad_strided"):
    register(_name, _window_propose(_name), _window_infer, _window_kgen, _window_torch, weight=0.7)


def _pad_widths(step, rank) -> list:
    w = step["width"]
    if isinstance(w, int):
        return [[w, w]] * rank
    if len(w) == 2 and all(isinstance(v, int) for v in w):
        return [list(w)] * rank
    need(len(w) == rank, "one pair per axis")
    return [list(p) for p in w]


def _pad_infer(step, infos, sizes):
    (x,) = infos
    widths = _pad_widths(step, len(x.shape))
    shape = []
    for (b, a), d in zip(widths, x.shape):
        need(b >= 0 and a >= 0, "negative padding")
        need(b == a == 0 or isinstance(d, int), "padding a symbolic axis")
        shape.append(d if b == a == 0 else d + b + a)
    value = step.get("value", 0.0)
    need(value == 0.0 or x.dtype == FLOAT, "a fill value pads floats")
    padded = view(x, shape, zero=True)
    return like(padded, lo=min(x.lo, value), hi=max(x.hi, value)) if value else padded


def _pad_propose(g: Gen):
    x = _any(g, lambda i: len(i.shape) >= 1)
    shape = g.infos[x].shape
    static = all(isinstance(d, int) for d in shape)
    r = g.rng.random()
    if static and r < 0.2:
        width = g.rng.randint(0, 2)
    elif static and r < 0.35:
        width = [g.rng.randint(0, 2), g.rng.randint(0, 2)]
    else:
        width = [[0, 0] if not isinstance(d, int) or g.chance(0.3) else [g.rng.randint(0, 2), g.rng.randint(0, 2)]
                 for d in shape]
    fill = {"value": g.choice([-1.5, 0.5, 2.0])} if g.infos[x].dtype == FLOAT and g.chance(0.3) else {}
    g.add("pad", [x], width=width, **fill)


def _pad_code(step) -> str:
    w = step["width"]
    code = repr(w) if isinstance(w, int) else repr(tuple(tuple(p) if isinstance(p, list) else p for p in w))
    return code + (f", value={step['value']!r}" if "value" in step else "")


register("pad", _pad_propose, _pad_infer,
         lambda step, args, infos: f"ops.pad({args[0]}, {_pad_code(step)})",
         lambda step, args, infos: f"T.pad({args[0]}, {_pad_widths(step, len(infos[0].shape))!r}"
                                   f"{', ' + repr(step['value']) if 'value' in step else ''})")


# --- concatenate, stack, split --------------------------------------------------------------------
def _join_infer(step, infos, sizes):
    first = infos[0]
    need(len(infos) >= 1, "nothing to join")
    dtypes = {i.dtype for i in infos}
    need(BOOL not in dtypes or dtypes == {BOOL}, "bools joined with numbers")
    dtype = FLOAT if FLOAT in dtypes else "int64" if "int64" in dtypes else first.dtype
    info = Info(first.shape, dtype, min(i.lo for i in infos), max(i.hi for i in infos),
                min(i.absmin for i in infos), all(i.exact for i in infos))
    if step["op"] == "stack":
        a = norm_axis(step["axis"], len(first.shape) + 1)
        need(all(len(i.shape) == len(first.shape) and all(dims_equal(p, q) for p, q in zip(i.shape, first.shape))
                 for i in infos), "stack needs equal shapes")
        return like(info, shape=first.shape[:a] + (len(infos),) + first.shape[a:])
    need(len(first.shape) >= 1, "concatenate of scalars")
    a = norm_axis(step["axis"], len(first.shape))
    for i in infos:
        need(len(i.shape) == len(first.shape), "ranks differ")
        need(all(dims_equal(p, q) for k, (p, q) in enumerate(zip(i.shape, first.shape)) if k != a), "shapes differ")
        need(isinstance(i.shape[a], int), "concatenate along a symbolic axis")
    total = sum(i.shape[a] for i in infos)
    return like(info, shape=first.shape[:a] + (total,) + first.shape[a + 1:])


def _join_propose(name):
    def propose(g: Gen):
        x = _any(g, lambda i: len(i.shape) >= (1 if name == "concatenate" else 0))
        info = g.infos[x]
        shape, rank = info.shape, len(info.shape)
        if name == "concatenate":
            static = [a for a, d in enumerate(shape) if isinstance(d, int)]
            if not static:
                raise Illegal("no static axis")
            axis = g.choice(static)
            parts = [x]
            for _ in range(g.rng.randint(0, 3)):
                want = shape[:axis] + (g.choice([0, 1, 2, 3] + g.pool),) + shape[axis + 1:]
                parts.append(g.operand(want, reuse=0.3) if g.fits(want) else x)
            g.rng.shuffle(parts)
            g.add(name, parts, axis=axis - rank if g.chance(0.3) else axis)
        else:
            parts = [x] + [g.operand(shape, reuse=0.4) for _ in range(g.rng.randint(0, 2))]
            g.rng.shuffle(parts)
            g.add(name, parts, axis=g.rng.randint(-rank - 1, rank))
    return propose


def _join_kgen(step, args, infos):
    return f"ops.{step['op']}([{', '.join(args)}], axis={step['axis']})"


def _join_torch(step, args, infos):
    fn = "torch.cat" if step["op"] == "concatenate" else "torch.stack"
    dtype = _join_infer(step, infos, None).dtype
    if len({i.dtype for i in infos}) > 1:
        args = [f"{a}.to({'torch.float64' if dtype == FLOAT else 'torch.' + dtype})" for a in args]
    return f"{fn}([{', '.join(args)}], dim={step['axis']})"


for _name in ("concatenate", "stack"):
    register(_name, _join_propose(_name), _join_infer, _join_kgen, _join_torch)


def _split_infer(step, infos, sizes):
    (x,) = infos
    a = norm_axis(step["axis"], len(x.shape))
    n = x.shape[a]
    need(isinstance(n, int), "split along a symbolic axis")
    if "sizes" in step:
        pieces = step["sizes"]
        need(all(k >= 0 for k in pieces) and sum(pieces) == n, "sizes that add up to the axis")
    else:
        k = step["sections"]
        need(k >= 1 and n % k == 0, "split into unequal parts")
        pieces = [n // k] * k
    need(0 <= step["part"] < len(pieces), "no such part")
    return view(x, x.shape[:a] + (pieces[step["part"]],) + x.shape[a + 1:])


def _split_propose(g: Gen):
    x = _any(g, lambda i: any(isinstance(d, int) for d in i.shape))
    shape = g.infos[x].shape
    axis = g.choice([a for a, d in enumerate(shape) if isinstance(d, int)])
    n = shape[axis]
    axis = axis - len(shape) if g.chance(0.3) else axis
    if g.chance(0.4):  # torch.split_with_sizes: pieces of the sizes given
        cuts = sorted(g.rng.randint(0, n) for _ in range(g.rng.randint(0, 3)))
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [n])]
        g.add("split", [x], sizes=sizes, axis=axis, part=g.rng.randrange(len(sizes)))
        return
    k = g.choice([s for s in range(1, max(n, 1) + 1) if n % s == 0] if n else [1, 2, 3])
    g.add("split", [x], sections=k, axis=axis, part=g.rng.randrange(k))


def _split_kgen(step, args, infos):
    how = step["sizes"] if "sizes" in step else step["sections"]
    return f"ops.split({args[0]}, {how!r}, axis={step['axis']})[{step['part']}]"


def _split_torch(step, args, infos):
    if "sizes" in step:
        return f"torch.split({args[0]}, {step['sizes']!r}, dim={step['axis']})[{step['part']}]"
    return f"torch.tensor_split({args[0]}, {step['sections']}, dim={step['axis']})[{step['part']}]"


register("split", _split_propose, _split_infer, _split_kgen, _split_torch)
