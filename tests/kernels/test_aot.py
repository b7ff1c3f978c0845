"""Ahead-of-time compilation of generated kernels to PTX and cubin for GPU targets, with no
GPU: kgen.kernels.aot.compile_program / compile_kernel."""
from __future__ import annotations

import re

import numpy as np
import pytest

import kgen
from kgen import ops
from kgen.kernels import aot

from conftest import random_array, run_compiled

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TARGETS = ("sm_80", "sm_90")


# --- representative programs ---------------------------------------------------------------
def pointwise_chain():
    x = kgen.tensor("x", ("N", 3))
    w, b = kgen.tensor("w", (3,)), kgen.tensor("b", ("N", 1))
    y = ops.tanh(ops.relu(x * w + b)) ** 2 + ops.sigmoid(x.T).T
    return kgen.Graph([x, w, b], [y, x > b])


def reductions():
    x = kgen.tensor("x", ("N", 13))
    i = kgen.tensor("i", (7, 5), "int32")
    return kgen.Graph([x, i], [ops.max(x, 1), ops.sum(ops.exp(x), 0), ops.mean(x), ops.max(i), ops.softmax(x)])


def matmul_fp32():
    a, b = kgen.tensor("a", ("N", 32)), kgen.tensor("b", (48, 32))
    return kgen.Graph([a, b], [a @ b.T])


def matmul_fp16():
    a, b = kgen.tensor("a", (64, 32), "float16"), kgen.tensor("b", (32, 48), "float16")
    return kgen.Graph([a, b], [a @ b])


def gradient():
    x = kgen.tensor("x", ("N", 6))
    w1, b1, w2 = kgen.tensor("w1", (6, 8)), kgen.tensor("b1", (8,)), kgen.tensor("w2", (8, 4))
    y = kgen.tensor("y", ("N",), "int32")
    loss = ops.cross_entropy(ops.tanh(x @ w1 + b1) @ w2, y)
    return kgen.Graph([x, w1, b1, w2, y], [loss] + kgen.grad(loss, [w1, b1, w2]))


def mixed_dtypes():
    h = kgen.tensor("h", (7, 13), "float16")
    i = kgen.tensor("i", (13,), "int64")
    s = kgen.tensor("s", ())
    return kgen.Graph([h, i, s], [ops.exp(h) * s, ops.cast(i, "float16") + h, ops.sum(h, 1),
                                  ops.broadcast_to(s > 0.0, (5,)), ops.one_hot(ops.cast(i, "int32"), 4)])


def slicing():
    """Slices, pads and joins, guarded loads included, in pointwise, reduction and matmul
    kernels and in a gradient."""
    x, w = kgen.tensor("x", ("N", 6)), kgen.tensor("w", (6, 8))
    i, f, g, o = ops.split(x @ w, 4, axis=1)
    h = ops.sigmoid(i) * ops.tanh(g) + ops.sigmoid(f) * ops.sigmoid(o)
    joined = ops.concatenate([h, x[:, ::3]], axis=1)
    loss = ops.sum(ops.pad(joined, ((0, 0), (1, 1))) ** 2)
    return kgen.Graph([x, w], [loss, ops.max(joined, axis=1), joined @ w[2:, :]] + kgen.grad(loss, [x, w]))


def activations_and_rounding():
    """The torch activations in a matmul's epilogue and a gradient, erf, and the rounding ops:
    fmod's float64 quotient, integer division and remainder."""
    x, w = kgen.tensor("x", ("N", 6)), kgen.tensor("w", (6, 8))
    i, j = kgen.tensor("i", ("N", 8), "int32"), kgen.tensor("j", (8,), "int32")
    h = ops.gelu(x @ w) + ops.silu(x @ w) * ops.elu(x @ w, 0.5) - ops.softplus(x @ w, 2.0) + ops.hardtanh(x @ w)
    loss = ops.sum(ops.leaky_relu(h) * ops.clamp(h, -1.0, 1.0) + ops.gelu(h, approximate="tanh"))
    rounded = ops.remainder(h, 0.75) + ops.floor_divide(h, -1.5) + ops.fmod(h, 0.3) + ops.erf(ops.trunc(h))
    ints = ops.div(i, j, rounding_mode="floor") + ops.remainder(i, j) + ops.div(i, j, rounding_mode="trunc")
    return kgen.Graph([x, w, i, j], [loss, rounded, ints] + kgen.grad(loss, [w]))


SPILL_BUDGET = 16  # bytes of stack per thread: 4 registers kept in local memory, outside any loop

PROGRAMS = {f.__name__: f for f in (pointwise_chain, reductions, matmul_fp32, matmul_fp16, gradient, mixed_dtypes,
                                    slicing, activations_and_rounding)}


