"""kgen.autotune: config choice per kernel template (`configs`)."""
from kgen.autotune import configs

__all__ = ["configs"]
