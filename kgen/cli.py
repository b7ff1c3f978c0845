"""The `kgen` command.

    kgen models                                  the zoo
    kgen train MODEL [--epochs E] [--batch B] [--plot FILE.png|FILE.svg] [--nproc K [--shard-optimizer]]
                                                 train a zoo model: loss and accuracy per epoch, a final line
    kgen check MODEL [--batch B]                 every kernel of its training step vs the reference
    kgen stats MODEL [--train] [--batch B] [--json] [--why] [--world-size K [--zero]]
                                                 launches, bytes and flops per step, fused and unfused
    kgen tune MODEL [--target sm_80,sm_90] [--batch 64,512] [--tier quick|thorough] [--explain] [--cache DIR]
              [--jobs K] [--devices 0,1]         tune every kernel of its training step into the cache
    kgen compile MODEL --out DIR [--target sm_80,sm_90] [--batch 64,512] [--eval] [--archive] [--force]
                                                 an artifact of its training (or evaluation) step
    kgen run DIR [--inputs FILE.npz | --batch B] [--seed S] [--steps K] [--save FILE.npz]
                                                 load an artifact, run it, save its state
    kgen report TARGET --out FILE.html [--train] [--batch B] [--target sm_80,sm_90] [--history run.json] [--check]
                                                 one HTML page of what kgen did to a model (or an artifact)

A list is comma-separated (`--batch 64,512`), and a list option may be repeated
(`--batch 64 --batch 512`). Bad options are refused before any work, in one line naming
the option, what was expected and what was given.

Until a command runs, this module imports only the standard library and kgen.errors (and
`import kgen` imports nothing more), so `kgen --help` answers without torch and triton.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import kgen
from kgen.errors import KgenError

# The zoo's names, for help text that must not import the zoo (and with it torch);
# tests/test_cli.py keeps this equal to kgen.nn.zoo.names().
ZOO = ("cifar-cnn", "cnn", "gru", "linreg", "logreg", "lstm", "mlp128", "mlp32-dropout", "mlp64")
DEFAULT_TARGETS = ["sm_80", "sm_90"]


# --- what the commands do ----------------------------------------------------------------------
def _spec(name):
    """The zoo's record for a zoo name, or a zoo-like one for a .pt2 or .onnx file
    (kgen/frontends/model_file.py)."""
    # at run time: kgen --help imports neither torch nor triton
    from kgen import nn
    from kgen.frontends import model_file
    return model_file.spec(name) if model_file.is_model_file(name) else nn.zoo.get(name)


def _spec_and_model(name, seed=0):
    # at run time: kgen --help imports neither torch nor triton
    from kgen import nn
    spec = _spec(name)
    nn.manual_seed(seed)
    return spec, spec.model()  # a model file's weights are its own: the seed does not change them


def _example_batch(spec, batch):
    # at run time: kgen --help imports neither torch nor triton
    from kgen import nn
    return nn.zoo.example_batch(spec, batch)


def _step(spec, model, x, y, train: bool):
    # at run time: kgen --help imports neither torch nor triton
    from kgen import nn
    loss = nn.losses.get(spec.loss)
    if train:
        return nn.train_step(model, loss, spec.optimizer(model.parameters()), x, y)
    return nn.eval_step(model, loss, x, y)


STEP_OUTPUTS = ["loss"]  # what _step's function returns, in order (nn.train_step / eval_step, no metrics)


def _state_names(model, step) -> dict:
    """The step's state (shared variables) by the model's names, where it has them: a
    parameter's state_dict name (`0.weight`), that name for the optimizer state kept per
    parameter (`0.weight_m`, named after its parameter by kgen.nn.optim), and
    `optimizer.lr` (`.momentum`, `.step`, ...) for the optimizer's own device scalars."""
    # at run time: kgen --help imports neither torch nor triton
    from kgen.nn import optim
    of_parameter = {p.name: name for name, p in model.named_parameters()}
    names = {}
    for var in step.shared:
        owner = next((p for p in of_parameter if var.name == p or var.name.startswith(p + "_")), None)
        setting = optim.setting_of(var.name)
        if owner is not None:
            names[var.name] = of_parameter[owner] + var.name[len(owner):]
        elif setting:
            names[var.name] = f"optimizer.{setting}"
    return names


