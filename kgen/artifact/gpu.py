"""Stored cubins as launchable Triton kernels, with no compiling.

Triton's own cache hit builds a `CompiledKernel` from a metadata JSON and a binary file
(triton/compiler/compiler.py); an artifact stores exactly those two files per kernel,
target and config, so the loader does the same. The launcher Triton builds for it reads
the kernel's argument names, signature and constexprs from the compile's source object:
`StoredSource` gives it those, from the manifest. Launching takes every parameter in
order, constexprs included (the launcher drops them), as Triton's JIT passes them."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from kgen.artifact.manifest import ArtifactError


class StoredSource:
    """What Triton's launcher reads of an ASTSource, without the Python function."""

    def __init__(self, params: list, constexprs: dict):
        names = [p["name"] for p in params]
        self.fn = SimpleNamespace(arg_names=names, launch_metadata=None)
        self.signature = {p["name"]: p["signature"] for p in params}
        self.constants = {(names.index(k),): v for k, v in constexprs.items()}
        self.name = "kgen_stored"


def load_cubin(directory: Path, binary: dict, params: list, constexprs: dict, cubin: bytes):
    """The CompiledKernel of a manifest binary entry (its files already hash-checked;
    `cubin` is the checked content, compared with what Triton read)."""
    from triton.compiler.compiler import CompiledKernel

    group = {Path(binary["metadata"]).name: str(directory / binary["metadata"]),
             Path(binary["cubin"]).name: str(directory / binary["cubin"])}
    try:
        kernel = CompiledKernel(StoredSource(params, constexprs), group, binary["cubin"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{directory / binary['metadata']}: cannot be loaded as Triton kernel "
                            f"metadata ({type(e).__name__}: {e})") from None
    if kernel.kernel != cubin:
        raise ArtifactError(f"{directory / binary['cubin']}: changed while it was being loaded")
    return kernel


def device_target(device) -> str:
    """The artifact target name of a CUDA device (sm_90 for an H100)."""
    import torch
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"
