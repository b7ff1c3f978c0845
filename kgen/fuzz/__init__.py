"""kgen.fuzz: random programs over every public op, checked against kgen's reference
interpreter and torch (float64), with failures shrunk to runnable reproducers.

    python -m kgen.fuzz --minutes 10 --jobs 2        # open-ended, summary + JSON result

Pieces: program.py (a Program as data, its abstract interpretation), catalog.py and
ops_*.py (one entry per op: proposal, shape/bounds rule, kgen and torch code), generator.py
(the seeded generator), source.py (a Program as Python source), harness.py (calls and the
three-way comparison), torch_ops.py (the oracle's helpers), runner.py (one program, its
outcome), pool.py (child processes that may crash), shrink.py, repro.py and cli.py.

Not imported by `import kgen`.
"""
from kgen.fuzz.program import Illegal, Program, analyze
from kgen.fuzz.generator import generate

__all__ = ["Illegal", "Program", "analyze", "generate"]
