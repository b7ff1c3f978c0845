"""Fuzz catalog entries for elementwise ops: unary, binary (with broadcasting and Python
scalars on either side), pow, comparisons, where and cast.

Domains stay legal: log and sqrt see values >= 0.25, divisors and negative powers values
with |x| >= 0.25, exp values <= 6; a float is cast to an integer or bool only when float32
computes it exactly (so float32 and float64 truncate it alike).
"""
from __future__ import annotations

import math

from kgen.fuzz.catalog import (Gen, broadcast, float_pred, need, numeric_pred, register, want_float)
from kgen.fuzz.program import BOOL, FLOAT, INTS, Illegal, Info, like

FLOAT_LITERALS = (0.5, -1.5, 2.0, 0.25, 3.0, -0.75, 1.0, 0.0)
INT_LITERALS = (2, -1, 3, 1, 0)


def lit(c) -> str:
    return f"({c!r})" if c < 0 else repr(c)


def operands(step, args) -> list:
    """The operand code strings, the step's Python scalar (if any) in its place."""
    if "scalar" not in step:
        return list(args)
    c = lit(step["scalar"])
    return [c] + list(args) if step.get("scalar_first") else list(args) + [c]


def scalar_info(c) -> Info:
    return Info((), FLOAT if isinstance(c, float) else "int64", c, c, abs(c), True)


def operand_infos(step, infos) -> list:
    if "scalar" not in step:
        return list(infos)
    s = scalar_info(step["scalar"])
    return [s] + list(infos) if step.get("scalar_first") else list(infos) + [s]


def result_dtype(step, infos) -> str:
    """kgen's promotion: a Python scalar adopts the tensor's dtype, except that a float
    scalar makes an integer tensor float32."""
    tensors = [i.dtype for i in infos]
    need(BOOL not in tensors, "no arithmetic on bools")
    if FLOAT in tensors or isinstance(step.get("scalar"), float):
        return FLOAT
    return "int64" if "int64" in tensors else tensors[0]


def literal_for(g: Gen, info: Info, nonzero=False):
    pool = FLOAT_LITERALS if info.dtype == FLOAT else INT_LITERALS
    return g.choice([c for c in pool if not nonzero or abs(c) >= 0.25])


def partner(g: Gen, a: str, pred=numeric_pred) -> str:
    """A value that broadcasts with `a`: an existing one, or a new input whose shape is a
    suffix of a's (some dims 1) or a's with a leading dim more."""
    shape = g.infos[a].shape

    def fits(i):
        if not pred(i):
            return False
        try:
            return g.fits(broadcast(shape, i.shape))
        except Illegal:
            return False
    existing = g.pick(fits)
    if existing is not None and g.chance(0.6):
        return existing
    if g.chance(0.7) or len(shape) >= 4:
        suffix = shape[g.rng.randint(0, len(shape)):]
        new = tuple(1 if g.chance(0.3) else d for d in suffix)
    else:
        new = (g.dim(allow_n=N_free(shape)),) + tuple(1 if g.chance(0.3) else d for d in shape)
    kind = "float" if g.infos[a].dtype == FLOAT or g.chance(0.7) else "int"
    return g.new_input(new, kind, FLOAT if kind == "float" else g.choice(INTS), shared=g.chance(0.3))


