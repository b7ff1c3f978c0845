"""The persistent autotune cache: the config tuned for a kernel at a shape bucket on a
target, kept on disk so tuning happens once (ahead of time, `kgen tune`) and artifacts can
embed its answers. Also the cache of compile facts the cost model reads (`FactsCache`).

The key holds everything that can change the answer (DESIGN.md, "Artifacts and caches"):

    kernel   sha256 of the kernel's source without its name and docstring (the name says
             where it sits in a program, the docstring quotes graph node names; neither
             changes the code), so equal kernels of different programs share entries
    bucket   each named extent of the kernel (KernelSource.dims) rounded up to a power of
             two: a config tuned for a batch of 64 serves 33..64
    dtypes   the element types of the kernel's buffers
    target   the GPU architecture (sm_80, sm_90, ...)
    triton   Triton's version, and kgen: kgen's version

Layout: `<directory>/v1/<sha256 of the key>.json`, one file per key, so writers of
different keys never touch the same file, and a file is replaced whole (temporary file +
os.replace), so two processes writing at once leave one complete entry or the other. An
entry is JSON (no pickle): format, key, config, record (how the config was chosen) and a
sha256 checksum of the rest. An entry that does not parse, has another format, fails its
checksum, holds another key or a config the kernel cannot take is reported (a
TuneCacheWarning naming the file) and ignored; the next tuning of that kernel rebuilds it.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import kgen
from kgen.errors import KgenError
from kgen.files import atomic_write, cache_dir, check_directory
from kgen.kernels.aot import ALIGN
from kgen.kernels.families import next_pow2
from kgen.kernels.launch import kernel_dims
from kgen.kernels.launch_config import LAUNCH_OPTIONS, check_config

FORMAT = 2  # 2: GEMM configs hold GROUP_M (and SPLIT_K where they may split)
KEY_PARTS = {"kernel": "kernel source", "bucket": "shape bucket", "dtypes": "dtypes", "target": "target",
             "triton": "triton version", "kgen": "kgen version"}


class TuneCacheWarning(UserWarning):
    """A cache entry was found corrupt or unusable; it is ignored and rebuilt."""


class CorruptEntry(KgenError):
    """An entry file that cannot be trusted (the message says why)."""


def default_directory() -> Path:
    """$KGEN_CACHE_DIR/tune, or ~/.cache/kgen/tune."""
    return cache_dir() / "tune"


# --- the key -----------------------------------------------------------------------------------
def kernel_hash(kernel) -> str:
    """sha256 of `kernel`'s source with its function renamed and docstrings dropped."""
    try:
        tree = ast.parse(kernel.text)
    except SyntaxError:
        return hashlib.sha256(kernel.text.encode()).hexdigest()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == kernel.name:
                node.name = "kernel"
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()


def shape_bucket(kernel, sizes: dict) -> dict:
    return {name: next_pow2(value) for name, value in sorted(kernel_dims(kernel, sizes).items())}


def kernel_dtypes(kernel) -> str:
    return ",".join(p.signature().lstrip("*") for p in kernel.params if p.kind in ("in", "out"))


def versions() -> dict:
    import triton

    return {"triton": triton.__version__, "kgen": kgen.__version__}


@dataclass(frozen=True)
class TuneKey:
    kernel: str
    bucket: tuple  # (name, power of two), sorted by name
    dtypes: str
    target: str
    triton: str
    kgen: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["bucket"] = dict(self.bucket)
        return d

    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.as_dict()).encode()).hexdigest()[:32]


def tune_key(kernel, sizes: dict, target: str) -> TuneKey:
    return TuneKey(kernel_hash(kernel), tuple(shape_bucket(kernel, sizes).items()), kernel_dtypes(kernel),
                   target, **versions())


