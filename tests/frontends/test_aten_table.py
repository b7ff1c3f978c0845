"""Every entry of the ATen table (kgen/frontends/aten.py) against torch: small torch
functions, exported and translated, whose values and gradients kgen's kernels must match.
The last test checks that these functions reach every entry, so an entry cannot be added
(or left behind when torch stops emitting its op) without a case."""
import collections

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kgen
from kgen.frontends.aten import ATEN
from kgen.frontends.torch_module import capture

T = torch.Tensor


def _r(*shape, positive=False, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    x = torch.randn(*shape, generator=g)
    return x.abs() + 0.5 if positive else x


def _i(high, *shape):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(high))


def _assign(a, b):
    out = a * 2
    out[:, 1:5:2] = b * 3  # core ATen: slice_scatter
    return out


def _no_grad_scale(a, b):
    with torch.no_grad():
        return (a * b).tanh() + 1


# name -> (function of torch tensors, example inputs)
CASES = {
    "arith": (lambda a, b: (a + 2 * b - b / 3) * b - torch.maximum(a, b) + torch.minimum(a, -b), (_r(4, 3), _r(4, 3))),
    "scalar-arith": (lambda a: 1 - a * 2.5 + a.add(1.0, alpha=2) - a.sub(a * a, alpha=0.5) + 3 / (a.abs() + 1),
                     (_r(4, 3),)),
    "compare": (lambda a, b: torch.where((a > b) & ~(a == 0.1) | (a <= 0) & (b >= a) & (a != b) | (a < 0.5),
                                         a, b * 2), (_r(4, 3), _r(4, 3))),
    "compare-more": (lambda a, b: torch.where((a == b) ^ (a < b) | (a <= b) & (a >= 0.5) | (a != 0.2) & (a > 0.1),
                                              a, -b) + a.clamp(min=b) + torch.remainder(a, 0.7)
                     + torch.logical_not(a > b).float() + torch.fmod(a, 0.7) + torch.fmod(a, b), (_r(4, 3), _r(4, 3))),
    "slice-assign": (lambda a, b: _assign(a, b), (_r(4, 6), _r(4, 2))),
    "any-all": (lambda a, b: a * (a > b).any(1, keepdim=True) + b * (a > 0).all() + (a != b).any()
                + torch.any(a > 0.5, 0).float() + torch.all(a, 1, keepdim=True), (_r(4, 3), _r(4, 3))),
    "unary": (lambda a: (-a).exp() + a.abs().log() + a.abs().sqrt() + a.tanh() + a.sigmoid() + a.relu()
              + a.abs().rsqrt() + (a.abs() + 1).reciprocal() + a.abs().log1p() + a.expm1() + torch.erf(a),
              (_r(5, 3, positive=True),)),
    "pow": (lambda a, b: a ** 2 + a.pow(b) + 2.0 ** b, (_r(4, 3, positive=True), _r(4, 3))),
    "activations": (lambda a: F.gelu(a) + F.gelu(a, approximate="tanh") + F.silu(a) + F.leaky_relu(a, 0.2)
                    + F.elu(a, 0.7) + F.selu(a) + F.softplus(a, 2.0, 5.0) + F.hardtanh(a, -0.5, 0.5)
                    + a.clamp(-0.2, 0.3) + a.clamp(min=0.1) + F.relu6(a * 4), (_r(6, 4),)),
    "rounding": (lambda a, b: torch.div(a, b, rounding_mode="floor") + torch.div(a, b, rounding_mode="trunc")
                 + torch.remainder(a, b) + a.floor() + a.trunc(), (_r(4, 3) * 5, _r(4, 3, positive=True))),
    "arange-copy-alias": (lambda a: a + torch.arange(3) + torch.arange(0.5, 2.0, 0.5) + torch.zeros_like(a).copy_(a * 2)
                          + a[:, :] + a.double().sum(1, keepdim=True).float(), (_r(4, 3),)),
    # where torch stops gradients (core ATen alone would lose both: kgen/frontends/fx.py, core_aten)
    "detach": (lambda a, b: a * a.detach() + (b * a).detach().exp() * b, (_r(4, 3), _r(4, 3))),
    "no-grad": (lambda a, b: _no_grad_scale(a, b) * a + b, (_r(4, 3), _r(4, 3))),
    "casts": (lambda a: a.to(torch.int32).to(torch.float32) + (a > 0).float() + a.clone(), (_r(4, 3) * 3,)),
    "full": (lambda a: a + torch.full((4, 3), 2.0) + torch.zeros_like(a) + torch.ones(3), (_r(4, 3),)),
    "reductions": (lambda a: a.sum() + a.sum(dim=1).mean() + a.mean(dim=(0, 2), keepdim=True).sum()
                   + a.amax(dim=1).sum() + a.amin(dim=(1, 2)).sum() + a.var(dim=1).sum()
                   + a.var(dim=2, correction=0).sum(), (_r(3, 4, 5),)),
    "views": (lambda a: a.view(2, 30).t().reshape(6, 10).permute(1, 0).unsqueeze(0).squeeze(0)
              .transpose(0, 1).flatten().view(6, 10)[1:5:2, -3:].sum() + a.expand(2, 3, 4, 5).sum(),
              (_r(3, 4, 5),)),
    "select-squeeze": (lambda a: a[:, 1] + a[:, :, 2].sum(1, keepdim=True) + a[:, 0:1, 0].squeeze(1).unsqueeze(1),
                       (_r(3, 4, 5),)),
    "cat-split": (lambda a, b: torch.cat([a, b, a], dim=1).split([2, 5, 2], dim=1)[1].sum(1)
                  + torch.cat(torch.split(a, 1, dim=1)[::-1], 1).sum(1) + torch.stack([a, a], 0).sum((0, 2)),
                  (_r(4, 2), _r(4, 5))),
    "pad": (lambda a: F.pad(a, (1, 2)) .sum(2) + F.pad(a, (0, 1, 2, 0), value=1.5).sum(2)[:, :4],
            (_r(2, 4, 3),)),
    "matmul": (lambda a, b, c: a @ b + torch.bmm(c.transpose(1, 2), c)[:, :4, :5].sum(0)
               + torch.addmm(b[0], a, b, beta=0.5, alpha=2.0), (_r(4, 3), _r(3, 5), _r(2, 4, 6))),
    "linear": (lambda a, w, bias: F.linear(a, w, bias) + F.linear(a, w), (_r(4, 3), _r(5, 3), _r(5))),
    "conv": (lambda x, w, w1, wg: F.conv2d(x, w, padding=1, stride=(1, 2)).sum() + F.conv1d(x[:, :, 0], w1).sum()
             + F.conv2d(x, w, padding=[1], stride=[2]).sum()
             + F.conv2d(x, wg, groups=2, dilation=2).sum(), (_r(2, 4, 6, 6), _r(3, 4, 3, 3), _r(5, 4, 2),
                                                            _r(4, 2, 2, 2))),
    "pools": (lambda x: F.max_pool2d(x, 2).sum() + F.avg_pool2d(x, 3, 2, 1, count_include_pad=False).sum()
              + F.adaptive_avg_pool2d(x, (2, 3)).sum() + F.max_pool2d(x, 3, 2, 1, ceil_mode=True).sum()
              + F.max_pool1d(x[:, :, 0], 2).sum() + F.avg_pool1d(x[:, :, 0], 2).sum(), (_r(2, 3, 6, 6),)),
    "softmax": (lambda a: F.softmax(a, 1) + F.log_softmax(a, -1), (_r(4, 6),)),
    "norms": (lambda a, w, b: F.layer_norm(a, (6,), w, b) + F.layer_norm(a, (6,))
              + F.batch_norm(a, None, None, w, b, training=True), (_r(4, 6), _r(6), _r(6))),
    "embedding": (lambda idx, w: F.embedding(idx, w).sum(1) + F.embedding(idx, w, padding_idx=0).sum(1),
                  (_i(7, 4, 3), _r(7, 5))),
    "losses": (lambda a, y, t: F.cross_entropy(a, y) + F.nll_loss(F.log_softmax(a, 1), y, reduction="sum")
               + F.mse_loss(a, t) + F.cross_entropy(a, y, label_smoothing=0.1)
               + F.cross_entropy(a, t.softmax(1), weight=torch.linspace(0.5, 1.0, 5)), (_r(4, 5), _i(5, 4), _r(4, 5))),
    "symbolic-batch": (lambda a: a.view(a.shape[0], -1).sum(1) + a.view(a.shape[0] * 3, 4).sum(1).view(a.shape[0], 3)[:, 0],
                       (_r(4, 3, 4),)),
}
# ops whose translation is reached only in training mode
TRAINING = {"dropout": (lambda a: F.dropout(a, 0.0, training=True) + F.dropout(a, 0.5, training=False)
                        + 0.0 * F.dropout(a, 0.5, training=True), (_r(4, 3),)),  # the mask: test_from_torch
            "batchnorm-module": (torch.nn.BatchNorm1d(3), (_r(4, 3),))}


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _module(fn):
    return fn if isinstance(fn, torch.nn.Module) else _Wrap(fn)


