"""kgen: an ahead-of-time kernel generator for deep learning, from a small tensor IR to
fused Triton kernels, checked against a NumPy reference interpreter.

`import kgen` imports only the errors: every other public name (and submodule) is imported
on first use (PEP 562), since they bring in torch and triton and the `kgen` command answers
`--help` without them."""
import importlib
import importlib.util
import sys
import types

from kgen.errors import (ArgumentError, CaptureError, CheckError, DistributedError, DTypeError, GradError,
                         InputError, KgenError, NonFiniteError, OptionError, ShapeError, UnknownOpError, VerifyError)

__version__ = "0.1.0"

# public name -> (the module defining it, its name there; None: the module itself)
_PUBLIC = {
    "ir": ("kgen.ir", None), "ops": ("kgen.ops", None), "reference": ("kgen.ir.reference", None),
    "counters": ("kgen.counters", None),
    **{name: ("kgen.ir", name) for name in ("Graph", "Node", "bfloat16", "bool_", "float16", "float32",
                                            "int32", "int64")},
    "grad": ("kgen.ir.autodiff", "grad"), "scan": ("kgen.ops", "scan"),
    **{name: ("kgen.function", name) for name in ("Function", "SharedVariable", "function", "shared", "tensor")},
    "from_torch": ("kgen.frontends.torch_module", "from_torch"),
    "from_onnx": ("kgen.frontends.onnx", "from_onnx"),  # needs the onnx package; import kgen does not
    "compile": ("kgen.compiler", "compile"), "check": ("kgen.check", "check"),
    "report": ("kgen.report", "report"),
    **{name: ("kgen.artifact", name) for name in ("Artifact", "ArtifactError", "compile_artifact", "load")},
}

__all__ = ["ArgumentError", "CaptureError", "CheckError", "DistributedError", "DTypeError", "GradError",
           "InputError", "KgenError", "NonFiniteError", "OptionError", "ShapeError", "UnknownOpError", "VerifyError", *_PUBLIC,
           "__version__"]


class _Package(types.ModuleType):
    def __getattr__(self, name):  # called only for names not (yet) in the namespace
        if name in _PUBLIC:
            module, attribute = _PUBLIC[name]
            value = importlib.import_module(module)
            value = value if attribute is None else getattr(value, attribute)
        elif not name.startswith("_") and importlib.util.find_spec(f"kgen.{name}") is not None:
            value = importlib.import_module(f"kgen.{name}")
        else:
            raise AttributeError(f"module 'kgen' has no attribute {name!r}")
        self.__dict__[name] = value
        return value

    def __setattr__(self, name, value):
        # Importing the submodule kgen.check (or kgen.function, kgen.report) binds it here by its name:
        # kgen.check is the function of that name, as when everything was imported eagerly.
        if isinstance(value, types.ModuleType) and _PUBLIC.get(name, (None, None))[1] is not None:
            return
        super().__setattr__(name, value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(__all__))


sys.modules[__name__].__class__ = _Package
