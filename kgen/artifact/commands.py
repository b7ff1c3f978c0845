"""The bodies of `kgen compile` and `kgen run` (their arguments are in kgen/cli.py).

    kgen compile MODEL --out DIR [--target sm_80,sm_90] [--batch 64,512] [--eval] [--archive] [--force]
    kgen run DIR [--inputs FILE.npz | --batch B] [--seed S] [--steps K] [--save FILE.npz]
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from kgen.artifact import manifest as mf
from kgen.artifact.archive import pack
from kgen.artifact.load import load
from kgen.artifact.write import compile_artifact
from kgen.errors import KgenError
from kgen.files import atomic_write
from kgen.kernels.aot import CompilePool


def check_destination(out, force: bool, archive: bool) -> None:
    """Refuse, before any work, to write the artifact `out` (and `out`.tar with `archive`)
    where something is in the way: an existing artifact without `force`, anything else
    (a file, a directory that is no artifact) even with it."""

    out = Path(out)
    _check_parent("--out", out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not (out.is_dir() and (out / mf.MANIFEST).is_file()):
            kind = "a directory" if out.is_dir() else "a file"
            raise KgenError(f"--out: expected a new or empty directory, or a kgen artifact to replace, got {out}, "
                            f"{kind} that is not a kgen artifact; not touching it")
        if not force:
            raise KgenError(f"--out: {out} is already an artifact; pass --force to replace it")
    tar = out.with_name(out.name + ".tar")
    if archive and tar.exists():
        if not tar.is_file():
            raise KgenError(f"--archive: {tar} exists and is not a file; not touching it")
        if not force:
            raise KgenError(f"--archive: {tar} already exists; pass --force to replace it")


def check_npz_destination(option: str, path) -> None:
    """Refuse, before any work, an .npz file to write at `path` that cannot be one."""
    path = Path(path)
    _check_parent(option, path)
    if path.is_dir():
        raise KgenError(f"{option}: expected a file to write, got {path}, a directory")


def _check_parent(option: str, path: Path) -> None:
    """The first existing folder above `path` must be a directory (it is created from there)."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise KgenError(f"{option}: expected a path in a directory, got {path}, under the file {parent}")
            return


def compile_model(args, build_step) -> int:
    """Build the zoo model's step with `build_step()` -> (step, output names, state names:
    the artifact's -> the model's) and write its artifact, named so. The compile workers
    start first: their start-up overlaps the tracing and lowering. The artifact is written
    under another name and renamed into place (replacing an older one), so a failure leaves
    `args.out` as it was."""

    start = time.perf_counter()
    with CompilePool(args.workers) as pool:
        step, output_names, state_names = build_step()
        built = time.perf_counter()
        path = compile_artifact(step, args.out, targets=args.target, sizes=[{"N": b} for b in args.batch],
                                pool=pool)
    name_interface(path, output_names, state_names)
    done = time.perf_counter()
    print(describe(path))
    if args.archive:
        print(f"archived as {pack(path)}")
    print(f"built (data, tracing, lowering) in {built - start:.2f} s, compiled and written in "
          f"{done - built:.2f} s")
    return 0


def name_interface(path, outputs: list, state: dict) -> None:
    """Name the artifact's outputs (written as out0, out1, ...) `outputs`, in order, and
    rename its state by `state` (written name -> new name; the rest keep theirs), as the
    program that made it names them. The manifest is resealed and replaced atomically."""

    path = Path(path)
    manifest = mf.read(path)
    returned = [o for o in manifest["outputs"] if o["role"] == "output"]
    if outputs and len(outputs) != len(returned):
        raise KgenError(f"{path}: {len(returned)} outputs, but {len(outputs)} names were given ({', '.join(outputs)})")
    for output, name in zip(returned, outputs):
        output["name"] = name
    names = [state.get(i["name"], i["name"]) if i["role"] == "state" else i["name"] for i in manifest["inputs"]]
    if len(set(names)) < len(names):
        raise KgenError(f"{path}: renaming the state would give two inputs one name")
    renamed = {}
    for entry, name in zip(manifest["inputs"], names):
        if name != entry["name"]:
            entry["name"] = manifest["buffers"][entry["buffer"]]["name"] = name
            renamed[entry["buffer"]] = name
    for output in manifest["outputs"]:
        if output["role"] == "update" and output["updates"] in renamed:
            output["name"] = f"new {renamed[output['updates']]}"
    atomic_write(path / mf.MANIFEST, mf.seal(manifest).encode())


def describe(path) -> str:
    """A few lines on the artifact at `path`: kernels, binaries, buckets, size."""
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
    """Load the artifact, call it `args.steps` times on the given or random inputs, print
    a summary of its outputs (named as the manifest names them) and, with `args.save`,
    write its state after the calls to an .npz file."""

    if args.save:
        check_npz_destination("--save", args.save)
    start = time.perf_counter()
    artifact = load(args.dir)
    loaded = time.perf_counter()
    if args.save and not artifact.state:
        raise KgenError(f"--save: {args.dir} has no state to save (it is a {artifact.manifest['kind']} "
                        f"with no shared values)")
    if args.inputs:
        inputs = npz_inputs(args.inputs, artifact.arguments)
    else:
        inputs = artifact.example_inputs({"N": args.batch} if args.batch else None, seed=args.seed)
    print(f"loaded {args.dir} in {loaded - start:.3f} s: {len(artifact.kernels)} kernels, "
          f"{artifact.mode} ({artifact.config_set}) on {artifact.device}")
    names = [o["name"] for o in artifact.outputs if o["role"] == "output"]
    for i in range(args.steps):
        try:
            outputs = artifact(*inputs)
        except KgenError as e:  # a wrong shape or dtype: the first call finds it, before any launch
            raise KgenError(f"--inputs {args.inputs}: {e}" if args.inputs else str(e)) from None
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
    if args.save:
        stream = io.BytesIO()
        np.savez(stream, **{name: artifact.get_state(name) for name in artifact.state})
        atomic_write(args.save, stream.getvalue())
        print(f"saved the state after {args.steps} call{'s' if args.steps > 1 else ''} to {args.save}")
    return 0


def npz_inputs(path, names: list) -> list:
    """The arrays of an .npz file for inputs `names`: by name, or as arr_0, arr_1, ...
    (np.savez with positional arrays)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise KgenError(f"--inputs {path}: cannot read it as an .npz file of input arrays ({e})") from None
    positional = [f"arr_{i}" for i in range(len(names))]
    keys = names if all(n in arrays for n in names) else positional
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise KgenError(f"--inputs {path}: expected arrays named {', '.join(names)} "
                        f"(or arr_0 ... arr_{len(names) - 1}), "
                        f"got {', '.join(sorted(arrays)) or 'none'}")
    return [arrays[k] for k in keys]