# cases captured with a symbolic batch (the others have inputs without one: weights)
DYNAMIC = {"symbolic-batch", "batchnorm-module", "unary", "softmax", "select-squeeze"}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(TRAINING))
def test_translation_matches_torch(name):
    fn, inputs = CASES.get(name) or TRAINING[name]
    module = _module(fn).train(name in TRAINING)
    model = kgen.from_torch(module, *inputs, dynamic_batch=name in DYNAMIC).train(name in TRAINING)
    symbolic = [kgen.tensor(*spec) for spec in model.inputs]
    out = model(*symbolic)
    floats = [s for s, t in zip(symbolic, inputs) if t.is_floating_point()]
    grads = kgen.grad(kgen.ops.sum(out * out), floats) if floats else []
    f = kgen.function(symbolic, [out, *grads])
    got = f(*[t.numpy() for t in inputs])
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    expected = module(*leaves)
    (expected * expected).sum().backward()
    want = [expected] + [leaf.grad for leaf in leaves if leaf.is_floating_point()]
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(g), w.detach().numpy(), rtol=2e-4, atol=2e-5,
                                   err_msg=f"{name}: {'value' if k == 0 else f'gradient {k}'}")


def test_every_table_entry_has_a_case():
    reached = collections.Counter()
    for name, (fn, inputs) in {**CASES, **TRAINING}.items():
        for program in capture(_module(fn).train(name in TRAINING), inputs, name in DYNAMIC).values():
            reached.update(str(n.target) for n in program.graph.nodes if n.op == "call_function")
    assert not set(ATEN) - set(reached), f"no case reaches {sorted(set(ATEN) - set(reached))}"
