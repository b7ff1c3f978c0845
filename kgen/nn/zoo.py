"""The model zoo: the brief's models by name, so the CLI, tests, examples and benchmarks
build the same thing. Each entry gives the model, its loss, its optimizer and its data.

    spec = kgen.nn.zoo.get("mlp128")
    model = spec.model()
    trainer = Trainer(model, spec.optimizer(model.parameters()), spec.loss, ["accuracy"])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kgen.errors import KgenError
from kgen.nn import data, layers as L, optim, recurrent as R


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    model: Callable  # () -> Module
    loss: str
    optimizer: Callable  # params -> Optimizer
    data: Callable  # () -> ((x_train, y_train), (x_test, y_test))
    epochs: int
    batch_size: int = 64
    # (batch) -> (x, y): a batch of the data's shapes and dtypes without reading the data, for
    # what needs shapes only (kgen stats, check, compile); None: the data's first rows
    example: Callable = None


def example_batch(spec: ZooModel, batch: int):
    """`batch` rows of the model's data, or of random data of its shapes where the model
    says so (a data set that does not ship, such as CIFAR-10)."""
    if spec.example is not None:
        return spec.example(batch)
    (x, y), _ = spec.data()
    return x[:batch], y[:batch]


def _mnist_flat():
    (xtr, ytr), (xte, yte) = _mnist()
    return (xtr.reshape(len(xtr), -1), ytr), (xte.reshape(len(xte), -1), yte)


def _mnist():
    images, labels = data.load_mnist_5k()
    return data.split_mnist_5k(images, labels)


def _mnist_rows():
    """MNIST digits as sequences: 28 time steps (the rows), 28 features (the pixels)."""
    (xtr, ytr), (xte, yte) = _mnist()
    return (xtr.reshape(len(xtr), 28, 28), ytr), (xte.reshape(len(xte), 28, 28), yte)


def _recurrent(layer):
    return lambda: L.Sequential(layer(28, 64, batch_first=True), R.LastStep(), L.Linear(64, 10), L.Softmax())


def _cifar10():
    return data.load_cifar10(split="train"), data.load_cifar10(split="test")


def _cifar_example(batch: int):
    rng = np.random.default_rng(0)
    return rng.random((batch, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, batch).astype(np.int32)


def _cifar_cnn():
    """The Keras CIFAR-10 tutorial network: two blocks of two 3x3 convolutions (the first
    'same'), max pooling and dropout 0.25, then dense 512, dropout 0.5, dense 10."""
    return L.Sequential(
        L.Conv2d(3, 32, 3, padding=1), L.ReLU(), L.Conv2d(32, 32, 3), L.ReLU(), L.MaxPool2d(2), L.Dropout(0.25),
        L.Conv2d(32, 64, 3, padding=1), L.ReLU(), L.Conv2d(64, 64, 3), L.ReLU(), L.MaxPool2d(2), L.Dropout(0.25),
        L.Flatten(), L.Linear(64 * 6 * 6, 512), L.ReLU(), L.Dropout(0.5), L.Linear(512, 10), L.Softmax())


def _line(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    y = (3.0 * x + 2.0 + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return (x[:192], y[:192]), (x[192:], y[192:])


def _zeros_and_ones():
    """MNIST digits 0 and 1 only, flattened, with float 0/1 targets [N, 1]."""
    (xtr, ytr), (xte, yte) = _mnist_flat()
    pick = lambda x, y: (x[y < 2], y[y < 2].astype(np.float32)[:, None])  # noqa: E731
    return pick(xtr, ytr), pick(xte, yte)


MODELS = {m.name: m for m in [
    ZooModel("linreg", "linear regression y = w*x + b, MSE, gradient descent",
             lambda: L.Linear(1, 1), "mse", lambda p: optim.SGD(p, lr=0.1), _line, epochs=20, batch_size=32),
    ZooModel("logreg", "logistic regression (sigmoid, BCE) on MNIST 0 vs 1",
             lambda: L.Sequential(L.Linear(784, 1), L.Sigmoid()), "bce", lambda p: optim.SGD(p, lr=0.1),
             _zeros_and_ones, epochs=3),
    ZooModel("mlp64", "MLP 784-64-64-10, ReLU, softmax, Adam, sparse categorical cross-entropy",
             lambda: L.Sequential(L.Linear(784, 64), L.ReLU(), L.Linear(64, 64), L.ReLU(), L.Linear(64, 10),
                                  L.Softmax()),
             "sparse_categorical_crossentropy", lambda p: optim.Adam(p), _mnist_flat, epochs=10),
    ZooModel("mlp128", "MLP 784-128-64-10, ReLU, log_softmax, NLL, SGD lr 0.01 momentum 0.9",
             lambda: L.Sequential(L.Linear(784, 128), L.ReLU(), L.Linear(128, 64), L.ReLU(), L.Linear(64, 10),
                                  L.LogSoftmax(dim=1)),
             "nll", lambda p: optim.SGD(p, lr=0.01, momentum=0.9), _mnist_flat, epochs=10),
    ZooModel("mlp32-dropout", "MLP 784-32, ReLU, Dropout(0.5), 10, softmax (Keras Sequential), Adam",
             lambda: L.Sequential(L.Linear(784, 32), L.ReLU(), L.Dropout(0.5), L.Linear(32, 10), L.Softmax()),
             "sparse_categorical_crossentropy", lambda p: optim.Adam(p), _mnist_flat, epochs=10),
    ZooModel("cnn", "CNN conv32-pool-conv64-pool-dense10 (ReLU, softmax), Adam, on 28x28x1 MNIST",
             lambda: L.Sequential(L.Conv2d(1, 32, 3), L.ReLU(), L.MaxPool2d(2), L.Conv2d(32, 64, 3), L.ReLU(),
                                  L.MaxPool2d(2), L.Flatten(), L.Linear(1600, 10), L.Softmax()),
             "sparse_categorical_crossentropy", lambda p: optim.Adam(p), _mnist, epochs=5),
    ZooModel("lstm", "LSTM(28, 64) over MNIST rows (28 steps of 28 pixels), last state - dense10 softmax, "
             "Adam lr 0.01", _recurrent(R.LSTM), "sparse_categorical_crossentropy", lambda p: optim.Adam(p, lr=0.01),
             _mnist_rows, epochs=3),
    ZooModel("gru", "GRU(28, 64) over MNIST rows (28 steps of 28 pixels), last state - dense10 softmax, "
             "Adam lr 0.01", _recurrent(R.GRU), "sparse_categorical_crossentropy", lambda p: optim.Adam(p, lr=0.01),
             _mnist_rows, epochs=3),
    ZooModel("cifar-cnn", "the Keras CIFAR-10 CNN: conv32x2-pool-drop-conv64x2-pool-drop-dense512-drop-dense10, "
             "Adam; data from $KGEN_DATA (CIFAR-10 binary files, not shipped)", _cifar_cnn,
             "sparse_categorical_crossentropy", lambda p: optim.Adam(p), _cifar10, epochs=10, batch_size=32,
             example=_cifar_example),
]}


def names() -> list:
    return sorted(MODELS)


def get(name: str) -> ZooModel:
    if name not in MODELS:
        raise KgenError(f"unknown model {name!r}: the zoo has {', '.join(names())}")
    return MODELS[name]