def N_free(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def pick_exact_first(g: Gen, pred) -> str:
    name = g.pick(lambda i: pred(i) and i.exact) if g.chance(0.6) else None
    return name or g.pick(pred)


# --- unary --------------------------------------------------------------------------------------
def _unary_infer(name):
    def infer(step, infos, sizes):
        (x,) = infos
        need(x.dtype != BOOL, f"{name} of a bool")
        if name == "neg":
            return like(x, lo=-x.hi, hi=-x.lo, absmin=x.absmin)
        if name == "abs":
            return like(x, lo=x.absmin, hi=x.mag, absmin=x.absmin)
        if name == "relu":
            return like(x, lo=max(x.lo, 0), hi=max(x.hi, 0), absmin=x.absmin if x.lo > 0 else 0.0)
        if name == "stop_gradient":
            return like(x)
        f = {"exp": math.exp, "log": math.log, "sqrt": math.sqrt, "tanh": math.tanh,
             "sigmoid": lambda v: 1 / (1 + math.exp(-v))}[name]
        if name in ("log", "sqrt"):
            need(x.lo >= 0.25, f"{name} of a value that may be < 0.25")
        if name == "exp":
            need(x.hi <= 8, "exp may overflow")
        lo, hi = f(x.lo), f(x.hi)
        return Info(x.shape, FLOAT, lo, hi)
    return infer


def _unary_propose(name, int_ok):
    def propose(g: Gen):
        x = g.pick(numeric_pred if int_ok else float_pred)
        if x is None:
            raise Illegal("no operand")
        if name in ("log", "sqrt"):
            x = g.positive(g.to_float(x))
        elif name == "exp":
            x = g.tame(x, 6.0)
        spell = g.choice(["fn", "op"]) if name in ("neg", "abs") else "fn"
        g.add(name, [x], spell=spell)
    return propose


_TORCH_UNARY = {"neg": "torch.neg({})", "abs": "torch.abs({})", "relu": "torch.relu({})",
                "exp": "torch.exp({})", "log": "torch.log({})", "sqrt": "torch.sqrt({})",
                "tanh": "torch.tanh({})", "sigmoid": "torch.sigmoid({})", "stop_gradient": "{}.detach()"}
_OP_UNARY = {"neg": "(-{})", "abs": "abs({})"}


def _unary_kgen(name):
    def code(step, args, infos):
        if step.get("spell") == "op" and name in _OP_UNARY:
            return _OP_UNARY[name].format(args[0])
        return f"ops.{name}({args[0]})"
    return code


for _name, _int_ok in (("neg", True), ("abs", True), ("relu", True), ("exp", True), ("log", False),
                       ("sqrt", False), ("tanh", True), ("sigmoid", True), ("stop_gradient", True)):
    register(_name, _unary_propose(_name, _int_ok), _unary_infer(_name), _unary_kgen(_name),
             lambda step, args, infos, _n=_name: _TORCH_UNARY[_n].format(args[0]))


# --- binary -------------------------------------------------------------------------------------
def _corners(f, a: Info, b: Info) -> tuple:
    values = [f(x, y) for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    return min(values), max(values)


def _binary_infer(name):
    def infer(step, infos, sizes):
        a, b = operand_infos(step, infos)
        dtype = result_dtype(step, infos)
        shape = broadcast(a.shape, b.shape)
        exact = a.exact and b.exact and dtype != FLOAT
        if name in ("add", "sub"):
            lo, hi = (a.lo + b.lo, a.hi + b.hi) if name == "add" else (a.lo - b.hi, a.hi - b.lo)
            return Info(shape, dtype, lo, hi, 0.0, exact)
        if name == "mul":
            lo, hi = _corners(lambda x, y: x * y, a, b)
            return Info(shape, dtype, lo, hi, a.absmin * b.absmin, exact)
        if name == "div":
            need(b.absmin >= 0.25, "a divisor that may be near 0")
            m = a.mag / b.absmin
            return Info(shape, FLOAT, -m if a.lo < 0 or b.lo < 0 else 0.0, m if a.hi > 0 or b.hi > 0 else 0.0,
                        a.absmin / max(b.mag, 1e-9))
        if name in ("maximum", "minimum"):
            f = max if name == "maximum" else min
            return Info(shape, dtype, f(a.lo, b.lo), f(a.hi, b.hi), 0.0, a.exact and b.exact)
        raise AssertionError(name)
    return infer


def _binary_propose(name):
    def propose(g: Gen):
        a = g.pick(numeric_pred)
        if a is None:
            raise Illegal("no operand")
        if name == "div" and not g.chance(0.2):
            a = g.to_float(a)
        if g.chance(0.35):
            c = literal_for(g, g.infos[a], nonzero=(name == "div"))
            first = g.chance(0.5)
            if name == "div" and first:
                a, c = g.nonzero(g.to_float(a)), abs(c) + 0.5
            g.add(name, [a], scalar=c, scalar_first=first, spell=g.choice(["fn", "op"]))
            return
        b = partner(g, a)
        if g.chance(0.5):
            a, b = b, a
        if name == "div":
            b = g.nonzero(b, 0.25)
        g.add(name, [a, b], spell=g.choice(["fn", "op"]) if name not in ("maximum", "minimum") else "fn")
    return propose


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _binary_kgen(name):
    def code(step, args, infos):
        a, b = operands(step, args)
        if step.get("spell") == "op" and name in _SYMBOL:
            return f"({a} {_SYMBOL[name]} {b})"
        return f"ops.{name}({a}, {b})"
    return code


def _binary_torch(name):
    def code(step, args, infos):
        a, b = operands(step, args)
        if name in _SYMBOL:
            return f"({a} {_SYMBOL[name]} {b})"
        if "scalar" in step:  # torch.maximum takes tensors only
            t, c = (b, a) if step.get("scalar_first") else (a, b)
            c = f"torch.full_like({t}, {c})"
            a, b = (c, t) if step.get("scalar_first") else (t, c)
        return f"torch.{name}({a}, {b})"
    return code


for _name in ("add", "sub", "mul", "div", "maximum", "minimum"):
    register(_name, _binary_propose(_name), _binary_infer(_name), _binary_kgen(_name), _binary_torch(_name),
             weight=1.5 if _name in ("add", "mul") else 1.0)


# --- pow ------------------------------------------------------------------------------------------
EXPONENTS = (2.0, 3.0, 0.0, 1.0, -1.0, 0.5, 1.5, -0.5, -2.0, 2.5)


def _pow_infer(step, infos, sizes):
    if len(infos) == 2 and infos[1].is_int:  # x ** k, k an integer tensor: x of any sign
        (x, k), shape = infos, broadcast(infos[0].shape, infos[1].shape)
        want_float(x, "pow's base")
        need(k.classes is None and k.mag <= 5, "an integer exponent in [-5, 5]")
        if k.lo < 0:
            need(x.absmin >= 0.25, "a negative power of a value that may be near 0")
        m = max(max(x.mag, 1.0) ** k.hi, (1.0 / x.absmin) ** -k.lo if k.lo < 0 else 1.0)
        return Info(shape, FLOAT, -m, m)
    for i in infos:
        want_float(i, "pow operand")
    if "scalar" in step and not step.get("scalar_first"):  # x ** c
        (x,), c = infos, step["scalar"]
        if c == 0:
            return Info(x.shape, FLOAT, 1.0, 1.0)
        if float(c).is_integer() and c > 0:
            m = x.mag ** c
            if c % 2 == 0:
                return Info(x.shape, FLOAT, x.absmin ** c, m)
            return Info(x.shape, FLOAT, x.lo ** c, x.hi ** c)
        if float(c).is_integer():
            need(x.absmin >= 0.25, "a negative power of a value that may be near 0")
            m = x.absmin ** c
            return Info(x.shape, FLOAT, -m if x.lo < 0 else 0.0, m)
        need(x.lo >= 0.25, "a fractional power of a value that may be < 0.25")
        lo, hi = sorted((x.lo ** c, x.hi ** c))
        return Info(x.shape, FLOAT, lo, hi)
    if "scalar" in step:  # c ** x
        (x,), c = infos, step["scalar"]
        need(c > 0 and x.mag <= 4, "c ** x needs c > 0 and |x| <= 4")
        lo, hi = sorted((c ** x.lo, c ** x.hi))
        return Info(x.shape, FLOAT, lo, hi)
    a, b = infos
    need(a.lo >= 0.25 and b.mag <= 3, "a ** b needs a >= 0.25 and |b| <= 3")
    lo, hi = _corners(lambda x, y: x ** y, a, b)
    return Info(broadcast(a.shape, b.shape), FLOAT, lo, hi)


def _pow_propose(g: Gen):
    x = g.pick(float_pred)
    if x is None:
        raise Illegal("no operand")
    r = g.rng.random()
    if r < 0.6:
        c = g.choice(EXPONENTS)
        if not float(c).is_integer():
            x = g.positive(x)
        elif c < 0:
            x = g.nonzero(x)
        elif g.chance(0.3):
            x = g.add("relu", [x])  # exact zeros: the edge of x ** c (and of its gradient)
        x = g.tame(x, 3.0 if c > 2 else 4.0)
        g.add("pow", [x], scalar=c, scalar_first=False, spell=g.choice(["fn", "op"]))
    elif r < 0.75:
        g.add("pow", [g.tame(x, 3.0)], scalar=g.choice([2.0, 0.5, 1.5]), scalar_first=True,
              spell=g.choice(["fn", "op"]))
    elif r < 0.88:
        b = g.tame(partner(g, x, float_pred), 2.0)
        g.add("pow", [g.positive(x), b], spell=g.choice(["fn", "op"]))
    else:  # an integer tensor exponent: negative bases, odd and even powers
        shape = g.infos[x].shape
        k = g.new_input(tuple(1 if g.chance(0.3) else d for d in shape[g.rng.randint(0, len(shape)):]), "int",
                        g.choice(INTS))
        g.add("pow", [g.tame(g.nonzero(x) if g.chance(0.5) else x, 2.0), k], spell=g.choice(["fn", "op"]))


def _pow_kgen(step, args, infos):
    a, b = operands(step, args)
    return f"({a} ** {b})" if step.get("spell") == "op" else f"ops.pow({a}, {b})"


register("pow", _pow_propose, _pow_infer, _pow_kgen, lambda step, args, infos: "({} ** {})".format(
    *operands(step, args)), weight=1.5)


# --- comparisons ------------------------------------------------------------------------------------
_COMPARE = {"less": "<", "less_equal": "<=", "greater": ">", "greater_equal": ">=", "equal": None,
            "not_equal": None}
_TORCH_COMPARE = {"equal": "torch.eq", "not_equal": "torch.ne"}


def _compare_infer(name):
    def infer(step, infos, sizes):
        a, b = operand_infos(step, infos)
        if BOOL in (a.dtype, b.dtype):
            need(name in ("equal", "not_equal") and a.dtype == b.dtype == BOOL, "ordering of bools")
        return Info(broadcast(a.shape, b.shape), BOOL, 0, 1, 0.0, a.exact and b.exact)
    return infer


def _compare_propose(name):
    def propose(g: Gen):
        bools = name in ("equal", "not_equal") and g.chance(0.2)
        pred = (lambda i: i.dtype == BOOL) if bools else numeric_pred
        a = pick_exact_first(g, pred)
        if a is None:
            raise Illegal("no operand")
        if not bools and g.chance(0.4):
            g.add(name, [a], scalar=literal_for(g, g.infos[a]), scalar_first=g.chance(0.3),
                  spell=g.choice(["fn", "op"]))
            return
        b = pick_exact_first(g, lambda i: pred(i) and _broadcasts(g, a, i))
        if b is None:
            b = partner(g, a)
        g.add(name, [a, b], spell=g.choice(["fn", "op"]))
    return propose


def _broadcasts(g, a, info) -> bool:
    try:
        broadcast(g.infos[a].shape, info.shape)
        return True
    except Illegal:
        return False


def _compare_kgen(name):
    def code(step, args, infos):
        a, b = operands(step, args)
        if step.get("spell") == "op" and _COMPARE[name] and not step.get("scalar_first"):
            return f"({a} {_COMPARE[name]} {b})"
        return f"ops.{name}({a}, {b})"
    return code


def _compare_torch(name):
    def code(step, args, infos):
        a, b = operands(step, args)
        if _COMPARE[name]:
            return f"({a} {_COMPARE[name]} {b})"
        return f"{_TORCH_COMPARE[name]}({a}, {b})" if not step.get("scalar_first") else \
            f"{_TORCH_COMPARE[name]}({b}, {a})"
    return code


for _name in _COMPARE:
    register(_name, _compare_propose(_name), _compare_infer(_name), _compare_kgen(_name), _compare_torch(_name),
             weight=0.6)


# --- where ------------------------------------------------------------------------------------------
def _where_infer(step, infos, sizes):
    cond, tensors = infos[0], list(infos[1:])
    need(cond.dtype == BOOL, "where needs a bool condition")
    scalars = [step[k] for k in ("a", "b") if k in step]
    need(len(tensors) + len(scalars) == 2 and tensors, "where needs two branches, one a tensor")
    dtype = result_dtype({"scalar": scalars[0]} if scalars else {}, tensors)
    branches = tensors + [scalar_info(c) for c in scalars]
    return Info(broadcast(cond.shape, *(i.shape for i in branches)), dtype,
                min(i.lo for i in branches), max(i.hi for i in branches), min(i.absmin for i in branches),
                all(i.exact for i in branches))


def _where_propose(g: Gen):
    cond = g.pick(lambda i: i.dtype == BOOL)
    if cond is None or g.chance(0.3):
        x = pick_exact_first(g, numeric_pred)
        if x is None:
            raise Illegal("no operand")
        cond = g.add(g.choice(["greater", "less", "greater_equal"]), [x],
                     scalar=literal_for(g, g.infos[x]), scalar_first=False, spell="op")
    a = g.pick(lambda i: i.dtype == FLOAT and _broadcasts(g, cond, i))
    if a is None:
        a = g.new_input(g.infos[cond].shape, "float")
    attrs = {}
    if g.chance(0.3):
        attrs["b"] = g.choice(FLOAT_LITERALS)
        ins = [cond, a]
    else:
        b = g.pick(lambda i: i.dtype == FLOAT and _broadcasts(g, cond, i) and _broadcasts(g, a, i))
        ins = [cond, a, b or a]
    if g.chance(0.5) and len(ins) == 3:
        ins = [ins[0], ins[2], ins[1]]
    elif g.chance(0.3) and len(ins) == 2:
        attrs = {"a": attrs["b"]}
    g.add("where", ins, **attrs)


def _where_args(step, args) -> tuple:
    cond, rest = args[0], list(args[1:])
    if "a" in step:
        rest.insert(0, lit(step["a"]))
    if "b" in step:
        rest.append(lit(step["b"]))
    return cond, rest[0], rest[1]


def _where_torch(step, args, infos):
    cond, a, b = _where_args(step, args)
    return f"torch.where({cond}, {a}, {b})"


register("where", _where_propose, _where_infer,
         lambda step, args, infos: "ops.where({}, {}, {})".format(*_where_args(step, args)), _where_torch)


# --- cast ---------------------------------------------------------------------------------------------
def _cast_infer(step, infos, sizes):
    (x,), to = infos, step["dtype"]
    if to == x.dtype:
        return like(x)
    if to == FLOAT:
        return Info(x.shape, FLOAT, x.lo, x.hi, x.absmin, x.exact)
    if to == BOOL:
        need(x.exact, "a float cast to bool must be exact in float32")
        return Info(x.shape, BOOL, 0, 1, 0.0, True)
    need(to in INTS, f"cast to {to}")
    if x.dtype == FLOAT:
        need(x.exact and x.mag <= 1000, "a float cast to an integer must be exact in float32")
        return Info(x.shape, to, math.trunc(x.lo), math.trunc(x.hi), 0.0, True)
    return Info(x.shape, to, x.lo, x.hi, x.absmin, True, x.classes)


def _cast_propose(g: Gen):
    x = pick_exact_first(g, lambda i: True)
    if x is None:
        raise Illegal("no operand")
    info = g.infos[x]
    targets = [FLOAT, "int32", "int64", BOOL] if info.exact else [FLOAT]
    to = g.choice([t for t in targets if t != info.dtype] or [FLOAT])
    g.add("cast", [x], dtype=to, spell=g.choice(["fn", "method"]))


_TORCH_DTYPE = {FLOAT: "torch.float64", "int32": "torch.int32", "int64": "torch.int64", BOOL: "torch.bool"}


def _cast_kgen(step, args, infos):
    if step.get("spell") == "method":
        return f"{args[0]}.astype({step['dtype']!r})"
    return f"ops.cast({args[0]}, {step['dtype']!r})"


register("cast", _cast_propose, _cast_infer, _cast_kgen,
         lambda step, args, infos: f"{args[0]}.to({_TORCH_DTYPE[step['dtype']]})", weight=0.8)


# --- activations (smooth, or continuous with kinks as relu) -------------------------------------------
def _activation_bounds(name, step, x: Info) -> tuple:
    """Bounds of each activation's value over [x.lo, x.hi]; every one is monotone there but
    gelu and silu, whose minima (-0.17 and -0.28) bound them below."""
    a = step.get("a", {"leaky_relu": 0.01, "elu": 1.0, "hardtanh": (-1.0, 1.0)}.get(name))
    f = {"erf": math.erf, "leaky_relu": lambda v: v if v > 0 else v * a,
         "elu": lambda v: v if v > 0 else a * math.expm1(v),
         "softplus": lambda v: math.log1p(math.exp(min(v * step.get("beta", 1.0), 30.0))) / step.get("beta", 1.0),
         "hardtanh": lambda v: min(max(v, a[0]), a[1]), "relu6": lambda v: min(max(v, 0.0), 6.0),
         "gelu": lambda v: max(v, 0.0), "silu": lambda v: max(v, 0.0)}[name]
    lo, hi = f(x.lo), f(x.hi)
    if name == "gelu":
        lo = -0.17 if x.lo < 0 else min(0.0, x.lo)
    if name == "silu":
        lo = -0.28 if x.lo < 0 else min(0.0, x.lo)
    return lo, hi


def _activation_infer(name):
    def infer(step, infos, sizes):
        (x,) = infos
        want_float(x, f"{name}'s operand")
        lo, hi = _activation_bounds(name, step, x)
        return Info(x.shape, FLOAT, lo, hi)
    return infer


_ACTIVATION_ARGS = {"leaky_relu": (0.01, 0.2), "elu": (1.0, 0.5), "hardtanh": ((-1.0, 1.0), (-0.5, 2.0))}


def _activation_propose(name):
    def propose(g: Gen):
        x = g.pick(float_pred)
        if x is None:
            raise Illegal("no operand")
        attrs = {}
        if name in _ACTIVATION_ARGS and g.chance(0.5):
            attrs["a"] = g.choice(_ACTIVATION_ARGS[name])
        if name == "gelu":
            attrs["approximate"] = g.choice(["none", "tanh"])
        if name == "softplus" and g.chance(0.5):
            attrs["beta"], attrs["threshold"] = g.choice([(2.0, 3.0), (0.5, 20.0)])
        if name == "elu" or name == "softplus":
            x = g.tame(x, 6.0)
        g.add(name, [x], **attrs)
    return propose


def _activation_args(step) -> str:
    a = step.get("a")
    if step["op"] == "hardtanh" and a is not None:
        return f", {a[0]!r}, {a[1]!r}"
    if a is not None:
        return f", {a!r}"
    if step["op"] == "gelu":
        return f", approximate={step['approximate']!r}"
    if "beta" in step:
        return f", {step['beta']!r}, {step['threshold']!r}"
    return ""


_TORCH_ACTIVATION = {"erf": "torch.erf", "gelu": "F.gelu", "silu": "F.silu", "leaky_relu": "F.leaky_relu",
                     "elu": "F.elu", "softplus": "F.softplus", "hardtanh": "F.hardtanh", "relu6": "F.relu6"}

for _name in _TORCH_ACTIVATION:
    register(_name, _activation_propose(_name), _activation_infer(_name),
             lambda step, args, infos: f"ops.{step['op']}({args[0]}{_activation_args(step)})",
             lambda step, args, infos: f"{_TORCH_ACTIVATION[step['op']]}({args[0]}{_activation_args(step)})",
             weight=0.6)


# --- clamp and clip: scalar bounds, either one or both, or a tensor bound ----------------------------
def _clamp_infer(step, infos, sizes):
    x = infos[0]
    need(x.dtype != BOOL, "clamp of a bool")
    lo, hi = step.get("min"), step.get("max")
    bounds = list(infos[1:])
    out_lo, out_hi = x.lo, x.hi
    if bounds:  # one tensor bound, in place of the scalar `max`
        b = bounds[0]
        need(b.dtype == x.dtype, "a tensor bound of the operand's dtype")
        shape = broadcast(x.shape, b.shape)
        out_lo, out_hi = min(x.lo, b.lo), min(x.hi, b.hi)
    else:
        shape = x.shape
    dtype = FLOAT if x.dtype == FLOAT or any(isinstance(v, float) for v in (lo, hi)) else x.dtype
    if lo is not None:
        out_lo, out_hi = max(out_lo, lo), max(out_hi, lo)
    if hi is not None:
        out_lo, out_hi = min(out_lo, hi), min(out_hi, hi)
    exact = x.exact and dtype != FLOAT
    return Info(shape, dtype, out_lo, out_hi, 0.0, exact)


def _clamp_propose(name):
    def propose(g: Gen):
        x = g.pick(numeric_pred)
        if x is None:
            raise Illegal("no operand")
        info = g.infos[x]
        pool = FLOAT_LITERALS if info.dtype == FLOAT else INT_LITERALS
        lo, hi = sorted(g.rng.sample([c for c in pool if c != 0.0] + [0], 2))
        r = g.rng.random()
        if r < 0.2 and info.dtype == FLOAT:  # a tensor max (and a scalar min)
            b = partner(g, x, float_pred)
            g.add(name, [x, b], min=lo)
        elif r < 0.4:
            g.add(name, [x], min=lo)
        elif r < 0.55:
            g.add(name, [x], max=hi)
        else:
            g.add(name, [x], min=lo, max=hi)
    return propose


def _clamp_code(fn):
    """ops.clamp(x, min=c, max=t) for a tensor t; torch takes both bounds as tensors or neither."""
    def code(step, args, infos):
        parts = [args[0]]
        if "min" in step:
            c = lit(step["min"])
            parts.append(f"min=torch.full_like({args[1]}, {c})" if len(args) > 1 and fn.startswith("torch") else f"min={c}")
        if len(args) > 1:
            parts.append(f"max={args[1]}")
        elif "max" in step:
            parts.append(f"max={lit(step['max'])}")
        return f"{fn}({', '.join(parts)})"
    return code


for _name in ("clamp", "clip"):
    register(_name, _clamp_propose(_name), _clamp_infer, _clamp_code(f"ops.{_name}"), _clamp_code(f"torch.{_name}"),
             weight=0.5)


# --- rounding: floor, trunc, rounded division, fmod and remainder ----------------------------------------
# They jump where a value crosses an integer (or a quotient does), so they take exact operands
# only: values float32 holds as the float64 oracle does. A float divisor keeps |b| >= 0.25; an
# integer one is nonzero (integer division by zero is undefined).
def _rounding_infer(step, infos, sizes):
    (x,) = infos
    need(x.dtype != BOOL, f"{step['op']} of a bool")
    need(x.exact, f"{step['op']} of a value float32 may round")
    f = math.floor if step["op"] == "floor" else math.trunc
    return Info(x.shape, x.dtype, f(x.lo), f(x.hi), 0.0, True, x.classes)


def _rounding_propose(name):
    def propose(g: Gen):
        x = g.pick(lambda i: numeric_pred(i) and i.exact)
        if x is None:
            raise Illegal("no exact operand")
        g.add(name, [x])
    return propose


def _exact_divisor(g: Gen, a: str) -> str:
    """An exact divisor that broadcasts with `a`: float with |b| >= 0.25, integer nonzero."""
    def fits(i):
        good = i.absmin >= (0.25 if i.dtype == FLOAT else 1)
        return numeric_pred(i) and i.exact and good and _broadcasts(g, a, i)
    b = g.pick(fits)
    if b is None or g.chance(0.4):
        shape = g.infos[a].shape
        kind = "float" if g.infos[a].dtype == FLOAT and g.chance(0.7) else "int"
        b = g.new_input(tuple(1 if g.chance(0.3) else d for d in shape[g.rng.randint(0, len(shape)):]), kind,
                        FLOAT if kind == "float" else g.choice(INTS))
    return b


def _division_infer(step, infos, sizes):
    op, mode = step["op"], step.get("mode")
    a, b = operand_infos(step, infos)
    need(BOOL not in (a.dtype, b.dtype), f"{op} of a bool")
    need(a.exact and b.exact, f"{op} of values float32 may round")
    dtype = result_dtype(step, infos)
    need(b.absmin >= (0.25 if dtype == FLOAT else 1), "a divisor that may be near 0")
    if mode == "trunc" and dtype == FLOAT:  # trunc(a / b) rounds a / b first
        need("scalar" in step and abs(step["scalar"]) in (0.5, 2.0, 0.25),
             "a float quotient rounded toward zero needs a power-of-two divisor")
    shape = broadcast(a.shape, b.shape)
    if op in ("fmod", "remainder"):
        m = b.mag if op == "remainder" else min(b.mag, a.mag)
        return Info(shape, dtype, -m, m)
    m = a.mag / b.absmin
    return Info(shape, dtype, -math.floor(m) - 1, math.floor(m) + 1, 0.0, True)


def _division_propose(name):
    """fmod, remainder, and floor_divide, which also stands for div's rounding modes (the
    step's `mode`: "floor" or "trunc" spells it ops.div(a, b, rounding_mode=mode))."""
    def propose(g: Gen):
        a = None  # integer division (trunc_div, a primitive of its own) wants integer operands
        if name == "floor_divide" and g.chance(0.5):
            a = g.pick(lambda i: numeric_pred(i) and i.exact and not i.is_float)
        a = a or g.pick(lambda i: numeric_pred(i) and i.exact)
        if a is None:
            raise Illegal("no exact operand")
        attrs = {}
        if name == "floor_divide" and g.chance(0.6):
            attrs["mode"] = g.choice(["trunc", "floor"])
        if attrs.get("mode") == "trunc" and g.infos[a].dtype == FLOAT:
            g.add(name, [a], scalar=g.choice([2.0, -0.5, 0.25]), scalar_first=False, **attrs)
        elif g.chance(0.3):
            c = g.choice([2, -3, 3] if g.infos[a].dtype != FLOAT else [2.0, -1.5, 0.75])
            g.add(name, [a], scalar=c, scalar_first=False, **attrs)
        else:
            g.add(name, [a, _exact_divisor(g, a)], **attrs)
    return propose


def _division_kgen(step, args, infos):
    a, b = operands(step, args)
    if "mode" in step:
        return f"ops.div({a}, {b}, rounding_mode={step['mode']!r})"
    return f"ops.{step['op']}({a}, {b})"


def _division_torch(step, args, infos):
    a, b = operands(step, args)
    if step["op"] == "floor_divide":  # torch.floor_divide has no gradient; div's is zero
        return f"torch.div({a}, {b}, rounding_mode={step.get('mode', 'floor')!r})"
    return f"torch.{step['op']}({a}, {b})"


for _name in ("floor", "trunc"):
    register(_name, _rounding_propose(_name), _rounding_infer, lambda step, args, infos: f"ops.{step['op']}({args[0]})",
             lambda step, args, infos: f"torch.{step['op']}({args[0]})", weight=0.5)

for _name in ("fmod", "remainder", "floor_divide"):  # floor_divide also draws div's integer rounding modes
    register(_name, _division_propose(_name), _division_infer, _division_kgen, _division_torch,
             weight=1.0 if _name == "floor_divide" else 0.5)
