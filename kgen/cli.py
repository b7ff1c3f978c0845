"""The `kgen` command.

    kgen train MODEL [--epochs E] [--batch B]    train a zoo model, loss and accuracy per epoch
    kgen check MODEL [--batch B]                 every kernel of its training step vs the reference
    kgen stats MODEL [--train] [--batch B] [--json]
                                                 launches, bytes and flops per step, fused and unfused
    kgen models                                  the zoo
"""
from __future__ import annotations

import argparse
import json
import sys

from kgen.errors import KgenError


def _spec_and_model(name, seed=0):
    from kgen import nn
    spec = nn.zoo.get(name)
    nn.manual_seed(seed)
    return spec, spec.model()


def _example_batch(spec, batch):
    (x, y), _ = spec.data()
    return x[:batch], y[:batch]


def _step(spec, model, x, y, train: bool):
    from kgen import nn
    loss = nn.losses.get(spec.loss)
    if train:
        return nn.train_step(model, loss, spec.optimizer(model.parameters()), x, y)
    return nn.eval_step(model, loss, x, y)


def cmd_train(args):
    spec, model = _spec_and_model(args.model, args.seed)
    (xtr, ytr), (xte, yte) = spec.data()
    print(f"{spec.name}: {spec.description}")
    model.compile(spec.optimizer(model.parameters()), spec.loss,
                  ["accuracy"] if spec.name not in ("linreg",) else [])
    model.fit(xtr, ytr, epochs=args.epochs or spec.epochs, batch_size=args.batch or spec.batch_size,
              seed=args.seed, validation_data=(xte, yte))
    return 0


def cmd_check(args):
    import kgen
    spec, model = _spec_and_model(args.model)
    x, y = _example_batch(spec, args.batch)
    report = kgen.check(_step(spec, model, x, y, train=True), [x, y])
    print(report)
    return 0 if report.ok else 1


def cmd_stats(args):
    from kgen.lowering.stats import program_stats, unfused_stats
    spec, model = _spec_and_model(args.model)
    x, y = _example_batch(spec, args.batch)
    step = _step(spec, model, x, y, train=args.train)
    sizes = {"N": args.batch}
    fused = program_stats(step.program, sizes)
    unfused = unfused_stats(step.program.graph, sizes)
    result = {"model": args.model, "batch": args.batch, "train": args.train, "launches": fused["launches"],
              "bytes": fused["bytes"], "flops": fused["flops"], "kernels": fused["kernels"],
              "unfused": unfused}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.model} {'training' if args.train else 'evaluation'} step at batch {args.batch}")
    print(f"{'kernel':<26} {'kind':<10} {'read B':>12} {'written B':>12} {'flops':>14}")
    for k in fused["kernels"]:
        print(f"{k['name']:<26} {k['kind']:<10} {k['bytes_read']:>12,} {k['bytes_written']:>12,} {k['flops']:>14,}")
    print(f"{'':<26} {'':<10} {'launches':>12} {'bytes':>12} {'flops':>14}")
    print(f"{'fused (kgen)':<37} {fused['launches']:>12} {fused['bytes']:>12,} {fused['flops']:>14,}")
    print(f"{'unfused (one kernel per op)':<37} {unfused['launches']:>12} {unfused['bytes']:>12,} "
          f"{unfused['flops']:>14,}")
    return 0


def cmd_models(args):
    from kgen import nn
    for name in nn.zoo.names():
        print(f"{name:<14} {nn.zoo.get(name).description}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kgen", description="kgen: fused Triton kernels from a tensor IR")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a zoo model")
    p.add_argument("model")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_train)
    p = sub.add_parser("check", help="check a zoo model's training step against the reference")
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=8)
    p.set_defaults(run=cmd_check)
    p = sub.add_parser("stats", help="launches, bytes and flops per step, fused and unfused")
    p.add_argument("model")
    p.add_argument("--train", action="store_true", help="the training step (default: evaluation)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_stats)
    p = sub.add_parser("models", help="list the zoo")
    p.set_defaults(run=cmd_models)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KgenError as e:
        print(f"kgen: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
