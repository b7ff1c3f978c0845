"""The buffer plan (kgen.lowering.buffers): slots reused by liveness, and updates written
in place only where no kernel reads the old value afterwards."""
import itertools

import numpy as np
import pytest
import torch

import kgen
from kgen import nn, ops
from kgen.lowering.buffers import plan_buffers
from kgen.lowering.fusion import fuse
from kgen.lowering.passes import optimize


def test_every_update_of_the_mlp_training_step_is_in_place():
    spec = nn.zoo.get("mlp128")
    nn.manual_seed(0)
    model = spec.model()
    x, y = np.zeros((64, 784), np.float32), np.zeros(64, np.int32)
    step = nn.train_step(model, nn.losses.get(spec.loss), spec.optimizer(model.parameters()), x, y)
    assert len(step.program.buffers.inplace) == len(step.updates) == 12
    assert len(step.kernels) == 6  # moving updates to later launches added none
    before = {p.name: p.value for p in model.parameters()}
    step(x, y)
    assert all(p.value is before[p.name] for p in model.parameters())  # the same tensors, updated


def test_update_read_by_a_kernel_of_its_launch_moves_to_a_later_launch(rng):
    """w's new value is computed in the epilogue of x^T g while g @ w^T (which reads the old
    w) runs in the same launch: the update moves one launch later and stays correct."""
    x0, g0 = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    w = kgen.shared(w0, "w")
    x, g = kgen.tensor("x", ("N", 3)), kgen.tensor("g", ("N", 4))
    dx = g @ ops.swap_last(w)
    f = kgen.function([x, g], ops.sum(dx * dx), updates=[(w, w - 0.1 * (ops.swap_last(x) @ g))])
    assert len(f.program.buffers.inplace) == 1
    w_want = w0.astype(np.float64)
    for _ in range(3):
        loss = f(x0, g0)
        dx_want = g0 @ w_want.T
        np.testing.assert_allclose(float(loss), (dx_want ** 2).sum(), rtol=1e-4)
        w_want = w_want - 0.1 * (x0.T @ g0)
        np.testing.assert_allclose(w.value.numpy(), w_want, rtol=1e-4, atol=1e-5)


def test_update_that_is_also_read_later_is_not_in_place():
    """The old value is read by a kernel that must run after the update's kernel: no launch
    exists to move the update to, so it gets a fresh buffer."""
    w = kgen.tensor("w", (4, 4))
    x = kgen.tensor("x", (4, 4))
    new_w = w * 2.0
    late = (x @ new_w) @ w  # reads old w after new_w exists
    graph = optimize(kgen.Graph([x, w], [late, new_w]))
    plan = fuse(graph)
    buffers = plan_buffers(plan, {graph.outputs[1]: graph.inputs[1]})
    assert buffers.inplace == {} and graph.outputs[1] in buffers.fresh


def test_intermediates_reuse_dead_slots():
    x = kgen.tensor("x", (6, 6))
    t = x
    for _ in range(4):  # four matmuls in a chain: each result dies after the next reads it
        t = t @ x
    graph = optimize(kgen.Graph([x], [t]))
    buffers = plan_buffers(fuse(graph))
    assert len(buffers.slot_of) == 3 and len(buffers.slots) == 2
    p = kgen.compile(graph, device="cpu")
    x0 = np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)
    (got,) = p.run({graph.inputs[0]: torch.from_numpy(x0)})
    np.testing.assert_allclose(got.numpy(), np.linalg.matrix_power(x0.astype(np.float64), 5), rtol=1e-4)


