"""The fuzzer (kgen/fuzz): its generator, shrinker, reproducers and crash handling, and the
fixed-seed slice of random programs CI runs.

The slice runs each program in a child process (a kernel that segfaults costs one program,
not the test run) and requires every one to agree with kgen's reference interpreter and
with torch, in values, gradients and updated state, over two calls. A failing seed is
replayed with `python -m kgen.fuzz --seed SEED --programs 1 --jobs 1`, which shrinks it and
writes a reproducer under fuzz-failures/.
"""
from __future__ import annotations

import collections
import functools
import json
import subprocess
import sys

import pytest

import kgen
from kgen.fuzz import Illegal, Program, analyze, generate
from kgen.fuzz.catalog import OPS
from kgen.fuzz.harness import run_calls
from kgen.fuzz.pool import Pool, crash_site, died
from kgen.fuzz.program import prune
from kgen.fuzz.repro import write_reproducer
from kgen.fuzz.runner import make_calls, make_state, run_program, same_failure
from kgen.fuzz.shrink import shrink
from kgen.fuzz.source import module_source
from kgen.ir.graph import topological_order
from kgen.ir.optable import TABLE

# --- the CI slice ---------------------------------------------------------------------------------
SLICE = {"a": range(0, 25), "b": range(25, 50), "c": range(50, 75), "d": range(75, 100)}


@pytest.mark.parametrize("part", sorted(SLICE))
def test_fixed_seed_slice(part):
    failures = []
    with Pool(1, timeout=240) as pool:
        for program, outcome in pool.imap(generate(seed) for seed in SLICE[part]):
            if outcome["status"] != "ok":
                failures.append(f"seed {program.seed} ({', '.join(program.ops)}): {outcome['signature'][:200]}\n"
                                f"    {outcome.get('error', '')[:300]}")
    assert not failures, ("random programs failed (replay one with `python -m kgen.fuzz --seed SEED "
                          "--programs 1 --jobs 1`):\n" + "\n".join(failures))


# --- the generator --------------------------------------------------------------------------------
def test_programs_are_deterministic_per_seed():
    for seed in (0, 1, 7, 12345):
        assert generate(seed).to_json() == generate(seed).to_json()
    assert len({generate(seed).to_json() for seed in range(20)}) == 20


def test_the_catalog_is_the_public_ops():
    assert set(OPS) == set(kgen.ops.__all__), "add the new op to kgen/fuzz/ops_*.py"


def _graph_ops(program: Program, monkeypatch) -> set:
    """The op table entries the program's kgen code builds (without compiling it)."""
    infos = analyze(program)
    ns = {"STATE": make_state(program)}
    exec(compile(module_source(program, infos), "<program>", "exec"), ns)
    built = {}
    monkeypatch.setattr(kgen, "function", lambda inputs, outputs, updates: built.update(
        nodes=list(outputs) + [new for _, new in updates]))
    ns["make_function"]()
    return {n.op for n in topological_order(built["nodes"])}


# Built only by the VJP of max_pool2d_grad, a second derivative, which fuzz programs do not
# take (they differentiate once) and no kgen.ops function builds: tests/ir/test_vjp.py and
# tests/kernels/test_conv_pool.py check it, its reference, kernel and VJP.
SECOND_DERIVATIVE_ONLY = {"max_pool2d_gather"}
# Built only by lowering (rule S1, kgen/lowering/loops.py) from a scan whose body fits, never
# in a graph a user builds: the fuzzer's scans reach it when their programs are compiled;
# tests/kernels/test_scan_kernel.py, test_scan_cells.py and tests/lowering/test_scan_fit.py check it.
LOWERING_ONLY = {"persistent_scan"}


def test_programs_cover_every_op(monkeypatch):
    used, table, wanted = collections.Counter(), set(), set(TABLE) - SECOND_DERIVATIVE_ONLY - LOWERING_ONLY
    for seed in range(400):
        program = generate(seed)
        analyze(program)  # every generated program is legal
        used.update(program.ops)
        if not wanted <= table:
            table |= _graph_ops(program, monkeypatch)
    assert set(OPS) <= set(used), f"never drawn: {sorted(set(OPS) - set(used))}"
    assert wanted <= table, f"op table entries never built: {sorted(wanted - table)}"


def test_programs_have_the_edges():
    """Symbolic N at two sizes (0 and 1 among them), empty and unit dims, updates, several outputs."""
    programs = [generate(seed) for seed in range(300)]
    sizes = collections.Counter(n for p in programs for n in p.sizes)
    dims = collections.Counter(d for p in programs for v in p.inputs + p.shared for d in v["shape"])
    assert sum(1 for p in programs if p.sizes) > 80 and sizes[0] > 5 and sizes[1] > 5
    assert dims[0] > 5 and dims[1] > 50 and dims["N"] > 80
    assert sum(1 for p in programs if p.updates) > 40 and sum(1 for p in programs if len(p.updates) > 1) > 5
    assert sum(1 for p in programs if len(p.outputs) > 1) > 50


