"""A recurrent classifier of MNIST digits read row by row: 28 time steps of 28 pixels
through an LSTM or a GRU (PyTorch's layer and parameter names), its last hidden state into
Dense(10, softmax), trained with Adam. Backpropagation through time is kgen.grad over the
unrolled steps; each step is a hidden-to-hidden matmul kernel and a fused gate kernel.

    python examples/recurrent.py [--cell lstm|gru] [--epochs 3] [--hidden 64]
"""
from __future__ import annotations

import argparse

from kgen import nn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--train-per-class", type=int, default=400)
    args = parser.parse_args(argv)

    images, labels = nn.load_mnist_5k()
    (x_train, y_train), (x_test, y_test) = nn.split_mnist_5k(images.reshape(-1, 28, 28), labels,
                                                             args.train_per_class)  # [N, 28 steps, 28 pixels]

    nn.manual_seed(0)
    cell = {"lstm": nn.LSTM, "gru": nn.GRU}[args.cell]
    model = nn.Sequential(cell(28, args.hidden, batch_first=True), nn.LastStep(), nn.Linear(args.hidden, 10),
                          nn.Softmax())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test))
    return model.evaluate(x_test, y_test)[1]


if __name__ == "__main__":
    main()