# --- in-place updates against the reference, step after step ------------------------------
def _steps_match_reference(f, args, steps=3):
    """Call `f` `steps` times; each time its outputs and the new shared values must equal
    the reference interpreter run on the values the shared variables had before the call."""
    inputs = f.inputs + f.shared
    for _ in range(steps):
        values = [np.asarray(a) for a in args] + [s.value.numpy().copy() for s in f.shared]
        want = kgen.reference.run(f.graph, values)
        got = f(*args)
        got = [] if got is None else ([got] if f.single_output else list(got))
        for g, w in zip(got, want[:len(got)]):
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=1e-4, atol=1e-5)
        for (var, _), w in zip(f.updates, want[len(f.outputs):]):
            np.testing.assert_allclose(var.value.numpy().astype(np.float64), w, rtol=1e-4, atol=1e-5)
    assert len(inputs) == len(f.graph.inputs)


def test_tied_weights_update_in_place_after_both_reads(rng):
    """W is read by the encoder (x @ W) and the decoder (h @ W^T), forward and backward: its
    update may only overwrite it once every reader has run."""
    w = kgen.shared(rng.standard_normal((5, 3)).astype(np.float32) * 0.5, "w")
    x = kgen.tensor("x", ("N", 5))
    h = ops.tanh(x @ w)
    loss = ops.mean((h @ ops.swap_last(w) - x) ** 2)
    (gw,) = kgen.grad(loss, [w])
    f = kgen.function([x], loss, updates=[(w, w - 0.1 * gw)])
    assert len(f.program.buffers.inplace) == 1
    _steps_match_reference(f, [rng.standard_normal((7, 5)).astype(np.float32)])


def test_momentum_and_parameter_updates_that_read_each_other(rng):
    w = kgen.shared(rng.standard_normal((4, 3)).astype(np.float32), "w")
    v = kgen.shared(np.zeros((4, 3), np.float32), "v")
    x, y = kgen.tensor("x", ("N", 4)), kgen.tensor("y", ("N", 3))
    loss = ops.mean((x @ w - y) ** 2)
    (gw,) = kgen.grad(loss, [w])
    v_new = 0.9 * v + gw
    f = kgen.function([x, y], loss, updates=[(v, v_new), (w, w - 0.05 * v_new)])
    assert len(f.program.buffers.inplace) == 2
    _steps_match_reference(f, [rng.standard_normal((6, 4)).astype(np.float32),
                               rng.standard_normal((6, 3)).astype(np.float32)])


def test_swapped_updates_are_not_written_over_each_other(rng):
    """a <- b, b <- a (a swap): each new value is an old value the other update reads."""
    a = kgen.shared(rng.standard_normal((3,)).astype(np.float32), "a")
    b = kgen.shared(rng.standard_normal((3,)).astype(np.float32), "b")
    f = kgen.function([], None, updates=[(a, b * 2.0), (b, a * 3.0)])
    assert f.program.buffers.inplace == {}  # each kernel root would overwrite what the other reads
    before_a, before_b = a.value.numpy().copy(), b.value.numpy().copy()
    f()
    np.testing.assert_allclose(a.value.numpy(), 2 * before_b)
    np.testing.assert_allclose(b.value.numpy(), 3 * before_a)


def test_an_update_that_is_also_an_output(rng):
    w = kgen.shared(rng.standard_normal((2, 2)).astype(np.float32), "w")
    new_w = w * 0.5
    f = kgen.function([], [new_w, ops.sum(w)], updates=[(w, new_w)])
    _steps_match_reference(f, [])


# --- B3 over every order of the updates ----------------------------------------------------
def _in_place_invariant(f) -> None:
    """B3's invariant, read off the plan: every kernel other than an in-place update's own
    that reads the old value runs in a launch before that kernel's."""
    from kgen.lowering.fusion import group_reads
    plan, written = f.program.plan, f.program.plan.written
    launch = {gi: li for li, groups in enumerate(plan.launches) for gi in groups}
    producer = {r: gi for gi, g in enumerate(plan.groups) for r in g.roots}
    for new, old in f.program.buffers.inplace.items():
        for gi, group in enumerate(plan.groups):
            if gi != producer[new] and old in group_reads(group, written):
                assert launch[gi] < launch[producer[new]], f"a kernel reads {old!r} while or after it is updated"


