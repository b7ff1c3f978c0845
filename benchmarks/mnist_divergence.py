"""Whether kgen's MNIST training trajectory leaves its torch twin's because of a bug or
because training is chaotic (a rounding difference grown by the steps).

kgen and the torch twin of benchmarks/mnist_accuracy.py train side by side, one batch at
a time over the whole run (the short last batch of each epoch included). Beside them, as
the chaos yardstick: a torch twin whose starting weights are perturbed by a relative
`--perturb` (1e-6), and a float64 torch twin. Per step it records each one's loss and its
parameters' distance from the float32 twin's (the largest over tensors of
max|a - b| / max|b|), and a local check that needs no yardstick: from kgen's own weights
and Adam state before the step, one torch step in float64 and one in float32 on the same
batch, and how far kgen's and the float32 step's results land from the float64 one. A
kgen bug shows as a local error orders of magnitude above float32 torch's at some step; chaos as
local errors at rounding level with trajectory distances that grow alike from any start. Last, the
test accuracy after the run of `--spread` more torch twins each perturbed differently (how
much accuracy moves with the trajectory alone), and of `--kgen-spread` kgen runs from the
first of those same starts (paired with them).

Prints every `--every`th step and the accuracies; writes
benchmarks/results/DATE-DEVICE-mnist-divergence-MODEL.json.

    TRITON_INTERPRET=1 python benchmarks/mnist_divergence.py lstm|gru [--epochs 3] [--seed 0]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kgen  # noqa: E402
from kgen import nn  # noqa: E402
from kgen.nn import losses  # noqa: E402
from kgen.nn.train import train_step  # noqa: E402
from results_io import device_name, write_result  # noqa: E402
from mnist_accuracy import torch_accuracy, torch_optimizer, torch_step, torch_twin  # noqa: E402


def distance(a: dict, b: dict) -> float:
    """The largest over tensors of max|a - b| / max|b| (name -> float64 array)."""
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30)) for k in b)


def torch_params(twin) -> dict:
    return {k: v.detach().double().numpy().copy() for k, v in twin.named_parameters()}


def perturbed(twin, relative: float, seed: int):
    """A copy of the twin whose every weight w is w * (1 + relative * normal())."""
    other = copy.deepcopy(twin)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1 + relative * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return other


class Runner:
    """A torch twin and its optimizer, stepped one batch at a time."""

    def __init__(self, name, twin, lr):
        self.name, self.twin, self.opt = name, twin, torch_optimizer(name, twin.parameters(), lr)

    def step(self, xb, yb) -> float:
        return torch_step(self.name, self.twin, self.opt, xb, yb)


class KgenState:
    """kgen's parameters and Adam state by the twin's parameter names."""

    def __init__(self, model, optimizer):
        self.params = dict(model.named_parameters())
        index = {id(p): i for i, p in enumerate(optimizer.params)}
        self.optimizer, self.index = optimizer, index

    def weights(self) -> dict:
        return {k: v.get_value().astype(np.float64) for k, v in self.params.items()}

    def adam(self, k) -> tuple:
        i = self.index[id(self.params[k])]
        return self.optimizer.m[i].get_value(), self.optimizer.v[i].get_value()

    def local_step(self, name, model_twin, lr, dtype, xb, yb) -> tuple:
        """One torch step from kgen's current weights and Adam state: (loss, parameters)."""
        twin = copy.deepcopy(model_twin).to(dtype)
        opt = torch_optimizer(name, twin.parameters(), lr)
        t = float(self.optimizer.step.get_value())
        with torch.no_grad():
            for k, p in twin.named_parameters():
                p.copy_(torch.from_numpy(self.params[k].get_value()))
                if t > 0:
                    m, v = self.adam(k)
                    opt.state[p] = {"step": torch.tensor(t), "exp_avg": torch.from_numpy(m).to(dtype),
                                    "exp_avg_sq": torch.from_numpy(v).to(dtype)}
        loss = torch_step(name, twin, opt, xb, yb)
        return loss, torch_params(twin)