def test_analyze_refuses_illegal_programs():
    program = Program(seed=0, inputs=[{"name": "x0", "shape": [3], "dtype": "float32", "kind": "float"}],
                      steps=[{"name": "v1", "op": "log", "in": ["x0"], "spell": "fn"}], outputs=["v1"])
    with pytest.raises(Illegal, match="log"):
        analyze(program)  # x0 may be negative
    program.inputs[0]["kind"] = "pos"
    analyze(program)


# --- the shrinker ---------------------------------------------------------------------------------
def test_shrink_keeps_the_failure_and_reduces():
    program = next(p for p in map(generate, range(1000))
                   if "matmul" in p.ops and len(p.steps) >= 4 and len(p.outputs) > 1)

    def fails(candidate):  # a stand-in for "still fails the same way"
        return "matmul" in candidate.ops

    small = shrink(program, fails)
    assert fails(small)
    analyze(small)
    assert len(small.steps) < len(program.steps) and len(small.outputs) == 1
    assert small.calls == 1 and not small.grads and not small.updates
    matmul = next(s for s in small.steps if s["op"] == "matmul")
    assert len(small.steps) <= 3 and all(s["op"] != "matmul" or s is matmul for s in small.steps)


def test_prune_drops_what_nothing_reads():
    program = generate(3)
    program.steps.append({"name": "v999", "op": "neg", "in": [program.inputs[0]["name"]], "spell": "fn"})
    assert "v999" not in {s["name"] for s in prune(program).steps}


# --- reproducers, the harness and the pool -----------------------------------------------------------
def _small_program() -> Program:
    """tanh(x * w) and its row sums, x [N, 3], w a shared [3] with an update, N = 2 then 3."""
    return Program(seed=7, inputs=[{"name": "x0", "shape": ["N", 3], "dtype": "float32", "kind": "float"}],
                   shared=[{"name": "w1", "shape": [3], "dtype": "float32", "kind": "float"}],
                   steps=[{"name": "v2", "op": "mul", "in": ["x0", "w1"], "spell": "op"},
                          {"name": "v3", "op": "tanh", "in": ["v2"], "spell": "fn"},
                          {"name": "v4", "op": "sum", "in": ["v3"], "axis": 1, "keepdims": False, "spell": "fn"}],
                   outputs=["v4", "v3"], updates=[["w1", 0.125]], sizes=[2, 3])


def test_a_reproducer_runs_and_detects_a_wrong_answer(tmp_path):
    program = _small_program()
    path = write_reproducer(program, {"status": "ok", "signature": "ok"}, tmp_path)
    assert json.loads(path.with_suffix(".json").read_text())["program"] == program.to_dict()
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout
    # the same reproducer with a wrong oracle: the comparison must catch it
    source = path.read_text()
    wrong = source.replace("torch.tanh(", "1.001 * torch.tanh(")
    assert wrong != source
    path.write_text(wrong)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "MISMATCH" in done.stdout and "reference~torch" in done.stdout


def test_harness_compares_state_after_updates():
    program = _small_program()
    infos = analyze(program)
    ns = {"STATE": make_state(program)}
    exec(compile(module_source(program, infos), "<program>", "exec"), ns)
    oracle = ns["torch_oracle"]

    @functools.wraps(oracle)
    def off_by_a_bit(*args):  # the update's expected value, nudged
        results, news = oracle(*args)
        return results, {k: v + 0.01 for k, v in news.items()}
    ns["torch_oracle"] = off_by_a_bit
    calls = make_calls(program, infos)
    assert len(calls) == 2 and calls[0]["N"] != calls[1]["N"]
    mismatches = run_calls(ns, calls)
    assert mismatches and all(m["what"].startswith("state:") and "torch" in m["pair"] for m in mismatches)


def test_run_program_classifies():
    assert run_program(_small_program())["status"] == "ok"
    bad = _small_program()
    bad.steps[0]["in"] = ["nowhere"]
    outcome = run_program(bad)
    assert outcome["status"] == "invalid" and outcome["stage"] == "analyze"


def test_a_hung_or_dead_worker_is_a_crash():
    with Pool(1, timeout=0.01) as pool:  # no program finishes in 10 ms: each counts as hung
        outcomes = [o for _, o in pool.imap([_small_program(), generate(5)])]
    assert [o["signature"].split("@")[0] for o in outcomes] == ["crash:timeout"] * 2
    stack = ('Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n'
             '  File "/x/triton/runtime/interpreter.py", line 550 in create_masked_load\n'
             '  File "/root/.cache/kgen/src/kgen_1.py", line 23 in k0_pointwise\n'
             '  File "/work/kgen/kernels/runtime.py", line 146 in launch\n')
    assert crash_site(stack) == "pointwise:create_masked_load"
    dead = died(generate(5), -11, 1.0, stack=stack)
    assert dead["signature"] == "crash:process:SIGSEGV@pointwise:create_masked_load"
    assert same_failure(dead, dict(dead)) and not same_failure(dead, {"status": "ok", "signature": "ok"})
