"""kgen.report: one self-contained HTML page showing what kgen did to a program: the IR,
the kernels with their provenance and fusion decisions, per-target compile facts and
predictions, rooflines, the buffer plan and training curves (`kgen report`)."""
from kgen.report.build import report

__all__ = ["report"]
