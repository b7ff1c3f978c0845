"""Torch models kgen has never seen in its own API, for the frontend tests and
benchmarks/frontend_stats.py: each entry builds a torch module (seeded), an example batch
and the loss it trains with. Shapes are small so that the interpreter runs them quickly;
`batch` and `scale` let the benchmark build the same models at their real sizes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as tnn
import torch.nn.functional as F


@dataclass(frozen=True)
class TorchCase:
    name: str
    model: Callable  # () -> torch.nn.Module
    inputs: Callable  # (batch, generator) -> (x, y)
    loss: str  # "cross_entropy" (integer labels), "nll", "mse", "bce"
    dropout: bool = False  # the training graph draws masks (kgen's differ from torch's)


class ResidualBN(tnn.Module):
    """A ResNet basic block (conv-bn-relu-conv-bn + identity, relu) and a classifier head."""

    def __init__(self, c=4, classes=5):
        super().__init__()
        self.stem = tnn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn0 = tnn.BatchNorm2d(c)
        self.conv1 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c)
        self.conv2 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c)
        self.head = tnn.Linear(c, classes)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = F.relu(x + y)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DepthwiseSeparable(tnn.Module):
    """MobileNet's block: a 3x3 depthwise conv (groups = channels), a 1x1 pointwise conv."""

    def __init__(self, c=4, classes=5):
        super().__init__()
        self.stem = tnn.Conv2d(1, c, 3, stride=2, padding=1)
        self.depthwise = tnn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pointwise = tnn.Conv2d(c, 2 * c, 1)
        self.bn = tnn.BatchNorm2d(2 * c)
        self.head = tnn.Linear(2 * c, classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.pointwise(F.relu(self.depthwise(x)))))
        return self.head(x.mean(dim=(2, 3)))


class MlpGeluLN(tnn.Module):
    def __init__(self, d=12, h=16, classes=5):
        super().__init__()
        self.fc1, self.ln1 = tnn.Linear(d, h), tnn.LayerNorm(h)
        self.fc2, self.ln2 = tnn.Linear(h, h), tnn.LayerNorm(h)
        self.out = tnn.Linear(h, classes)

    def forward(self, x):
        x = self.ln1(F.gelu(self.fc1(x)))
        x = x + self.ln2(F.gelu(self.fc2(x), approximate="tanh"))
        return self.out(x)


class Conv1dSequence(tnn.Module):
    """A 1-D conv sequence classifier: [N, C, L] -> conv1d - relu - maxpool - conv1d - global mean."""

    def __init__(self, c=3, h=6, classes=4):
        super().__init__()
        self.conv1 = tnn.Conv1d(c, h, 3, padding=1)
        self.conv2 = tnn.Conv1d(h, h, 3, dilation=2, padding=2)
        self.out = tnn.Linear(h, classes)

    def forward(self, x):
        x = F.max_pool1d(F.relu(self.conv1(x)), 2)
        x = F.silu(self.conv2(x))
        return self.out(x.mean(dim=2))


class EmbeddingGRU(tnn.Module):
    """A text classifier: token ids [N, T] -> embedding -> GRU -> last state -> linear."""

    def __init__(self, vocab=11, d=6, h=8, classes=3):
        super().__init__()
        self.embed = tnn.Embedding(vocab, d, padding_idx=0)
        self.gru = tnn.GRU(d, h, batch_first=True)
        self.out = tnn.Linear(h, classes)

    def forward(self, tokens):
        out, _ = self.gru(self.embed(tokens))
        return self.out(out[:, -1])


class Recurrent(tnn.Module):
    """The zoo's lstm / gru: a recurrent layer over rows, the last step, dense, softmax."""

    def __init__(self, cell, d=7, h=8, classes=10):
        super().__init__()
        self.rnn = cell(d, h, batch_first=True)
        self.out = tnn.Linear(h, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return F.softmax(self.out(out[:, -1]), dim=1)


def _images(size, channels=1):
    return lambda n, g: (torch.randn(n, channels, size, size, generator=g), torch.randint(0, 5, (n,), generator=g))


def _labels(shape, classes):
    return lambda n, g: (torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g))