def trace(name: str, epochs: int, seed: int, perturb: float, every: int) -> dict:
    spec = nn.zoo.get(name)
    (xtr, ytr), (xte, yte) = data = spec.data()
    nn.manual_seed(seed)
    model = spec.model()
    optimizer = spec.optimizer(model.parameters())
    lr = optimizer.lr
    twin = torch_twin(name, model)
    shape_twin = copy.deepcopy(twin)  # the starting weights: the local steps' template and the spread's
    runners = {"torch": Runner(name, twin, lr),
               "perturbed": Runner(name, perturbed(twin, perturb, seed + 1), lr),
               "float64": Runner(name, copy.deepcopy(twin).double(), lr)}
    state = KgenState(model, optimizer)
    step_fn = train_step(model, losses.get(spec.loss), optimizer, xtr[:spec.batch_size], ytr[:spec.batch_size])

    rows, start, n = [], time.perf_counter(), 0
    header = (f"{'step':>4} {'ep':>2} {'rows':>4} {'loss kgen':>9} {'torch':>9} {'perturbed':>9} | "
              f"{'kgen-torch':>10} {'pert-torch':>10} {'f64-torch':>10} | {'local kgen':>10} {'local f32':>10}")
    print(header)
    for epoch in range(epochs):
        for xb, yb in nn.batches(xtr, ytr, spec.batch_size, seed=seed, epoch=epoch):
            local_loss64, local64 = state.local_step(name, shape_twin, lr, torch.float64, xb, yb)
            _, local32 = state.local_step(name, shape_twin, lr, torch.float32, xb, yb)
            kgen_loss = float(step_fn(xb, yb)[0])
            losses_ = {k: r.step(xb, yb) for k, r in runners.items()}
            kgen_w, ref = state.weights(), torch_params(twin)
            row = {"step": n, "epoch": epoch, "rows": len(xb), "loss_kgen": kgen_loss,
                   **{f"loss_{k}": v for k, v in losses_.items()},
                   "kgen_vs_torch": distance(kgen_w, ref),
                   "perturbed_vs_torch": distance(torch_params(runners["perturbed"].twin), ref),
                   "float64_vs_torch": distance(torch_params(runners["float64"].twin), ref),
                   "local_loss_kgen_vs_float64": abs(kgen_loss - local_loss64),
                   "local_kgen_vs_float64": distance(kgen_w, local64),
                   "local_float32_vs_float64": distance(local32, local64)}
            rows.append(row)
            if n % every == 0 or len(xb) != spec.batch_size:
                print(f"{n:>4} {epoch:>2} {len(xb):>4} {kgen_loss:>9.4f} {losses_['torch']:>9.4f} "
                      f"{losses_['perturbed']:>9.4f} | {row['kgen_vs_torch']:>10.2e} "
                      f"{row['perturbed_vs_torch']:>10.2e} "
                      f"{row['float64_vs_torch']:>10.2e} | {row['local_kgen_vs_float64']:>10.2e} "
                      f"{row['local_float32_vs_float64']:>10.2e}", flush=True)
            n += 1
    seconds = time.perf_counter() - start
    model.compile(optimizer, spec.loss, ["accuracy"])
    accuracy = {"kgen": float(model.evaluate(xte, yte, verbose=False)[1]),
                **{k: torch_accuracy(r.twin, xte, yte) for k, r in runners.items()}}
    return {"rows": rows, "accuracy": accuracy, "seconds": seconds, "lr": lr, "data": data, "initial": shape_twin,
            "model": model, "optimizer": optimizer, "step": step_fn}


def torch_spread(name, epochs, seed, perturb, count, data, initial, lr) -> list:
    """The test accuracies of `count` torch twins of `initial`, the i-th perturbed by draw
    1000 + i."""
    batch = nn.zoo.get(name).batch_size
    (xtr, ytr), (xte, yte) = data
    out = []
    for i in range(count):
        runner = Runner(name, perturbed(initial, perturb, 1000 + i), lr)
        for epoch in range(epochs):
            for xb, yb in nn.batches(xtr, ytr, batch, seed=seed, epoch=epoch):
                runner.step(xb, yb)
        out.append(torch_accuracy(runner.twin, xte, yte))
    return out


