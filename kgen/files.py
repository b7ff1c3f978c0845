"""Files kgen keeps: the cache directory ($KGEN_CACHE_DIR) and whole-file writes. A leaf
(it imports only the errors): the kernel loader, the autotune cache, `Function.dump` and
the benchmarks write through it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kgen.errors import OptionError


def cache_dir() -> Path:
    """$KGEN_CACHE_DIR, or ~/.cache/kgen: a directory, or a path where one can be made."""
    setting = os.environ.get("KGEN_CACHE_DIR")
    root = Path(setting) if setting else Path.home() / ".cache" / "kgen"
    return check_directory(root, f"KGEN_CACHE_DIR={root}" if setting else f"the cache directory {root}")


def check_directory(path, what: str) -> Path:
    """`path`, if it is a directory or can be made one; else an OptionError naming `what`
    (the setting or option it came from, and the path) and the file in the way."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                found = "it is a file" if part == path else f"{part} is a file"
                raise OptionError(f"{what}: expected a directory (or a path where one can be made), but {found}")
            break
    return path


def atomic_write(path, data) -> None:
    """Write `data` (text or bytes) to `path` via a temporary file beside it and a rename,
    so no reader ever sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
