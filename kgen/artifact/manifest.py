"""The artifact manifest: its format, how it is sealed, and how it is read back and checked.

An artifact is a directory:

    manifest.json          what everything else is (below), sealed by a checksum
    kernels.py             the generated Triton module (readable, runs by itself)
    graph.txt              the lowered graph in kgen's text form, for people
    constants/<buf>.npy    array constants the kernels read
    state/<buf>.npy        a function's shared variables, as they were when compiled
    <target>/<kernel>.<i>.ptx | .cubin | .json
                           per target and config: PTX, cubin and Triton's metadata

The manifest (JSON, no pickle anywhere) records the kgen and Triton versions, the graph's
hash, inputs and outputs with symbolic shapes and dtypes (and, for a function, which
outputs are the new values of which state inputs), the buffer plan, the kernels in launch
order with their parameters and grid rules, the config of each kernel per target and shape
bucket, the binaries per target, and the sha256 and length of every other file. Its
"checksum" is the sha256 of the rest of the manifest, so an edited or damaged manifest is
caught like any other file."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from kgen import __version__
from kgen.errors import KgenError

FORMAT = "kgen-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SOURCE = "kernels.py"
GRAPH_TEXT = "graph.txt"
INTERPRETER = "interpreter"  # the config set used when kernels run on Triton's interpreter

REQUIRED = {"format": str, "format_version": int, "kgen_version": str, "triton_version": str,
            "graph_sha256": str, "kind": str, "sizes": list, "buckets": list, "targets": list,
            "buffers": dict, "inputs": list, "outputs": list, "launch_order": list, "kernels": list,
            "binaries": dict, "files": dict, "checksum": str}


class ArtifactError(KgenError):
    """An artifact that cannot be used as it is: missing, damaged, or made by other versions.
    The message names the file."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(manifest: dict) -> bytes:
    """The manifest without its checksum, as the bytes the checksum is taken over."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(manifest: dict) -> str:
    """The manifest's text with its checksum set."""
    manifest = dict(manifest, checksum=sha256(canonical(manifest)))
    return json.dumps(manifest, indent=1, sort_keys=False) + "\n"


def versions() -> dict:
    import triton

    return {"kgen_version": __version__, "triton_version": triton.__version__}


def read(directory: Path) -> dict:
    """The manifest of the artifact at `directory`, checked: valid JSON, the known format,
    an intact checksum, and this process's kgen and Triton versions."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no artifact here (expected a directory holding {MANIFEST})")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (every artifact has one; recompile with `kgen compile`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: cannot be read ({e})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                            f"the artifact is damaged") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a kgen artifact manifest (format {manifest.get('format')!r}, "
                            f"expected {FORMAT!r})")
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            got = "missing" if key not in manifest else type(manifest[key]).__name__
            raise ArtifactError(f"{path}: field {key!r} should be a {kind.__name__}, got {got}")
    if manifest["checksum"] != sha256(canonical(manifest)):
        raise ArtifactError(f"{path}: checksum mismatch: the manifest was changed or damaged after it "
                            f"was written")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format version {manifest['format_version']}, this kgen reads "
                            f"version {FORMAT_VERSION}; recompile with `kgen compile`")
    for key, mine in versions().items():
        if manifest[key] != mine:
            what = key.replace("_version", "")
            raise ArtifactError(f"{path}: made by {what} {manifest[key]}, this is {what} {mine}; "
                                f"recompile the artifact with `kgen compile` (or use {what} {manifest[key]})")
    return manifest


def check_files(directory: Path, manifest: dict, wanted=None) -> dict:
    """The bytes of every file the manifest lists (or of those in `wanted`), each checked
    against its recorded length and sha256; path -> bytes."""
    out = {}
    for name, entry in manifest["files"].items():
        if wanted is not None and name not in wanted:
            continue
        path = directory / safe_relative(name, directory)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{path}: missing (listed in {MANIFEST}); the artifact is incomplete") from None
        except OSError as e:
            raise ArtifactError(f"{path}: cannot be read ({e})") from None
        if not isinstance(entry, dict) or not {"sha256", "bytes"} <= set(entry):
            raise ArtifactError(f"{directory / MANIFEST}: the entry of {name!r} in 'files' is malformed")
        if len(data) != entry["bytes"]:
            raise ArtifactError(f"{path}: {len(data)} bytes, expected {entry['bytes']} (truncated or "
                                f"changed since it was written)")
        if sha256(data) != entry["sha256"]:
            raise ArtifactError(f"{path}: sha256 mismatch with {MANIFEST} (the file was changed or damaged)")
        out[name] = data
    return out


def safe_relative(name: str, directory: Path) -> PurePosixPath:
    """`name` as a path inside the artifact: relative, with no `..`."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ArtifactError(f"{directory / MANIFEST}: file name {name!r} points outside the artifact")
    return path