def cmd_train(args):
    if args.model.endswith((".pt2", ".onnx")):
        raise KgenError(f"kgen train: {args.model} holds a model but no data; train it from Python "
                        f"(kgen.from_torch or kgen.from_onnx, then fit), or check, measure or compile it here")
    if args.resume and not args.checkpoint:
        raise KgenError("kgen train: --resume continues from --checkpoint DIR's last.safetensors; give --checkpoint")
    if args.shard_optimizer and not args.nproc:
        raise KgenError("kgen train: --shard-optimizer shards the optimizer over the processes of --nproc K; give --nproc")
    if args.nproc:
        # at run time: kgen --help imports neither torch nor triton
        from kgen.nn import distributed
        distributed.launch(args.nproc, _train_worker, args)
        return 0
    return _train(args)


def _train_worker(args):
    """One of `kgen train --nproc K`'s processes: the same training, data-parallel; only
    rank 0 prints, plots and writes the checkpoint."""
    # at run time: kgen --help imports neither torch nor triton
    from kgen.nn import distributed
    distributed.init_from_env()
    try:
        with distributed.quiet_unless_main():
            _train(args)
    finally:
        distributed.leave()


def _train(args):
    # at run time: kgen --help imports neither torch nor triton
    from kgen import nn
    from kgen.nn import distributed
    spec, model = _spec_and_model(args.model, args.seed)
    (xtr, ytr), (xte, yte) = spec.data()
    epochs = args.epochs or spec.epochs
    print(f"{spec.name}: {spec.description}")
    model.compile(spec.optimizer(model.parameters()), spec.loss,
                  ["accuracy"] if spec.name not in ("linreg",) else [], shard_optimizer=args.shard_optimizer)
    callbacks, first = [], 0
    if args.checkpoint:
        last = os.path.join(args.checkpoint, "last.safetensors")
        if args.resume:
            if not os.path.isfile(last):
                raise KgenError(f"kgen train --resume: no checkpoint {last} to resume from")
            first = int(nn.load(last, model, model.optimizer).get("epoch", 0))
            print(f"resumed from {last} after epoch {first}")
        callbacks.append(nn.ModelCheckpoint(last, save_weights_only=False))
    start = time.perf_counter()
    history = model.fit(xtr, ytr, epochs=epochs, batch_size=args.batch or spec.batch_size, seed=args.seed,
                        validation_data=(xte, yte), callbacks=callbacks, initial_epoch=first)
    if not any(history.values()):
        print(f"nothing to train: the checkpoint is at epoch {first} and --epochs is {epochs}")
        return 0
    final = "  ".join(f"{name} {values[-1]:.4f}" for name, values in history.items())
    ran = epochs - first
    print(f"final: {final}  ({ran} epoch{'s' if ran > 1 else ''}, {time.perf_counter() - start:.1f} s)")
    if args.plot and distributed.is_main():
        print(f"curves: {nn.plot_history(history, args.plot)}")
    return 0


def cmd_check(args):
    spec, model = _spec_and_model(args.model)
    x, y = _example_batch(spec, args.batch)
    report = kgen.check(_step(spec, model, x, y, train=True), [x, y])
    print(report)
    return 0 if report.ok else 1


