"""The bodies of `kgen compile` and `kgen run` (their arguments are in kgen/cli.py).

    kgen compile MODEL --target sm_80,sm_90 --out DIR [--batch B ...] [--eval]
    kgen run DIR [--inputs FILE.npz] [--seed S] [--batch B] [--steps K]
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kgen.errors import KgenError


def compile_model(args, build_step) -> int:
    """Build the zoo model's step with `build_step()` and write its artifact. The compile
    workers start first: their start-up overlaps the tracing and lowering."""
    from kgen.artifact.write import compile_artifact
    from kgen.kernels.aot import CompilePool

    start = time.perf_counter()
    with CompilePool(args.workers) as pool:
        step = build_step()
        built = time.perf_counter()
        path = compile_artifact(step, args.out, targets=args.target, sizes=[{"N": b} for b in args.batch],
                                pool=pool)
    done = time.perf_counter()
    print(describe(path))
    if args.archive:
        from kgen.artifact.archive import pack
        print(f"archived as {pack(path)}")
    print(f"built (data, tracing, lowering) in {built - start:.2f} s, compiled and written in "
          f"{done - built:.2f} s")
    return 0


def describe(path) -> str:
    """A few lines on the artifact at `path`: kernels, binaries, buckets, size."""
    from kgen.artifact import manifest as mf

    path = Path(path)
    m = mf.read(path)
    total = sum(f["bytes"] for f in m["files"].values())
    buckets = ", ".join(",".join(f"{k}={v}" for k, v in b.items()) or "static" for b in m["buckets"])
    per_target = {t: sum(b["target"] == t for b in m["binaries"].values()) for t in m["targets"]}
    lines = [f"wrote {path}: a {m['kind']} of {len(m['kernels'])} kernels, {len(m['inputs'])} inputs, "
             f"{len(m['outputs'])} outputs; {total / 1e6:.2f} MB",
             "  binaries: " + ", ".join(f"{t} {n}" for t, n in per_target.items()) + f"; shape buckets: {buckets}"]
    return "\n".join(lines)


def run_artifact(args) -> int:
    """Load the artifact, call it `args.steps` times on the given or random inputs, and
    print a summary of its outputs."""
    from kgen.artifact.load import load

    start = time.perf_counter()
    artifact = load(args.dir)
    loaded = time.perf_counter()
    if args.inputs:
        inputs = npz_inputs(args.inputs, artifact.arguments)
    else:
        inputs = artifact.example_inputs({"N": args.batch} if args.batch else None, seed=args.seed)
    print(f"loaded {args.dir} in {loaded - start:.3f} s: {len(artifact.kernels)} kernels, "
          f"{artifact.mode} ({artifact.config_set}) on {artifact.device}")
    names = [o["name"] for o in artifact.outputs if o["role"] == "output"]
    for i in range(args.steps):
        outputs = artifact(*inputs)
        outputs = [] if outputs is None else (outputs if isinstance(outputs, list) else [outputs])
        if args.steps > 1:
            scalars = [f"{n} {float(o):.6g}" for n, o in zip(names, outputs) if o.numel() == 1]
            print(f"step {i + 1}: " + ("  ".join(scalars) or f"{len(outputs)} outputs"))
    print(f"{'output':<10} {'shape':<16} {'dtype':<9} {'min':>12} {'mean':>12} {'max':>12}")
    for name, value in zip(names, outputs):
        v = value.detach().cpu().double()
        shape = "[" + ",".join(map(str, value.shape)) + "]"
        print(f"{name:<10} {shape:<16} {str(value.dtype).replace('torch.', ''):<9} "
              f"{v.min().item():>12.6g} {v.mean().item():>12.6g} {v.max().item():>12.6g}")
    if artifact.updates:
        print(f"state: {len(artifact.state)} values, {len(artifact.updates)} updated by each call")
    return 0


def npz_inputs(path, names: list) -> list:
    """The arrays of an .npz file for inputs `names`: by name, or as arr_0, arr_1, ...
    (np.savez with positional arrays)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise KgenError(f"{path}: cannot read it as an .npz file of input arrays ({e})") from None
    positional = [f"arr_{i}" for i in range(len(names))]
    keys = names if all(n in arrays for n in names) else positional
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise KgenError(f"{path}: expected arrays named {', '.join(names)} (or arr_0 ... arr_{len(names) - 1}), "
                        f"got {', '.join(sorted(arrays)) or 'none'}")
    return [arrays[k] for k in keys]
