"""`.pt2` files (written by torch.export.save), read for `kgen.frontends.model_file` (the
`kgen` command's MODEL files). A file holds one mode (the one it was exported in), which
serves training and evaluation.
"""
from __future__ import annotations

import os

import torch

from kgen.errors import InputError, KgenError
from kgen.frontends.fx import quiet_export

SUFFIX = ".pt2"


def load(path: str):
    """The ExportedProgram in `path`, or a KgenError naming the file."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file (a MODEL ending in {SUFFIX} is a file written by torch.export.save)")
    try:
        with quiet_export():
            return torch.export.load(path)
    except Exception as e:
        raise KgenError(f"{path}: torch.export.load cannot read it: {str(e).strip().splitlines()[0]}") from e