def _conv_pair_program(rng, order, other_chain):
    """The issue's reproducer, generalised: a conv whose input and weight are both shared and
    both updated, beside (or not) an unrelated conv chain that shifts the launches."""
    x5 = kgen.shared(rng.standard_normal((2, 3, 3, 6)).astype(np.float32), "x5")
    x6 = kgen.shared(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "x6")
    x1, x2, x3 = kgen.tensor("x1", (2, 3, 3, 4)), kgen.tensor("x2", (3, 3, 1, 1)), kgen.tensor("x3", (4, 2, 2, 2))
    x7, cot = kgen.tensor("x7", (3,)), kgen.tensor("cot", (2, 3, 7, 10))
    g5, g6 = kgen.grad(ops.sum(ops.conv2d(x5, x6, x7, padding=2) * cot), [x5, x6])
    outputs, inputs = [g6], [x7, cot]
    if other_chain:
        outputs.insert(0, -ops.conv2d(ops.conv2d(ops.avg_pool2d(x1, (1, 3), 1, (0, 1)), x2, stride=2), x3,
                                      stride=(1, 2), layout="NHWC"))
        inputs = [x1, x2, x3] + inputs
    updates = [(x5, x5 - 0.125 * g5), (x6, x6 - 0.125 * g6)]
    f = kgen.function(inputs, outputs, updates=[updates[i] for i in order])
    args = [rng.standard_normal(tuple(int(d) for d in n.shape)).astype(np.float32) for n in inputs]
    return f, args


@pytest.mark.parametrize("other_chain", [True, False])
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_conv_input_and_weight_both_updated_in_place(rng, order, other_chain):
    """The issue-10 reproducer: x6's gradient was computed from x5 after x5's update."""
    f, args = _conv_pair_program(rng, order, other_chain)
    _in_place_invariant(f)
    _steps_match_reference(f, args, steps=2)


def _random_update_program(seed):
    """A small random training-like program: a chain of matmuls through shared matrices with
    elementwise ops between, side chains that read some of them again, and the chain's input
    itself shared; every shared value is updated from its gradient, so an update's kernel
    may read another shared value that is updated too (the weight gradient reads the input)."""
    rng = np.random.default_rng(seed)
    n, k = 3, int(rng.integers(2, 5))
    ws = [kgen.shared(rng.standard_normal((k, k)).astype(np.float32) * 0.5, f"w{i}") for i in range(2)]
    x = kgen.shared(rng.standard_normal((n, k)).astype(np.float32), "x")
    u = kgen.tensor("u", (n, k))
    h, outputs = x, []
    for w in ws:
        h = ops.tanh(h @ w) if rng.random() < 0.5 else h @ w + h
        if rng.random() < 0.5:  # a side chain, reading a weight (or its transpose) again
            outputs.append(ops.sum(u @ ops.swap_last(ws[int(rng.integers(len(ws)))])))
    chain = u
    for _ in range(int(rng.integers(0, 9))):  # an unrelated chain of launches: B3 may move kernels
        chain = ops.tanh(chain @ ops.swap_last(u)) @ u
    outputs.append(ops.sum(chain))
    loss = ops.mean(h * h)
    shared = [x] + ws
    updates = [(s, s - 0.1 * g) for s, g in zip(shared, kgen.grad(loss, shared))]
    return [u], [loss] + outputs, updates, [rng.standard_normal((n, k)).astype(np.float32)]


@pytest.mark.parametrize("seed", range(8))
def test_every_order_of_updates_matches_the_reference(seed):
    """B3 must not depend on the order updates are listed in: every permutation of every
    small random program keeps the invariant and matches the reference over two steps."""
    inputs, outputs, updates, args = _random_update_program(seed)
    for order in itertools.permutations(range(len(updates))):
        f = kgen.function(inputs, outputs, updates=[updates[i] for i in order])
        _in_place_invariant(f)
        _steps_match_reference(f, args, steps=2)