def _ptx_target(ptx: str) -> str:
    return re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_every_kernel_compiles_for_sm80_and_sm90(name):
    program = kgen.compile(PROGRAMS[name]())
    binaries = aot.compile_program(program, targets=TARGETS)
    assert len(binaries) == len(program.kernels) * len(TARGETS)
    expected = [(k.name, t) for k in program.kernels for t in TARGETS]
    assert [(b.kernel, b.target) for b in binaries] == expected
    for b in binaries:
        assert isinstance(b.ptx, str) and f".target {b.target}" in b.ptx
        assert _ptx_target(b.ptx).startswith(b.target)
        assert re.search(rf"\.entry\s+{b.kernel}\b", b.ptx)
        assert isinstance(b.cubin, bytes) and len(b.cubin) > 0
        assert b.cubin[:4] == b"\x7fELF"
        assert b.num_warps == 4
        kernel = next(k for k in program.kernels if k.name == b.kernel)
        assert set(b.constexprs) == {p.name for p in kernel.params if p.kind == "constexpr"}


def test_float16_matmul_uses_tensor_cores():
    program = kgen.compile(matmul_fp16())
    by_target = {b.target: b for b in aot.compile_program(program, targets=TARGETS)}
    assert "mma" in by_target["sm_80"].ptx
    assert "wgmma" not in by_target["sm_80"].ptx
    assert "wgmma" in by_target["sm_90"].ptx or "mma" in by_target["sm_90"].ptx


def test_float32_matmul_uses_exact_products():
    """float32 operands use input_precision="ieee": FMAs, no (tf32) tensor-core mma."""
    program = kgen.compile(matmul_fp32())
    assert 'input_precision="ieee"' in program.kernels[0].text
    for b in aot.compile_program(program, targets=TARGETS):
        assert "mma" not in b.ptx
        assert "fma.rn.f32" in b.ptx


def test_aot_after_interpreted_runs(rng):
    g = reductions()
    program = kgen.compile(g)
    values = {"x": random_array(rng, (5, 13)), "i": random_array(rng, (7, 5), "int32")}
    tensors = {n: program.to_tensor(values[n.name], n) for n in program.graph.inputs}
    before = [o.numpy().copy() for o in program.run(tensors)]
    binaries = aot.compile_program(program, targets=TARGETS)
    assert len(binaries) == 2 * len(program.kernels)
    after = [o.numpy() for o in program.run(tensors)]  # interpreted runs still work after compiling
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    for got, want in zip(after, kgen.reference.run(g, values)):
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-4, atol=1e-5)


def test_aot_after_interpreted_runs_of_a_gradient_program(rng):
    g = gradient()
    values = {"x": random_array(rng, (5, 6)), "w1": random_array(rng, (6, 8)), "b1": random_array(rng, (8,)),
              "w2": random_array(rng, (8, 4)), "y": rng.integers(0, 4, size=5).astype(np.int32)}
    run_compiled(g, values)
    kgen.check(g, values, strict=True)
    program = kgen.compile(g)
    binaries = aot.compile_program(program, targets=("sm_90",))
    assert len(binaries) == len(program.kernels) and all(b.cubin for b in binaries)


def test_compile_kernel_with_explicit_config():
    program = kgen.compile(matmul_fp32())
    (kernel,) = program.kernels
    config = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 8, "num_warps": 2, "num_stages": 2}
    b = aot.compile_kernel(program.source, kernel, "sm_80", config)
    assert b.kernel == kernel.name and b.target == "sm_80"
    assert b.constexprs == {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 8}
    assert b.num_warps == 2
    assert b.shared_bytes >= 0
    assert ".target sm_80" in b.ptx


def test_sizes_choose_the_config():
    x = kgen.tensor("x", ("N", 5))
    program = kgen.compile(kgen.Graph([x], [ops.exp(x)]))
    (small,) = aot.compile_program(program, targets=("sm_80",))  # N defaults to 64
    (large,) = aot.compile_program(program, targets=("sm_80",), sizes={"N": 1000})
    assert small.constexprs == {"XBLOCK": 512}
    assert large.constexprs == {"XBLOCK": 1024}


@pytest.mark.parametrize("target", ["sm_75", "sm_86", "sm_89", "sm_100", "sm_120"])
def test_other_targets(target):
    x = kgen.tensor("x", ("N", 5))
    program = kgen.compile(kgen.Graph([x], [ops.sum(ops.exp(x), 1)]))
    (b,) = aot.compile_program(program, targets=(target,))
    assert _ptx_target(b.ptx).startswith(target) and b.cubin


def test_unknown_target_is_an_error():
    program = kgen.compile(pointwise_chain())
    with pytest.raises(kgen.KgenError, match="unknown target 'sm_42'"):
        aot.compile_program(program, targets=("sm_42",))
    assert aot.parse_target("sm_90") == 90


