"""Small programs with one kernel of each config family, for the autotuner's tests."""
from __future__ import annotations

import math

import kgen
from kgen import ops
from kgen.ir import ops_conv, ops_gather


def pointwise():
    x = kgen.tensor("x", ("N", 40))
    return kgen.Graph([x], [ops.relu(x) * 2.0 + 1.0])


def column_sum():
    x = kgen.tensor("x", ("N", 40))
    return kgen.Graph([x], [ops.sum(ops.exp(x), 0)])


def row_sum():
    x = kgen.tensor("x", ("N", 40))
    return kgen.Graph([x], [ops.sum(ops.exp(x), 1)])


def softmax_rows():
    x = kgen.tensor("x", ("N", 40))
    return kgen.Graph([x], [ops.softmax(x, 1)])


def matmul_fp32():
    x, w, b = kgen.tensor("x", ("N", 40)), kgen.tensor("w", (40, 24)), kgen.tensor("b", (24,))
    return kgen.Graph([x, w, b], [ops.relu(x @ w + b)])


def matmul_fp16():
    a, b = kgen.tensor("a", ("N", 64), "float16"), kgen.tensor("b", (64, 48), "float16")
    return kgen.Graph([a, b], [a @ b])


def matmul_softmax():
    """A matmul whose epilogue reduces whole rows ("matmul_rows" when fusion gives the
    epilogue the rows)."""
    x, w = kgen.tensor("x", ("N", 40)), kgen.tensor("w", (40, 24))
    return kgen.Graph([x, w], [ops.softmax(x @ w, 1)])


def conv2d():
    x, w = kgen.tensor("x", ("N", 3, 10, 10)), kgen.tensor("w", (4, 3, 3, 3))
    return kgen.Graph([x, w], [ops.conv2d(x, w, padding=1)])


def conv2d_input_grad():
    g, w = kgen.tensor("g", ("N", 4, 10, 10)), kgen.tensor("w", (4, 3, 3, 3))
    return kgen.Graph([g, w], [ops_conv.conv2d_input_grad(g, w, (10, 10), padding=1)])


def conv2d_weight_grad():
    x, g = kgen.tensor("x", ("N", 3, 10, 10)), kgen.tensor("g", ("N", 4, 10, 10))
    return kgen.Graph([x, g], [ops_conv.conv2d_weight_grad(x, g, (3, 3), padding=1)])


def depthwise_conv2d():
    """A depthwise conv (groups == C): the "depthwise" family's loop over the taps."""
    x, w = kgen.tensor("x", ("N", 4, 10, 10)), kgen.tensor("w", (8, 1, 3, 3))
    return kgen.Graph([x, w], [ops.conv2d(x, w, padding=1, groups=4)])


def max_pool():
    x = kgen.tensor("x", ("N", 3, 10, 10))
    return kgen.Graph([x], [ops.max_pool2d(x, 2)])


def avg_pool():
    x = kgen.tensor("x", ("N", 3, 10, 10))
    return kgen.Graph([x], [ops.avg_pool2d(x, 2)])


def two_reductions():
    """Two independent reductions: one launch when fusion combines them (a "combo")."""
    x = kgen.tensor("x", ("N", 40))
    return kgen.Graph([x], [ops.sum(x, 0), ops.max(x, 1)])


def embedding():
    i, w = kgen.tensor("i", ("N", 5), "int32"), kgen.tensor("w", (30, 8))
    return kgen.Graph([i, w], [ops.embedding(i, w) * 2.0])


def embedding_grad():
    i, g = kgen.tensor("i", ("N", 5), "int32"), kgen.tensor("g", ("N", 5, 8))
    return kgen.Graph([i, g], [ops_gather.embedding_grad(g, i, 30)])


def persistent_scan():
    """An Elman RNN as kgen.scan: the "scan" family's persistent loop over the time steps."""
    xs, w_ih, w_hh = kgen.tensor("xs", (6, "N", 8)), kgen.tensor("w_ih", (8, 32)), kgen.tensor("w_hh", (32, 32))
    h0 = ops.broadcast_to(ops.constant(0.0), ("N", 32))
    last, every = kgen.scan(lambda h, x_t: (ops.tanh(x_t @ w_ih + h @ w_hh),) * 2, h0, xs)
    return kgen.Graph([xs, w_ih, w_hh], [last, every])


PROGRAMS = {f.__name__: f for f in (pointwise, column_sum, row_sum, softmax_rows, matmul_fp32, matmul_fp16,
                                    matmul_softmax, conv2d, conv2d_input_grad, conv2d_weight_grad, max_pool, avg_pool,
                                    two_reductions, depthwise_conv2d, embedding, embedding_grad,
                                    persistent_scan)}

_compiled = {}


def program(name: str):
    """The compiled program `name` (compiled once per test process)."""
    if name not in _compiled:
        _compiled[name] = kgen.compile(PROGRAMS[name](), device="cpu")
    return _compiled[name]


# --- a launcher and a timer that pickle, for the tuner's device workers on the interpreter ------------
_last_grid = {}


def counting_launcher(source, kernel, target, config):
    """tuner.interpreter_launcher, remembering the programs of its last launch (in this process)."""
    from kgen.autotune import tuner
    run = tuner.interpreter_launcher(source, kernel, target, config)

    def counted(grid, args):
        run(grid, args)
        _last_grid["programs"] = math.prod(grid)
    return counted


def programs_timer(fn) -> float:
    """A deterministic stand-in for do_bench: the programs `fn` launched (fewer, faster)."""
    fn()
    return float(_last_grid["programs"])
