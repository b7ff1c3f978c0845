"""The PyTorch tutorial MLP, 784-128-64-10 with ReLU and log_softmax, trained with
cross-entropy (NLL of log-probabilities) and SGD (lr 0.01, momentum 0.9) on real MNIST
digits, written PyTorch-style: a module, a loss, an optimizer and a compiled step.

    python examples/mlp128.py [--epochs 10]
"""
from __future__ import annotations

import argparse

import numpy as np

from kgen import nn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    images, labels = nn.load_mnist_5k()  # or nn.load_mnist("path/to/mnist") for the full set
    (x_train, y_train), (x_test, y_test) = nn.split_mnist_5k(images.reshape(-1, 784), labels)

    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10), nn.LogSoftmax(dim=1))
    optimizer = nn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.NLLLoss()
    # forward + loss + backward + update: one compiled program
    step = nn.train_step(model, loss_fn, optimizer, x_train[:args.batch], y_train[:args.batch])
    evaluate = nn.eval_step(model, loss_fn, x_test, y_test, metrics=["accuracy"])
    print(f"{len(step.kernels)} kernels per training step")

    for epoch in range(args.epochs):
        losses = [float(step(xb, yb)[0]) for xb, yb in nn.batches(x_train, y_train, args.batch, epoch=epoch)]
        test_loss, test_accuracy = (float(v) for v in evaluate(x_test, y_test))
        print(f"epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}  test loss {test_loss:.4f}  "
              f"test accuracy {test_accuracy:.4f}")
    return test_accuracy


if __name__ == "__main__":
    main()