# --- entries: checksummed JSON files -------------------------------------------------------------
def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def jsonable(value):
    """`value` with tuples as lists and non-finite floats as None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_entry(path: Path, body: dict) -> None:
    body = dict(jsonable(body), format=FORMAT)
    body["checksum"] = hashlib.sha256(_canonical(body).encode()).hexdigest()
    atomic_write(path, json.dumps(body, indent=1, allow_nan=False) + "\n")  # checksummed in canonical form


def read_entry(path: Path) -> dict:
    """The entry at `path`, checked; CorruptEntry says why it cannot be trusted."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CorruptEntry(f"not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(body, dict):
        raise CorruptEntry(f"expected a JSON object, got {type(body).__name__}")
    if body.get("format") != FORMAT:
        raise CorruptEntry(f"format {body.get('format')!r}, expected {FORMAT}")
    checksum = body.pop("checksum", None)
    if checksum != hashlib.sha256(_canonical(body).encode()).hexdigest():
        raise CorruptEntry("checksum mismatch (edited or damaged)")
    return body


def _report(path: Path, reason: str, problems: list) -> None:
    message = (f"kgen tune cache: entry {path} is unusable ({reason}); it is ignored, and the next "
               f"tuning of this kernel rebuilds it (or delete the file)")
    problems.append(message)
    warnings.warn(message, TuneCacheWarning, stacklevel=3)


# --- the cache -----------------------------------------------------------------------------------
class TuneCache:
    """Tuned configs on disk, one JSON file per key (see the module docstring)."""

    def __init__(self, directory=None):
        self.directory = (check_directory(directory, f"the autotune cache {directory}") if directory is not None
                          else default_directory())
        self.entries_dir = self.directory / f"v{FORMAT}"
        self.facts = FactsCache(self.directory / "facts" / f"v{FORMAT}")
        self.problems = []  # messages about unusable entries met so far

    def path(self, key: TuneKey) -> Path:
        return self.entries_dir / f"{key.digest()}.json"

    def _usable(self, path: Path, key: TuneKey, kernel) -> dict:
        """The entry at `path` if it can be trusted for `key`; raises CorruptEntry."""
        body = read_entry(path)
        if body.get("key") != key.as_dict():
            raise CorruptEntry("its key is not the key its file name was made from")
        problem = check_config(kernel, body.get("config"))
        if problem:
            raise CorruptEntry(problem)
        return body

    def lookup(self, kernel, sizes: dict, target: str):
        """The cached config for `kernel` at `sizes` on `target` (a dict for plan_launch),
        or None on a miss. An unusable entry is reported and counts as a miss."""
        key = tune_key(kernel, sizes, target)
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return dict(self._usable(path, key, kernel)["config"])
        except CorruptEntry as e:
            _report(path, str(e), self.problems)
            return None

    def record(self, kernel, sizes: dict, target: str):
        """The stored record (how the config was chosen) of a usable entry, or None."""
        key = tune_key(kernel, sizes, target)
        try:
            return self._usable(self.path(key), key, kernel).get("record")
        except (CorruptEntry, FileNotFoundError):
            return None

    def store(self, kernel, sizes: dict, target: str, config: dict, record: dict) -> Path:
        """Write the entry for `kernel` at `sizes` on `target` (replacing any)."""
        problem = check_config(kernel, config)
        if problem:
            raise KgenError(f"cannot cache a config for {kernel.name}: {problem}")
        key = tune_key(kernel, sizes, target)
        path = self.path(key)
        write_entry(path, {"key": key.as_dict(), "config": dict(config),
                           "record": dict(record, kernel=kernel.name)})
        return path

    def entries(self) -> list:
        """(path, body) of every trustworthy entry; the others are reported."""
        found = []
        for path in sorted(self.entries_dir.glob("*.json")):
            try:
                found.append((path, read_entry(path)))
            except CorruptEntry as e:
                _report(path, str(e), self.problems)
        return found

    def explain(self, kernel, sizes: dict, target: str) -> str:
        """Why a lookup hits or misses: on a miss, which parts of the key differ from the
        nearest entries (those of the same kernel source first)."""
        key = tune_key(kernel, sizes, target)
        ours, path = key.as_dict(), self.path(key)
        where = f"{kernel.name} on {target} at {_format_bucket(ours['bucket'])}"
        if path.exists():
            try:
                body = self._usable(path, key, kernel)
            except CorruptEntry as e:
                return (f"miss: {where}: entry {path.name} is unusable ({e}); it is ignored and the next "
                        f"tuning rebuilds it")
            source = (body.get("record") or {}).get("source", "?")
            return f"hit: {where}: {format_config(body['config'])} (chosen by {source})"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TuneCacheWarning)
            entries = [(p, b) for p, b in self.entries() if isinstance(b.get("key"), dict)]
        if not entries:
            return f"miss: {where}: the cache {self.entries_dir} has no entries"

        def differing(body):
            return [part for part in KEY_PARTS if body["key"].get(part) != ours[part]]

        same_kernel = [e for e in entries if e[1]["key"].get("kernel") == ours["kernel"]]
        pool = same_kernel or entries
        fewest = min(len(differing(b)) for _, b in pool)
        nearest = [(p, b) for p, b in pool if len(differing(b)) == fewest]
        best_path, best = nearest[0]
        reasons = "; ".join(_describe(part, best, ours) for part in differing(best))
        more = f" and {len(nearest) - 1} more like it" if len(nearest) > 1 else ""
        return f"miss: {where}: the nearest entry ({best_path.name}{more}) differs in {reasons}"


