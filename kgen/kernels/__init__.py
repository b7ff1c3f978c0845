"""kgen.kernels: Triton source templates, the module writer, the runtime and AOT compiling."""
from kgen.kernels.aot import Binary, compile_kernel, compile_program
from kgen.kernels.codegen import generate, module_source
from kgen.kernels.runtime import Program, default_device
from kgen.kernels.writer import KernelSource

__all__ = ["Binary", "compile_kernel", "compile_program", "generate", "module_source",
           "Program", "default_device", "KernelSource"]
