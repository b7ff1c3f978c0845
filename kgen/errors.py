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