def kgen_spread(name, epochs, seed, perturb, count, data, initial, traced) -> list:
    """The test accuracies of kgen trained from the first `count` starts of torch_spread
    (the same perturbed weights), reusing the traced run's compiled step with the Adam
    state zeroed: paired with torch_spread's, start by start."""
    batch = nn.zoo.get(name).batch_size
    (xtr, ytr), (xte, yte) = data
    model, optimizer, step_fn = traced["model"], traced["optimizer"], traced["step"]
    out = []
    for i in range(count):
        model.load_state_dict(perturbed(initial, perturb, 1000 + i).state_dict())
        optimizer.step.set_value(np.float32(0.0))
        for m in optimizer.m + optimizer.v:
            m.set_value(np.zeros(m.shape, np.float32))
        for epoch in range(epochs):
            for xb, yb in nn.batches(xtr, ytr, batch, seed=seed, epoch=epoch):
                step_fn(xb, yb)
        out.append(float(model.evaluate(xte, yte, verbose=False)[1]))
        print(f"kgen from perturbed start {i}: accuracy {out[-1]:.4f}", flush=True)
    return out


def summary(accuracies: list) -> dict:
    if not accuracies:
        return {"accuracies": []}
    return {"accuracies": accuracies, "min": min(accuracies), "max": max(accuracies),
            "mean": statistics.mean(accuracies),
            "stdev": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["lstm", "gru", "mlp64", "cnn"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", type=float, default=1e-6, help="relative perturbation of the yardstick twins")
    parser.add_argument("--spread", type=int, default=20, help="perturbed torch twins trained for the accuracy spread")
    parser.add_argument("--kgen-spread", type=int, default=0,
                        help="kgen runs from the first of those perturbed starts (interpreted: minutes each)")
    parser.add_argument("--every", type=int, default=10, help="print every EVERY-th step")
    args = parser.parse_args(argv)

    traced = trace(args.model, args.epochs, args.seed, args.perturb, args.every)
    rows, accuracy = traced["rows"], traced["accuracy"]
    spread_args = (args.model, args.epochs, args.seed, args.perturb)
    torch_accuracies = torch_spread(*spread_args, args.spread, traced["data"], traced["initial"], traced["lr"])
    kgen_accuracies = kgen_spread(*spread_args, args.kgen_spread, traced["data"], traced["initial"], traced)

    worst = max(rows, key=lambda r: r["local_kgen_vs_float64"] / max(r["local_float32_vs_float64"], 1e-30))
    print(f"\nlargest local kgen / float32 ratio: step {worst['step']} (rows {worst['rows']}): "
          f"{worst['local_kgen_vs_float64']:.2e} against {worst['local_float32_vs_float64']:.2e}")
    print(f"{'accuracy':<10} {'kgen':>7} {'torch':>7} {'perturbed':>9} {'float64':>7}")
    print(f"{args.model:<10} {accuracy['kgen']:>7.4f} {accuracy['torch']:>7.4f} {accuracy['perturbed']:>9.4f} "
          f"{accuracy['float64']:>7.4f}")
    for who, accs in (("torch", torch_accuracies), ("kgen", kgen_accuracies)):
        if accs:
            print(f"{who} from {len(accs)} perturbed starts: {' '.join(f'{a:.3f}' for a in accs)}\n"
                  f"  min {min(accs):.4f} max {max(accs):.4f} mean {statistics.mean(accs):.4f}")
    write_result(f"mnist-divergence-{args.model}", {
        "device": device_name(), "kgen": kgen.__version__, "model": args.model, "epochs": args.epochs,
        "seed": args.seed, "perturb": args.perturb, "steps": len(rows), "seconds": traced["seconds"],
        "accuracy": accuracy, "torch_spread": summary(torch_accuracies), "kgen_spread": summary(kgen_accuracies),
        "distance": "max over tensors of max|a - b| / max|b|",
        "kgen_runtime": "Triton interpreter (CPU)" if not torch.cuda.is_available() else "CUDA",
        "rows": rows,
    }, indent=1)


if __name__ == "__main__":
    main()
