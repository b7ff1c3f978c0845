"""The Keras MNIST CNN: Conv2D(32, 3x3, relu) - MaxPool(2) - Conv2D(64, 3x3, relu) -
MaxPool(2) - Flatten - Dense(10, softmax), trained with Adam on 28x28x1 MNIST digits.
Convolutions are implicit-GEMM Triton kernels; pooling and both convolution gradients too.

    python examples/cnn.py [--epochs 5]
"""
from __future__ import annotations

import argparse

from kgen import nn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    images, labels = nn.load_mnist_5k()
    (x_train, y_train), (x_test, y_test) = nn.split_mnist_5k(images, labels)  # [N, 1, 28, 28]

    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 10), nn.Softmax())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test))
    return model.evaluate(x_test, y_test)[1]


if __name__ == "__main__":
    main()
