"""The torch frontend on the torch zoo (tests/frontends/torch_zoo.py): per model, kgen's
launches and bytes per training step (from_torch + nn.train_step, SGD with momentum) beside
Inductor's kernel count for the same step on this machine (torch.compile default mode,
forward + backward + optimizer), and the time from_torch takes to capture and translate.
Prints a table and writes benchmarks/results/DATE-DEVICE-frontend_stats.json.

    python benchmarks/frontend_stats.py [--batch 64] [--models cnn,gru] [--no-inductor]

Inductor's count is `torch._inductor.metrics.generated_kernel_count` after compiling and
running one step: the kernels Inductor generated for this machine (C++ kernels without a
GPU, Triton with one); its calls into vendor libraries (matmul, convolution) are launches
too but not generated kernels, so on a CPU the count understates its launches.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "frontends"))  # the torch zoo the tests use

import kgen  # noqa: E402
from kgen import nn  # noqa: E402
from kgen.lowering.stats import program_stats  # noqa: E402
from results_io import device_name, write_result  # noqa: E402
from torch_zoo import CASES, build, torch_loss  # noqa: E402

KGEN_LOSS = {"cross_entropy": nn.CrossEntropyLoss, "nll": nn.NLLLoss, "mse": nn.MSELoss, "bce": nn.BCELoss}
LR, MOMENTUM = 0.01, 0.9


def kgen_row(name: str, batch: int) -> dict:
    case = CASES[name]
    module, x, y = build(name, batch)
    start = time.perf_counter()
    model = kgen.from_torch(module, x)
    captured = time.perf_counter() - start
    step = nn.train_step(model, KGEN_LOSS[case.loss](), nn.SGD(model.parameters(), LR, momentum=MOMENTUM),
                         x.numpy(), y.numpy())
    stats = program_stats(step.program, {"N": batch})
    return {"launches": stats["launches"], "bytes": stats["bytes"], "capture_translate_s": round(captured, 3),
            "graph_nodes": len(step.program.graph.nodes)}


def inductor_kernels(name: str, batch: int) -> int:
    """Kernels Inductor generates for one training step (forward, backward, SGD step)."""
    from torch._inductor import metrics
    case = CASES[name]
    module, x, y = build(name, batch)
    opt = torch.optim.SGD(module.parameters(), LR, momentum=MOMENTUM)
    torch._dynamo.reset()
    metrics.reset()
    compiled = torch.compile(module)

    @torch.compile
    def update():
        opt.step()

    opt.zero_grad()
    torch_loss(case, compiled(x), y).backward()
    update()
    return metrics.generated_kernel_count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--models", default=",".join(CASES), help="comma-separated torch zoo names")
    parser.add_argument("--no-inductor", action="store_true", help="skip Inductor (its compiles take minutes)")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        row = {"model": name, "batch": args.batch, **kgen_row(name, args.batch)}
        row["inductor_kernels"] = None if args.no_inductor else inductor_kernels(name, args.batch)
        rows.append(row)
        print(f"  {name}: done", file=sys.stderr, flush=True)
    print(f"{'model':<20} {'kgen launches':>13} {'Inductor kernels':>16} {'ratio':>6} {'kgen MB':>8} "
          f"{'capture+translate s':>19}")
    for r in rows:
        ratio = f"{r['launches'] / r['inductor_kernels']:.2f}" if r["inductor_kernels"] else "-"
        print(f"{r['model']:<20} {r['launches']:>13} {r['inductor_kernels'] or '-':>16} {ratio:>6} "
              f"{r['bytes'] / 1e6:>8.3f} {r['capture_translate_s']:>19.2f}")
    result = {"benchmark": "frontend_stats", "device": device_name(), "torch": torch.__version__,
              "command": "python benchmarks/frontend_stats.py " + " ".join(argv or sys.argv[1:]), "rows": rows}
    write_result("frontend_stats", result)


if __name__ == "__main__":
    main()
