"""The Keras tutorial MLP, 784-64-64-10 with ReLU and softmax, trained with Adam and sparse
categorical cross-entropy on real MNIST digits, written Keras-style: compile, fit, evaluate.

    python examples/mlp64.py [--epochs 10]
"""
from __future__ import annotations

import argparse

from kgen import nn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)

    images, labels = nn.load_mnist_5k()
    (x_train, y_train), (x_test, y_test) = nn.split_mnist_5k(images.reshape(-1, 784), labels)

    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10), nn.Softmax())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test))
    loss, accuracy = model.evaluate(x_test, y_test)
    return accuracy


if __name__ == "__main__":
    main()
