"""The `kgen` command.

    kgen train MODEL [--epochs E] [--batch B]    train a zoo model, loss and accuracy per epoch
    kgen check MODEL [--batch B]                 every kernel of its training step vs the reference
    kgen stats MODEL [--train] [--batch B] [--json]
                                                 launches, bytes and flops per step, fused and unfused
    kgen models                                  the zoo
    kgen tune MODEL --target sm_80,sm_90 --batch 64,512 [--tier quick|thorough] [--explain] [--cache DIR]
                                                 tune every kernel of its training step into the cache
    kgen compile MODEL --target sm_80,sm_90 --out DIR [--batch B ...] [--eval] [--archive]
                                                 an artifact of its training (or evaluation) step
    kgen run DIR [--inputs FILE.npz] [--seed S] [--batch B] [--steps K]
                                                 load an artifact and run it
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
              "unfused": unfused, "buffers": step.program.buffers.describe(sizes)}
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
    b = result["buffers"]
    print(f"buffer plan: {len(step.program.buffers.slot_of)} intermediates in {b['slots']} slots "
          f"({b['slot_bytes']:,} B, {b['unshared_bytes']:,} B without reuse); "
          f"{b['inplace']} of {len(step.updates)} updates written in place")
    return 0


def cmd_models(args):
    from kgen import nn
    for name in nn.zoo.names():
        print(f"{name:<14} {nn.zoo.get(name).description}")
    return 0


def cmd_compile(args):
    from kgen.artifact.commands import compile_model

    def build():
        spec, model = _spec_and_model(args.model, args.seed)
        x, y = _example_batch(spec, max(args.batch))
        return _step(spec, model, x, y, train=not args.eval)
    return compile_model(args, build)


def cmd_run(args):
    from kgen.artifact.commands import run_artifact
    return run_artifact(args)


def cmd_tune(args):
    import warnings

    from kgen.autotune import cache as tune_cache, costmodel, tuner
    from kgen.ir import shapes
    targets, batches = _csv(args.target, str, "--target"), _csv(args.batch, int, "--batch")
    for target in targets:
        costmodel.gpu(target)  # an unknown target fails before any work
    spec, model = _spec_and_model(args.model, args.seed)
    (x, y), _ = spec.data()
    step = _step(spec, model, x[:batches[0]], y[:batches[0]], train=True)
    program, cache = step.program, tune_cache.TuneCache(args.cache)
    symbols = {s for node in program.graph.inputs for s in shapes.symbols_of(node.shape)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", tune_cache.TuneCacheWarning)
        for batch in batches:
            sizes = dict.fromkeys(symbols, batch)
            inputs = {n.name: v for n, v in zip(step.inputs, (x[:batch], y[:batch]))}
            inputs.update({s.name: s.get_value() for s in step.shared})
            if args.explain:
                for target in targets:
                    for kernel in program.kernels:
                        print(f"batch {batch}: {cache.explain(kernel, sizes, target)}")
            results = tuner.tune_program(program, sizes, targets, args.tier, cache, inputs, args.workers,
                                         args.force, lambda message: print(f"  {message}", file=sys.stderr,
                                                                           flush=True))
            print(tuner.format_results(results, f"{args.model} training step, batch {batch},"))
    for w in caught:
        print(f"kgen: warning: {w.message}", file=sys.stderr)
    print(f"cache: {cache.entries_dir}")
    return 0


def _csv(text: str, kind, option: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise KgenError(f"{option}: expected a comma-separated list, got {text!r}")
    return values


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
    p = sub.add_parser("compile", help="compile a zoo model's step to an artifact (no GPU needed)")
    p.add_argument("model")
    p.add_argument("--target", default="sm_80,sm_90", help="comma-separated GPU targets")
    p.add_argument("--out", required=True, help="the artifact directory to write")
    p.add_argument("--archive", action="store_true", help="also write it as one file, DIR.tar (kgen.load reads either)")
    p.add_argument("--batch", type=int, nargs="+", default=[64], help="batch sizes (shape buckets)")
    p.add_argument("--eval", action="store_true", help="the evaluation step (default: training)")
    p.add_argument("--train", dest="eval", action="store_false", help="the training step (the default)")
    p.add_argument("--workers", type=int, help="compile processes (default: one per CPU core)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_compile)
    p = sub.add_parser("run", help="load an artifact and run it")
    p.add_argument("dir")
    p.add_argument("--inputs", help="an .npz of the inputs (default: random, of the recorded shapes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, help="the batch size N of random inputs")
    p.add_argument("--steps", type=int, default=1, help="calls (a training step updates its state each time)")
    p.set_defaults(run=cmd_run)
    p = sub.add_parser("tune", help="tune every kernel of a zoo model's training step into the autotune cache")
    p.add_argument("model")
    p.add_argument("--target", default="sm_80,sm_90", help="comma-separated GPU targets")
    p.add_argument("--batch", default="64", help="comma-separated batch sizes")
    p.add_argument("--tier", choices=("quick", "thorough"), default="quick")
    p.add_argument("--explain", action="store_true", help="say for each kernel why the cache hits or misses")
    p.add_argument("--cache", help="the cache directory (default: $KGEN_CACHE_DIR/tune)")
    p.add_argument("--force", action="store_true", help="tune again what the cache has")
    p.add_argument("--workers", type=int, help="compile processes (default: one per CPU core)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_tune)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KgenError as e:
        print(f"kgen: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
