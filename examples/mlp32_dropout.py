"""The Keras Sequential tutorial model: Dense(32, relu) - Dropout(0.5) - Dense(10, softmax),
trained with Adam and sparse categorical cross-entropy on real MNIST digits. Dropout masks
come from Triton's counter-based generator; the reference interpreter draws the same ones.

    python examples/mlp32_dropout.py [--epochs 10]
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
    model = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10), nn.Softmax())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test))
    return model.evaluate(x_test, y_test)[1]


if __name__ == "__main__":
    main()
