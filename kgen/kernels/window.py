"""Image coordinates in window templates (convolution, depthwise convolution, pooling): named
index values of a kernel and the masks keeping them inside the image."""
from __future__ import annotations

from kgen.ir import indexing
from kgen.ir.indexing import ModularIndexing, index_var
from kgen.kernels.writer import KernelWriter


def define(w: KernelWriter, name: str, expr, bound, like: str, scalars=()):
    """Emit `name = expr` and return `name` as an index variable over [0, bound) (which
    holds wherever the kernel's mask is set). The value is kept a block, at least `like`'s,
    when `expr` simplifies to a constant or to loop counters only (`scalars`): masks and the
    pointers of masked loads must be blocks."""
    expr = indexing.simplify(expr)
    text = w.index(expr)
    if not indexing.index_vars(expr) - set(scalars):
        text = f"{like} * 0 + {text}"
    w.emit(f"{name} = {text}")
    return index_var(name, bound)


def window_offsets(flat, kh: int, kw: int) -> tuple:
    """(row, column) in a KH x KW window of the row-major position `flat`."""
    return ModularIndexing(flat, kw, kh), ModularIndexing(flat, 1, kw)


def bounds_mask(names, sizes, pads) -> str:
    """The mask terms keeping image coordinates `names` inside `sizes`; none are needed
    along an axis without padding, where a window never leaves the image."""
    terms = []
    for name, size, pad in zip(names, sizes, pads):
        if pad:
            terms += [f"({name} >= 0)", f"({name} < {size})"]
    return "".join(f" & {t}" for t in terms)