def cmd_stats(args):
    import json

    # at run time: kgen --help imports neither torch nor triton
    from kgen.lowering.explain import explain, format_explanation, loop_decisions
    from kgen.lowering.stats import program_stats, unfused_stats
    if args.world_size is not None and not args.train:
        raise KgenError(f"--world-size {args.world_size}: data-parallel figures are of the training step; "
                        f"expected --train with it")
    if args.zero and args.world_size is None:
        raise KgenError("--zero: ZeRO-1's figures are of a data-parallel step; expected --world-size K with it")
    spec, model = _spec_and_model(args.model)
    x, y = _example_batch(spec, args.batch)
    step = _step(spec, model, x, y, train=args.train)
    sizes = {"N": args.batch}
    fused = program_stats(step.program, sizes)
    unfused = unfused_stats(step.program.graph, sizes)
    result = {"model": args.model, "batch": args.batch, "train": args.train, "launches": fused["launches"],
              "bytes": fused["bytes"], "flops": fused["flops"], "kernels": fused["kernels"],
              "unfused": unfused, "buffers": step.program.buffers.describe(sizes)}
    if args.why:
        names = [(k.name, [part.name for part in k.parts]) for k in step.program.kernels]
        result["why"] = explain(step.program.plan, names)
        result["loops"] = loop_decisions(step.program.plan)
    if args.world_size is not None:
        # kgen.nn at call time: `kgen --help` and the other commands start without it
        from kgen.nn import losses, parallel_stats
        loss = losses.get(spec.loss)
        result["data_parallel"] = parallel_stats.figures(model, loss, spec.optimizer, x, y, args.world_size,
                                                         fused["launches"], sizes,
                                                         (False, True) if args.zero else (False,))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.model} {'training' if args.train else 'evaluation'} step at batch {args.batch}")
    if args.why:
        print(format_explanation(result["why"], result["loops"]))
        print()
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
    if args.world_size is not None:
        _print_data_parallel(result["data_parallel"], fused["launches"])
    return 0


def _print_data_parallel(rows: list, launches: int) -> None:
    """The data-parallel figures per rank per step, beside the one-process step's."""
    first = rows[0]
    how = (f"in {first['buckets']} bucket(s) of up to {first['bucket_bytes'] >> 20} MiB, filled as the backward "
           f"finishes them; ring collectives" if first["world_size"] > 1 else "one rank: nothing to exchange")
    print(f"data parallel, world size {first['world_size']}, per rank per step ({first['gradient_bytes']:,} B of "
          f"gradients {how}):")
    print(f"{'':<37} {'launches':>12} {'collectives':>12} {'bytes sent':>12}")
    print(f"{'one process (updates fused)':<37} {launches:>12} {0:>12} {0:>12}")
    for row in rows:
        name = "ZeRO-1 (reduce-scatter, all-gather)" if row["zero"] else "all-reduce (DDP)"
        split = (f"{row['gradient_launches']} + {row['update_launches']}" if row["update_launches"]
                 else str(row["launches"]))
        print(f"{name:<37} {split:>12} {row['collectives']:>12} {row['bytes_sent']:>12,}")


def cmd_models(args):
    # at run time: kgen --help imports neither torch nor triton
    from kgen import nn
    for name in nn.zoo.names():
        print(f"{name:<14} {nn.zoo.get(name).description}")
    return 0


def cmd_compile(args):
    # at run time: kgen --help imports neither torch nor triton
    from kgen.artifact.commands import check_destination, compile_model

    _check_targets(args.target)
    check_destination(args.out, args.force, args.archive)
    _spec(args.model)  # an unknown model fails before the compile workers start

    def build():
        spec, model = _spec_and_model(args.model, args.seed)
        x, y = _example_batch(spec, max(args.batch))
        step = _step(spec, model, x, y, train=not args.eval)
        return step, STEP_OUTPUTS, _state_names(model, step)
    return compile_model(args, build)


def cmd_run(args):
    # at run time: kgen --help imports neither torch nor triton
    from kgen.artifact.commands import run_artifact
    if args.inputs and args.batch:
        raise KgenError(f"--batch: sizes random inputs, but --inputs {args.inputs} gives the inputs (and their "
                        f"batch size); expected one of the two, got both")
    return run_artifact(args)