def _seq():
    return lambda n, g: (torch.randn(n, 3, 8, generator=g), torch.randint(0, 4, (n,), generator=g))


def _tokens():
    return lambda n, g: (torch.randint(0, 11, (n, 5), generator=g), torch.randint(0, 3, (n,), generator=g))


def _line():
    def make(n, g):
        x = torch.rand(n, 1, generator=g) * 2 - 1
        return x, 3 * x + 2
    return make


def _binary():
    return lambda n, g: (torch.randn(n, 10, generator=g), torch.randint(0, 2, (n, 1), generator=g).float())


CASES = {c.name: c for c in [
    TorchCase("residual-bn", ResidualBN, _images(6), "cross_entropy"),
    TorchCase("depthwise-separable", DepthwiseSeparable, _images(8), "cross_entropy"),
    TorchCase("mlp-gelu-layernorm", MlpGeluLN, _labels((12,), 5), "cross_entropy"),
    TorchCase("conv1d-sequence", Conv1dSequence, _seq(), "cross_entropy"),
    TorchCase("embedding-gru", EmbeddingGRU, _tokens(), "cross_entropy"),
    # the zoo's models (kgen/nn/zoo.py) written in plain torch, at small sizes
    TorchCase("linreg", lambda: tnn.Linear(1, 1), _line(), "mse"),
    TorchCase("logreg", lambda: tnn.Sequential(tnn.Linear(10, 1), tnn.Sigmoid()), _binary(), "bce"),
    TorchCase("mlp64", lambda: tnn.Sequential(tnn.Linear(12, 8), tnn.ReLU(), tnn.Linear(8, 8), tnn.ReLU(),
                                              tnn.Linear(8, 10), tnn.Softmax(dim=1)), _labels((12,), 10),
              "cross_entropy"),
    TorchCase("mlp128", lambda: tnn.Sequential(tnn.Linear(12, 16), tnn.ReLU(), tnn.Linear(16, 8), tnn.ReLU(),
                                               tnn.Linear(8, 10), tnn.LogSoftmax(dim=1)), _labels((12,), 10), "nll"),
    TorchCase("mlp32-dropout", lambda: tnn.Sequential(tnn.Linear(12, 8), tnn.ReLU(), tnn.Dropout(0.5),
                                                      tnn.Linear(8, 10), tnn.Softmax(dim=1)), _labels((12,), 10),
              "cross_entropy", dropout=True),
    TorchCase("cnn", lambda: tnn.Sequential(tnn.Conv2d(1, 4, 3), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(4, 6, 3),
                                            tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(6, 10),
                                            tnn.Softmax(dim=1)), _images(10), "cross_entropy"),
    TorchCase("lstm", lambda: Recurrent(tnn.LSTM), lambda n, g: (torch.randn(n, 4, 7, generator=g),
                                                                 torch.randint(0, 10, (n,), generator=g)),
              "cross_entropy"),
    TorchCase("gru", lambda: Recurrent(tnn.GRU), lambda n, g: (torch.randn(n, 4, 7, generator=g),
                                                               torch.randint(0, 10, (n,), generator=g)),
              "cross_entropy"),
]}


def build(name: str, batch: int = 6, seed: int = 0):
    """(torch module, x, y) for a case, seeded."""
    case = CASES[name]
    torch.manual_seed(seed)
    model = case.model()
    x, y = case.inputs(batch, torch.Generator().manual_seed(seed + 1))
    return model, x, y


def torch_loss(case: TorchCase, out, y):
    """The case's loss in torch, applied to the model's output as kgen's twin applies it."""
    if case.loss == "mse":
        return F.mse_loss(out, y)
    if case.loss == "bce":
        return F.binary_cross_entropy(out, y)
    if case.loss == "nll":
        return F.nll_loss(out, y)
    return F.cross_entropy(out, y)