def _format_bucket(bucket: dict) -> str:
    return "{" + ", ".join(f"{k}<={v}" for k, v in bucket.items()) + "}"


def _describe(part: str, entry: dict, ours: dict) -> str:
    theirs = entry["key"].get(part)
    if part == "kernel":
        name = (entry.get("record") or {}).get("kernel", "?")
        return (f"kernel source: no entry for this source (sha256 {ours['kernel'][:12]}); the nearest is "
                f"for {name} (sha256 {str(theirs)[:12]})")
    if part == "bucket":
        theirs = _format_bucket(theirs) if isinstance(theirs, dict) else theirs
        return f"shape bucket: cache has {theirs}, running {_format_bucket(ours['bucket'])}"
    return f"{KEY_PARTS[part]}: cache has {theirs}, running {ours[part]}"


def format_config(config: dict) -> str:
    """A config on one line: constexprs, then w<num_warps> s<num_stages>."""
    blocks = " ".join(f"{k}={v}" for k, v in config.items() if k not in LAUNCH_OPTIONS)
    options = "".join(f" {letter}{config[k]}" for k, letter in (("num_warps", "w"), ("num_stages", "s"))
                      if k in config)
    return blocks + options


# --- compile facts -------------------------------------------------------------------------------
class FactsCache:
    """Compile facts (registers, spills, shared memory) per kernel source, target, config and
    Triton version, one checksummed JSON file each, like the tune entries."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.problems = []

    def path(self, source_hash: str, target: str, config: dict) -> tuple:
        key = {"kernel": source_hash, "target": target, "config": dict(config),
               "triton": versions()["triton"], "align": ALIGN}
        return key, self.directory / f"{hashlib.sha256(_canonical(key).encode()).hexdigest()[:32]}.json"

    def get(self, source_hash: str, target: str, config: dict):
        key, path = self.path(source_hash, target, config)
        if not path.exists():
            return None
        try:
            body = read_entry(path)
            if body.get("key") != key or not isinstance(body.get("facts"), dict):
                raise CorruptEntry("its key is not the key its file name was made from")
            return body["facts"]
        except CorruptEntry as e:
            _report(path, str(e), self.problems)
            return None

    def put(self, source_hash: str, target: str, config: dict, facts: dict) -> None:
        key, path = self.path(source_hash, target, config)
        write_entry(path, {"key": key, "facts": facts})