def cmd_report(args):
    # at run time: kgen --help imports neither torch nor triton
    from kgen.report import report
    _check_targets(args.target)
    if Path(args.model).is_dir():
        path = report(args.model, args.out, history=args.history, title=f"artifact {args.model}")
    else:
        spec, model = _spec_and_model(args.model, args.seed)
        x, y = _example_batch(spec, args.batch)
        start = time.perf_counter()
        step = _step(spec, model, x, y, train=args.train)
        seconds = time.perf_counter() - start
        title = f"{args.model} {'training' if args.train else 'evaluation'} step, batch {args.batch}"
        path = report(step, args.out, sizes={"N": args.batch}, targets=args.target,
                      check=[x, y] if args.check else None, history=args.history, title=title,
                      compile_seconds=seconds, state_names=_state_names(model, step))
    print(f"report: {path}")
    return 0


def cmd_tune(args):
    import warnings

    # at run time: kgen --help imports neither torch nor triton
    from kgen.autotune import cache as tune_cache, tuner, workers
    from kgen.autotune.progress import Progress
    from kgen.ir import shapes
    targets, batches = args.target, args.batch
    _check_targets(targets, tuning=True)
    _check_directory_option("--cache", args.cache)
    devices = workers.device_names(args.devices) if args.devices else None
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
            progress = Progress()
            try:
                results = tuner.tune_program(program, sizes, targets, args.tier, cache, inputs, args.workers,
                                             args.force, progress, devices=devices)
            finally:
                progress.close()
            print(tuner.format_results(results, f"{args.model} training step, batch {batch},"))
    for w in caught:
        print(f"kgen: warning: {w.message}", file=sys.stderr)
    print(f"cache: {cache.entries_dir}")
    return 0


# --- checks that need kgen (run by a command, before its work) ----------------------------------
def _check_targets(targets: list, tuning: bool = False) -> None:
    """Every target is one kgen compiles for (kgen.kernels.aot.TARGETS) and, to tune, one
    the cost model has facts for (kgen.autotune.costmodel.GPUS)."""
    # at run time: kgen --help imports neither torch nor triton
    from kgen.kernels.aot import TARGETS
    known = ", ".join(TARGETS)
    if tuning:
        # at run time: kgen --help imports neither torch nor triton
        from kgen.autotune.costmodel import GPUS
        for target in targets:
            if target not in GPUS:
                why = (f"{target} is a compile target, where `kgen compile` uses default configs" if target in TARGETS
                       else f"{target!r} is no target kgen knows: it compiles for {known}")
                raise KgenError(f"--target: cannot tune for {target!r}: expected one of {', '.join(GPUS)} (the GPUs "
                                f"the cost model has facts for); {why}")
    for target in targets:
        if target not in TARGETS:
            raise KgenError(f"--target: unknown target {target!r}: expected one of {known}")


def _check_directory_option(option: str, path) -> None:
    """`path` (if given) is a directory, or can become one: no file on the way to it."""
    if path is None:
        return
    for place in [Path(path), *Path(path).absolute().parents]:
        if place.exists():
            if not place.is_dir():
                where = "a file" if place == Path(path) else f"under the file {place}"
                raise KgenError(f"{option}: expected a directory, got {path}, {where}")
            return


# --- arguments -----------------------------------------------------------------------------------
def _integer(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def seed(text: str) -> int:
    return _integer(text, 0, "a non-negative integer")


def batch_list(text: str) -> list:
    try:
        return [positive_int(item.strip()) for item in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r} (batch sizes are "
                                         f"positive integers, as in 64,512)") from None


def plot_file(text: str) -> str:
    """A path whose suffix names a format plot_history draws (kgen.nn.plots.FORMATS)."""
    if Path(text).suffix.lower() not in (".png", ".svg"):
        raise argparse.ArgumentTypeError(f"expected a .png or .svg path (the suffix chooses the format), got {text!r}")
    return text


def target_list(text: str) -> list:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r} (GPU targets, as in "
                                         f"sm_80,sm_90)")
    return items


