"""kgen.artifact: ahead-of-time artifacts. `compile_artifact` writes one (manifest, Triton
source, PTX and cubin per target); `load` runs one with no tracing, lowering, tuning or,
on a listed GPU, compiling."""
from kgen.artifact.archive import pack
from kgen.artifact.load import Artifact, load
from kgen.artifact.manifest import ArtifactError
from kgen.artifact.write import compile_artifact

__all__ = ["Artifact", "ArtifactError", "compile_artifact", "load", "pack"]