@pytest.mark.parametrize("model", ["mlp128", "cnn", "lstm", "gru"])
def test_zoo_training_steps_compile_for_gpus(model):
    """Every launch of the zoo's training steps (combo kernels, row kernels, a row kernel in
    a matmul epilogue, bias gradients in the weight-gradient GEMMs) builds for both targets,
    and with the default configs no kernel spills more than a few registers: at most
    SPILL_BUDGET bytes per thread (a split-K GEMM keeps 4 values out of registers across
    its loop on sm_90), where a 128x64x32 float32 conv once spilled 504."""
    from kgen import nn
    spec = nn.zoo.get(model)
    nn.manual_seed(0)
    net = spec.model()
    (x, y), _ = spec.data()
    step = nn.train_step(net, nn.losses.get(spec.loss), spec.optimizer(net.parameters()), x[:64], y[:64])
    binaries = aot.compile_program(step.program, targets=TARGETS, sizes={"N": 64})
    assert sorted((b.kernel, b.target) for b in binaries) == sorted(
        (k.name, t) for k in step.kernels for t in TARGETS)
    assert {k.kind for k in step.kernels} >= ({"matmul", "combo"} if model in ("mlp128", "cnn") else {"combo"})
    for b in binaries:
        assert b.cubin and b.shared_bytes <= 227 * 1024
        assert b.spill_bytes <= SPILL_BUDGET, f"{b.kernel} for {b.target} spills {b.spill_bytes} B per thread"


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_persistent_recurrences_registers_and_spills_at_the_zoo_sizes(model):
    """The persistent scan kernels of the zoo's steps (batch 64, H = 64: the forward, and the
    gradient's reverse scan in its combo launch) with their GPU defaults (16 rows a program,
    w_hh reloaded at each step, eight warps; the LSTM gradient's weights, 136 registers a
    thread, prefetched into shared memory by a second stage) build for sm_80 and sm_90, each
    binary reporting its registers and spills from the cubin: none spilled (Triton 3.9's
    ptxas), within a block's shared memory on both."""
    from kgen import nn
    from kgen.autotune import costmodel
    from kgen.kernels.launch import default_config
    spec = nn.zoo.get(model)
    nn.manual_seed(0)
    net = spec.model()
    (x, y), _ = spec.data()
    step = nn.train_step(net, nn.losses.get(spec.loss), spec.optimizer(net.parameters()), x[:64], y[:64])
    kernels = [k for k in step.program.kernels
               if any(p.config_rule == "scan" for p in (k.parts or (k,)))]
    assert len(kernels) == 2  # the forward, and the gradient's launch
    configs = [default_config(k, {"N": 64}, interpreted=False) for k in kernels]
    assert [c["num_stages"] for c in configs] == ([1, 2] if model == "lstm" else [1, 1])
    for kernel, config in zip(kernels, configs):
        assert {v for k, v in config.items() if k.endswith("HOLD_WEIGHTS")} == {0}
        for target in TARGETS:
            binary = aot.compile_kernel(step.program.source, kernel, target, config)
            assert binary.cubin and 0 < binary.registers <= 255, (kernel.name, target, binary.registers)
            print(f"{model} {kernel.name} {target}: {binary.registers} registers, {binary.spill_bytes} B spilled, "
                  f"{binary.shared_bytes} B shared")
            assert binary.spill_bytes == 0, f"{kernel.name} for {target} spills {binary.spill_bytes} B"
            limit = costmodel.gpu(target).max_shared_per_block
            assert binary.shared_bytes <= limit, (kernel.name, target, binary.shared_bytes)


def test_binaries_assume_aligned_buffers_and_only_provably_aligned_ints():
    """As Triton's JIT specializes a call: pointers and the int arguments that are
    multiples of 16 at any sizes (784*N, not 5*N or N) compile as multiples of 16, so
    loads and stores of contiguous elements go 16 bytes at a time."""
    wide, narrow = kgen.tensor("x", ("N", 784)), kgen.tensor("x", ("N", 5))
    wide_kernel, = kgen.compile(kgen.Graph([wide], [ops.exp(wide) * 2.0])).kernels
    narrow_kernel, = kgen.compile(kgen.Graph([narrow], [ops.exp(narrow) * 2.0])).kernels
    assert [wide_kernel.params[i].name for i in aot.aligned_params(wide_kernel)] == ["in0", "out0", "xnumel"]
    assert [narrow_kernel.params[i].name for i in aot.aligned_params(narrow_kernel)] == ["in0", "out0"]
    wide_binary = aot.compile_program(kgen.compile(kgen.Graph([wide], [ops.exp(wide) * 2.0])), ("sm_90",))[0]
    assert "ld.global.v4" in wide_binary.ptx and "st.global.v4" in wide_binary.ptx