class ListOption(argparse.Action):
    """A list option: each use gives a comma-separated list (parsed by its `type`), and
    repeated uses add up; the default is replaced by the first use, not added to."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest)
        before = [] if before is self.default else before
        setattr(namespace, self.dest, list(dict.fromkeys([*before, *values])))


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (`kgen train: error: argument --epochs: ...`), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _zoo_model(p) -> None:
    p.add_argument("model", metavar="MODEL", help=f"a zoo model: {', '.join(ZOO)} (`kgen models` describes them); "
                                                  f"check, stats and compile also take a .pt2 or .onnx file")


def _batch(p, default) -> None:
    p.add_argument("--batch", type=positive_int, default=default, metavar="B", help=f"the batch size (default: {default})")


def _targets(p, what: str) -> None:
    p.add_argument("--target", type=target_list, action=ListOption, default=DEFAULT_TARGETS, metavar="T,T",
                   help=f"GPU targets, comma-separated: {what} (default: {','.join(DEFAULT_TARGETS)})")


def _batches(p, what: str) -> None:
    p.add_argument("--batch", type=batch_list, action=ListOption, default=[64], metavar="B,B",
                   help=f"batch sizes, comma-separated: {what} (default: 64)")


def _workers(p) -> None:
    p.add_argument("--jobs", "--workers", dest="workers", type=positive_int, metavar="K",
                   help="compile processes (default: one per CPU core; --workers is the old name)")


def device_list(text: str) -> list:
    try:
        return list(dict.fromkeys(seed(item.strip()) for item in text.split(",")))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r} (CUDA device indices, "
                                         f"as in 0,1)") from None


def _seed(p, what="the model's initial weights") -> None:
    p.add_argument("--seed", type=seed, default=0, metavar="S", help=f"random seed of {what} (default: 0)")


def _command(sub, name, run, summary, description, examples):
    p = sub.add_parser(name, help=summary, description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="examples:\n" + "\n".join(f"  {line}" for line in examples))
    p.set_defaults(run=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kgen", formatter_class=argparse.RawDescriptionHelpFormatter,
                    description="kgen: fused Triton kernels from a tensor IR, compiled ahead of time.",
                    epilog=f"""examples:
  kgen models                                           the zoo
  kgen train mlp128 --epochs 3                          train on kgen's kernels
  kgen check linreg --batch 8                           every kernel vs the NumPy reference
  kgen stats mlp128 --train --json                      launches, bytes and flops per step
  kgen tune mlp128 --target sm_80,sm_90 --batch 64,512  fill the autotune cache
  kgen compile mlp128 --out mlp128.kgen --batch 64,512  an artifact (no GPU needed)
  kgen run mlp128.kgen --steps 3 --save state.npz       run it, keep the trained state
  kgen report cnn --train --out cnn.html                one HTML page: IR, kernels, rooflines

