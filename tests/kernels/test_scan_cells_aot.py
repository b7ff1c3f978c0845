"""The persistent scan kernels of kgen.nn's LSTM and GRU cells (kgen.scan bodies; forward and
the one reverse scan of their gradient) compile ahead of time for sm_80 and sm_90, with their
registers and spills read from the cubins.

Each compile runs in a child process: the LSTM's step once made LLVM's SLP vectorizer abort
the whole process on sm_90 (an assertion, no Python exception; see ScanWriter._product in
kgen/kernels/scan.py), and an abort must fail this test, not end the pytest run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("sm_80", "sm_90")

CHILD = r'''
import json, sys
import kgen
from kgen import ops
from kgen.kernels import aot
from kgen.kernels.launch import default_config
from kgen.nn import recurrent as cells

cell, hidden, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
steps, batch, gates = 7, 64, 4 if cell == "lstm" else 3
xproj = kgen.tensor("xproj", (steps, batch, gates * hidden))
w_hh, h0 = kgen.tensor("w_hh", (gates * hidden, hidden)), kgen.tensor("h0", (batch, hidden))
g = kgen.tensor("g", (steps, batch, hidden))
if cell == "lstm":
    c0 = kgen.tensor("c0", (batch, hidden))
    hs, (h_n, c_n) = cells.lstm_direction(xproj, w_hh, h0, c0)
    loss, leaves = ops.sum(hs * g) + ops.sum(h_n * h_n) + ops.sum(c_n * 0.5), [xproj, w_hh, h0, c0]
else:
    b_hh = kgen.tensor("b_hh", (gates * hidden,))
    hs, (h_n,) = cells.gru_direction(xproj, w_hh, b_hh, h0)
    loss, leaves = ops.sum(hs * g) + ops.sum(h_n * h_n), [xproj, w_hh, b_hh, h0]
program = kgen.compile(kgen.Graph(leaves + [g], [loss, hs] + kgen.grad(loss, leaves)))
scans = [k for k in program.kernels if "scan" in [p.kind for p in (k.parts or [k])]]  # alone or in a combo
jobs = [aot.kernel_job(program.source, k, t, default_config(k, {}, interpreted=False))
        for k in scans for t in targets]
for b in aot.compile_parallel(jobs, workers=1):
    print(json.dumps({"kernel": b.kernel, "target": b.target, "registers": b.registers,
                      "spill_bytes": b.spill_bytes, "ptx_target": ".target " + b.target in b.ptx}))
'''


def compile_scans(cell: str, hidden: int) -> list:
    """The facts of every scan kernel of the cell's training graph for TARGETS, compiled in a
    child process (an LLVM abort there fails the caller with its stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)
    child = subprocess.run([sys.executable, "-c", CHILD, cell, str(hidden), ",".join(TARGETS)],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert child.returncode == 0, f"{cell} H={hidden}: the compile exited with {child.returncode}:\n{child.stderr[-3000:]}"
    return [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("cell,hidden", [("lstm", 8), ("gru", 8)])
def test_the_cells_scan_kernels_compile_for_sm80_and_sm90(cell, hidden):
    facts = compile_scans(cell, hidden)
    assert len({f["kernel"] for f in facts}) == 2, facts  # the forward scan and the one reverse scan
    assert sorted(f["target"] for f in facts) == sorted(TARGETS * 2), facts
    for f in facts:
        assert f["ptx_target"], f
        assert 0 < f["registers"] <= 255, f
        assert f["spill_bytes"] >= 0, f
    print(f"\n{cell} H={hidden}: " + ", ".join(f"{f['kernel']} {f['target']} {f['registers']} regs "
                                              f"{f['spill_bytes']} B spilled" for f in facts))
