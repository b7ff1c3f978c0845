"""Logistic regression: p = sigmoid(x @ w + b), binary cross-entropy, gradient descent,
on synthetic data drawn from a known logistic model, trained on generated Triton kernels.

    python examples/logreg.py [--epochs 30] [--show-kernels] [--dump PATH]
"""
from __future__ import annotations

import argparse

import numpy as np

import kgen

TRUE_W = np.array([2.0, -1.0, 0.5], dtype=np.float32)
TRUE_B = 0.3


def make_data(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(TRUE_W))).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(x @ TRUE_W + TRUE_B)))
    y = (rng.random(n) < p).astype(np.float32)
    return x, y


def build(features: int, lr: float):
    x = kgen.tensor("x", ("N", features))
    y = kgen.tensor("y", ("N",))
    w = kgen.shared(np.zeros(features, np.float32), name="w")
    b = kgen.shared(0.0, name="b")
    p = kgen.ops.sigmoid(x @ w + b)
    cost = kgen.ops.binary_cross_entropy(p, y)
    gw, gb = kgen.grad(cost, [w, b])
    train = kgen.function([x, y], cost, updates=[(w, w - lr * gw), (b, b - lr * gb)])
    predict = kgen.function([x], p > 0.5)
    return train, predict, w, b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--show-kernels", action="store_true", help="print the generated Triton source")
    parser.add_argument("--dump", metavar="PATH", help="write the generated Triton module to PATH")
    args = parser.parse_args(argv)

    xs, ys = make_data()
    train, predict, w, b = build(xs.shape[1], args.lr)
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
        accuracy = float((predict(xs).numpy() == (ys > 0.5)).mean())
        print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  accuracy {accuracy:.3f}")
    print(f"learned w = {np.round(w.get_value(), 3)}, b = {float(b.get_value()):.3f}  "
          f"(true: w = {TRUE_W}, b = {TRUE_B})")
    return w.get_value(), float(b.get_value()), accuracy


if __name__ == "__main__":
    main()