MODEL is a zoo name ({', '.join(ZOO)}) or, for check, stats and compile, a .pt2 file
written by torch.export.save or an .onnx file (a classifier's [N, C] output trains with cross-entropy, any other
output with mean squared error; the data is random).
Lists are comma-separated (--batch 64,512); a list option may also be repeated.
`kgen COMMAND --help` shows a command's options and their defaults.""")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "train", cmd_train, "train a zoo model",
                 "Train a zoo model on its data with kgen's kernels: loss and accuracy per epoch (with the\n"
                 "test set's), then a final line.",
                 ["kgen train linreg", "kgen train mlp128 --epochs 3 --batch 128",
                  "kgen train logreg --epochs 5 --plot curves.png",
                  "kgen train mlp64 --epochs 4 --checkpoint runs/mlp64 --resume",
                  "kgen train mlp128 --nproc 2 --batch 32"])
    _zoo_model(p)
    p.add_argument("--epochs", type=positive_int, metavar="E", help="epochs (default: the zoo model's own)")
    p.add_argument("--batch", type=positive_int, metavar="B", help="the batch size (default: the zoo model's own)")
    p.add_argument("--plot", type=plot_file, metavar="FILE", help="draw the loss and metric curves (train and test "
                                                                 "set) to FILE, .png or .svg")
    p.add_argument("--checkpoint", metavar="DIR", help="save the weights and optimizer state to DIR/last.safetensors "
                                                       "after each epoch")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.safetensors (with --checkpoint): "
                                                         "the same run as one that never stopped")
    _seed(p, "the initial weights and the batch order")
    p.add_argument("--nproc", type=positive_int, metavar="K",
                   help="train data-parallel in K local processes (torch.distributed through torchrun's launcher: "
                        "gloo without a GPU, NCCL with GPUs); --batch is each process's, so K processes at B "
                        "train as one at K*B")
    p.add_argument("--shard-optimizer", action="store_true",
                   help="with --nproc: each process updates its shard of the parameters and optimizer state "
                        "(ZeRO stage 1)")

    p = _command(sub, "check", cmd_check, "check a zoo model's training step against the reference",
                 "Run every kernel of a zoo model's training step beside the NumPy reference interpreter\n"
                 "and report each kernel's worst error against its dtype's tolerance (exit status 1 if any\n"
                 "kernel is outside it).",
                 ["kgen check linreg", "kgen check cnn --batch 2"])
    _zoo_model(p)
    _batch(p, 8)

    p = _command(sub, "stats", cmd_stats, "launches, bytes and flops per step, fused and unfused",
                 "Launches, bytes and flops of a zoo model's step, fused by kgen and with one kernel per op,\n"
                 "and its buffer plan. --why says, per kernel, which fusion rule writes each value it writes,\n"
                 "which put the rest in it, and which merges a rule refused and why.",
                 ["kgen stats mlp128", "kgen stats cnn --train --batch 64 --json", "kgen stats cnn --train --why",
                  "kgen stats mlp128 --train --world-size 4 --zero"])
    _zoo_model(p)
    p.add_argument("--train", action="store_true", help="the training step (default: the evaluation step)")
    _batch(p, 64)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--why", action="store_true", help="the fusion decisions per kernel: rule and reason "
                   "(R1-R6, E1-E5, L1, B3; see DESIGN.md)")
    p.add_argument("--world-size", type=positive_int, metavar="K", help="with --train: also the data-parallel step "
                   "on K ranks, per rank: bytes sent, collectives and launches (kgen/nn/parallel_stats.py)")
    p.add_argument("--zero", action="store_true", help="with --world-size: also ZeRO-1 (optimizer state sharded: "
                   "reduce-scatter, then all-gather)")

    p = _command(sub, "models", cmd_models, "list the zoo", "The zoo's models, with what each one is.",
                 ["kgen models"])

    p = _command(sub, "tune", cmd_tune, "tune every kernel of a zoo model's training step into the autotune cache",
                 "Tune every kernel of a zoo model's training step for each target and batch size, and keep\n"
                 "the results in the autotune cache (`kgen compile` reads them). With no GPU, the offline\n"
                 "cost model ranks the candidates, compiled by --jobs K processes; with --devices 0,1,...\n"
                 "a worker per listed GPU times its share of them. Any number of tunings may write one cache.",
                 ["kgen tune mlp128", "kgen tune mlp128 --target sm_90 --batch 64,512 --explain",
                  "kgen tune cnn --tier thorough --cache /tmp/kgen-tune --jobs 2",
                  "kgen tune cnn --target sm_90 --devices 0,1,2,3"])
    _zoo_model(p)
    _targets(p, "those the cost model has facts for")
    _batches(p, "one tuning per size")
    p.add_argument("--tier", choices=("quick", "thorough"), default="quick",
                   help="how many configs to try (default: quick)")
    p.add_argument("--explain", action="store_true", help="say for each kernel why the cache hits or misses")
    p.add_argument("--cache", metavar="DIR", help="the cache directory (default: $KGEN_CACHE_DIR/tune)")
    p.add_argument("--force", action="store_true", help="tune again what the cache has")
    _workers(p)
    p.add_argument("--devices", type=device_list, action=ListOption, default=None, metavar="D,D",
                   help="CUDA devices to time candidates on, a worker per device, all at once (default: the "
                        "current GPU, if any; without one the cost model ranks)")
    _seed(p)

    p = _command(sub, "compile", cmd_compile, "compile a zoo model's step to an artifact (no GPU needed)",
                 "Compile a zoo model's training (or evaluation) step ahead of time for GPU targets and write\n"
                 "it as an artifact directory, which `kgen run` and kgen.load() run with no tracing, lowering\n"
                 "or tuning. An existing artifact is replaced only with --force, and atomically: the new one\n"
                 "is written under another name and renamed into place.",
                 ["kgen compile mlp128 --out mlp128.kgen",
                  "kgen compile cnn --out cnn.kgen --target sm_90 --batch 64,512 --archive",
                  "kgen compile mlp128 --out mlp128.kgen --eval --force"])
    _zoo_model(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the artifact directory to write")
    _targets(p, "a binary per kernel for each")
    _batches(p, "the shape buckets; a call takes the smallest that covers its batch")
    p.add_argument("--eval", action="store_true", help="the evaluation step (default: training)")
    p.add_argument("--train", dest="eval", action="store_false", help="the training step (the default)")
    p.add_argument("--archive", action="store_true", help="also write it as one file, DIR.tar (kgen.load reads either)")
    p.add_argument("--force", action="store_true", help="replace an artifact already at DIR (and DIR.tar)")
    _workers(p)
    _seed(p)

    p = _command(sub, "run", cmd_run, "load an artifact and run it",
                 "Load an artifact (a directory, or its .tar) and call it: a training step updates its state\n"
                 "each call. Prints each output by the name the program gives it (e.g. loss).",
                 ["kgen run mlp128.kgen", "kgen run mlp128.kgen --steps 10 --save state.npz",
                  "kgen run linreg.kgen --inputs batch.npz"])
    p.add_argument("dir", metavar="DIR", help="the artifact directory (or its .tar archive)")
    p.add_argument("--inputs", metavar="FILE.npz",
                   help="the inputs, by name or as arr_0, arr_1, ... (default: random, of the recorded shapes)")
    p.add_argument("--batch", type=positive_int, metavar="B",
                   help="the batch size N of random inputs (default: the artifact's smallest shape bucket)")
    _seed(p, "the random inputs")
    p.add_argument("--steps", type=positive_int, default=1, metavar="K",
                   help="calls (a training step updates its state each time) (default: 1)")
    p.add_argument("--save", metavar="FILE.npz",
                   help="write the state after the calls (parameters and optimizer state, by name) to this .npz")

    p = _command(sub, "report", cmd_report, "one HTML page showing what kgen did to a model",
                 "Write one self-contained HTML page (inline CSS and SVG, nothing fetched) of a model's step:\n"
                 "launches, bytes and flops fused and unfused; the IR, each node linked to its kernel; the\n"
                 "kernels in launch order with their Triton source (each line linked to the IR node it\n"
                 "computes), fusion decisions, figures, and per target registers, spills, shared memory,\n"
                 "occupancy and the cost model's time; a roofline per target; the buffer plan over launches;\n"
                 "with --history, the training curves. TARGET may also be an artifact directory.",
                 ["kgen report mlp128 --train --out mlp128.html",
                  "kgen report cnn --train --batch 8 --target sm_90 --check --out cnn.html",
                  "kgen report mlp128.kgen --out artifact.html"])
    p.add_argument("model", metavar="TARGET", help=f"a zoo model ({', '.join(ZOO)}), a .pt2 or .onnx file, or "
                                                   f"an artifact directory written by `kgen compile`")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the page to write")
    p.add_argument("--train", action="store_true", help="the training step (default: the evaluation step)")
    _batch(p, 64)
    _targets(p, "compile facts and predictions for each")
    p.add_argument("--history", metavar="FILE.json", help="training history as fit returns it "
                   "({\"loss\": [...], \"val_loss\": [...]}), drawn as curves")
    p.add_argument("--check", action="store_true", help="run kgen.check and show each kernel's max error")
    _seed(p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a usage error already printed (2)
        return e.code
    try:
        return args.run(args)
    except KgenError as e:
        print(f"kgen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be read or written, named in the message
        print(f"kgen: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
