"""kgen's exceptions: every user-facing failure is a KgenError naming what was expected,
what was given, and where (an input name, or a node in its one-line text form)."""


class KgenError(Exception):
    """Base class of every error kgen raises on purpose."""


class ShapeError(KgenError, ValueError):
    """Shapes that do not fit: broadcasting, reshape sizes, matmul inner dims, inputs."""


class DTypeError(KgenError, TypeError):
    """A dtype an op or an input does not accept."""


class InputError(KgenError, ValueError):
    """A compiled function was called with the wrong inputs (count, shape, dtype, kind)."""


class UnknownOpError(KgenError, KeyError):
    """An op name that is not in the op table."""

    def __str__(self):  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class GradError(KgenError, ValueError):
    """kgen.grad was asked for something it cannot differentiate."""


class VerifyError(KgenError, ValueError):
    """A graph that breaks an IR invariant (found by kgen.ir.verify)."""


class CheckError(KgenError, AssertionError):
    """A generated kernel disagreed with the reference interpreter."""


class ArgumentError(KgenError, TypeError):
    """A kgen function or op called with arguments it does not take: an unknown keyword
    (conv2d(padding_mode="reflect")), too many or too few."""


class OptionError(KgenError, ValueError):
    """An option or setting kgen cannot use: fit(batch_size=0), a cache path that is a file."""


class CaptureError(KgenError, RuntimeError):
    """A foreign model kgen could not capture: torch.export refused the torch module (its own
    reason follows), before any of it was translated."""


class DistributedError(KgenError, RuntimeError):
    """A data-parallel step's collective failed: another rank raised or died, or did not
    answer within the process group's timeout (kgen.nn.distributed)."""


class NonFiniteError(KgenError, FloatingPointError):
    """With check_finite on (or KGEN_CHECK_FINITE=1): a kernel wrote a NaN or an infinity."""


def check_arguments(fn, where: str):
    """`fn`, raising ArgumentError where Python would raise its own TypeError for arguments
    `fn` does not take, naming `where`, the bad argument and the parameters `fn` takes.
    Costs nothing on a good call: the arguments are inspected only after a TypeError, and
    a TypeError from inside `fn` passes unchanged."""
    import functools
    import inspect

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError as error:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as bad:
                raise ArgumentError(_argument_message(where, signature, kwargs, bad)) from None
            raise error
    return checked


# keywords from other libraries, and what kgen calls them (or why it has none)
KEYWORD_HINTS = {"dim": "kgen's ops take axis=, as in NumPy", "keepdim": "kgen's ops take keepdims=, as in NumPy",
                 "padding_mode": "convolutions pad with zeros only", "out": "kgen ops return new tensors"}


def _argument_message(where: str, signature, kwargs: dict, bad: TypeError) -> str:
    takes = ", ".join(p.name for p in signature.parameters.values() if p.name != "self")
    unknown = [k for k in kwargs if k not in signature.parameters]
    if unknown:
        hint = KEYWORD_HINTS.get(unknown[0])
        return (f"{where}: unknown keyword {unknown[0]!r}" + (f" ({hint})" if hint else "")
                + f"; expected one of: {takes}")
    return f"{where}: {bad}; expected the arguments ({takes})"
