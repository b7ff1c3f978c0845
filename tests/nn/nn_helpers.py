"""A small MLP, its torch twin with the same weights, and data for it: what the kgen.nn tests
train side by side with torch."""
from __future__ import annotations

import numpy as np
import torch

from kgen import nn


def small_mlp(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.LogSoftmax(dim=1))


def torch_mlp(model):
    twin = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3),
                               torch.nn.LogSoftmax(dim=1))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


def data(n=13, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, size=n).astype(np.int32)
