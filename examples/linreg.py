"""Linear regression y = w*x + b with mean squared error and plain gradient descent,
written as the classic Theano program: one kgen.function computes the cost and applies the
updates, on generated Triton kernels.

    python examples/linreg.py --show-kernels
"""
from __future__ import annotations

import argparse

import numpy as np

import kgen


def make_data(n: int = 256, w: float = 3.0, b: float = 2.0, noise: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=n).astype(np.float32)
    y = (w * x + b + noise * rng.normal(size=n)).astype(np.float32)
    return x, y


def build(lr: float = 0.5):
    """The symbolic program: inputs, shared parameters, the compiled training step."""
    x = kgen.tensor("x", ("N",))
    y = kgen.tensor("y", ("N",))
    w = kgen.shared(0.0, name="w")
    b = kgen.shared(0.0, name="b")
    cost = kgen.ops.mse(w * x + b, y)
    gw, gb = kgen.grad(cost, [w, b])
    train = kgen.function([x, y], cost, updates=[(w, w - lr * gw), (b, b - lr * gb)])
    return train, w, b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--show-kernels", action="store_true", help="print the generated Triton source")
    parser.add_argument("--dump", metavar="PATH", help="write the generated Triton module to PATH")
    args = parser.parse_args(argv)

    xs, ys = make_data()
    train, w, b = build(args.lr)
    if args.show_kernels:
        print(train.source)
    if args.dump:
        print(f"generated module written to {train.dump(args.dump)}")
    print(f"{len(train.kernels)} kernels per step: " + ", ".join(k.name for k in train.kernels))
    order = np.random.default_rng(1)
    for epoch in range(1, args.epochs + 1):
        perm = order.permutation(len(xs))
        losses = [float(train(xs[perm[i:i + args.batch]], ys[perm[i:i + args.batch]]))
                  for i in range(0, len(xs), args.batch)]
        print(f"epoch {epoch:3d}  loss {np.mean(losses):.5f}  w {float(w.get_value()):.4f}  "
              f"b {float(b.get_value()):.4f}")
    print(f"learned y = {float(w.get_value()):.3f}*x + {float(b.get_value()):.3f}  (true: y = 3*x + 2)")
    return float(w.get_value()), float(b.get_value())


if __name__ == "__main__":
    main()
