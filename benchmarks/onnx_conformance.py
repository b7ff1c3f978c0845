"""ONNX's backend conformance suite through kgen: every node case whose op is in issue 13's
list and whose dtypes kgen has, plus the wheel's pytorch-converted, pytorch-operator and
simple model tests, each through `from_onnx` and the generated kernels (Triton's
interpreter without a GPU). Prints pass/fail/error/skip per op and writes
benchmarks/results/DATE-DEVICE-onnx.json, listing every counted case that does not pass with
its reason.

    python benchmarks/onnx_conformance.py [--jobs 2] [--ops Conv,MaxPool] [--cases REGEX]
                                          [--kinds node,pytorch-converted] [--timeout 300]

Cases run in child processes (`--jobs` of them), each case under a time limit; a case that
kills its process counts as an error and the rest go on.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_io import device_name  # noqa: E402
from kgen.frontends.onnx import conformance  # noqa: E402


def _worker(kind: str, names: list, out: str, timeout: int) -> None:
    """Run cases `names` of `kind`, appending one JSON line per case to `out`."""
    import warnings
    warnings.simplefilter("ignore")
    import torch
    torch.set_num_threads(1)
    cases = {c.name: c for c in conformance.load_cases(kind)}

    def alarm(signum, frame):
        raise TimeoutError(f"over {timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    with open(out, "a") as f:
        for name in names:
            f.write(json.dumps({"case": name, "started": True}) + "\n")
            f.flush()
            start = time.time()
            signal.alarm(timeout)
            try:
                status, reason = conformance.run_case(cases[name])
            except TimeoutError as e:
                status, reason = "error", f"timeout: {e}"
            finally:
                signal.alarm(0)
            f.write(json.dumps({"case": name, "status": status, "reason": reason,
                                "seconds": round(time.time() - start, 2)}) + "\n")
            f.flush()


def _run_all(kind: str, names: list, jobs: int, timeout: int, tmp: Path) -> dict:
    """{case: record} for `names`, over `jobs` child processes; a child that dies costs the
    case it was running (an error) and is restarted on the rest."""
    results = {}
    pending = [names[i::jobs] for i in range(jobs)]
    running = {}
    counter = 0
    while pending or running:
        while pending and len(running) < jobs:
            chunk = pending.pop()
            if not chunk:
                continue
            counter += 1
            out = tmp / f"{kind}-{counter}.jsonl"
            out.unlink(missing_ok=True)
            proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--out", str(out),
                                     "--timeout", str(timeout), "--names", ",".join(chunk)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running[proc] = (chunk, out)
        time.sleep(0.5)
        for proc in list(running):
            if proc.poll() is None:
                continue
            chunk, out = running.pop(proc)
            done, started = {}, None
            for line in out.read_text().splitlines() if out.exists() else []:
                record = json.loads(line)
                if record.get("started"):
                    started = record["case"]
                else:
                    done[record["case"]] = record
                    started = None
            results.update(done)
            if started is not None:
                results[started] = {"case": started, "status": "error",
                                    "reason": f"the process died (exit code {proc.returncode})", "seconds": None}
            rest = [n for n in chunk if n not in results]
            if rest:
                pending.append(rest)
            print(f"  {kind}: {len(results)}/{len(names)} cases", file=sys.stderr, flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--ops", default="", help="comma-separated ops (default: every listed op)")
    parser.add_argument("--cases", default="", help="a regex the case names must match")
    parser.add_argument("--kinds", default=",".join(conformance.KINDS))
    parser.add_argument("--timeout", type=int, default=300, help="seconds per case")
    parser.add_argument("--json", default=None, help="where the result goes")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--names", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.names.split(","), args.out, args.timeout)
    wanted_ops = set(args.ops.split(",")) - {""}
    tmp = ROOT / ".onnx-conformance-tmp"
    tmp.mkdir(exist_ok=True)
    report = {"benchmark": "onnx_conformance", "device": device_name(),
              "command": "python benchmarks/onnx_conformance.py " + " ".join(argv or sys.argv[1:]), "kinds": {}}
    start = time.time()
    for kind in args.kinds.split(","):
        cases = conformance.load_cases(kind)
        rows, run = [], []
        for case in cases:
            op = conformance.primary_op(case) if kind == "node" else kind
            if wanted_ops and op not in wanted_ops or args.cases and not re.search(args.cases, case.name):
                continue
            reason = conformance.skip_reason(case) if kind == "node" else conformance.model_skip_reason(case)
            rows.append({"case": case.name, "op": op, "status": "skip" if reason else None, "reason": reason or ""})
            if not reason:
                run.append(case.name)
        results = _run_all(kind, run, args.jobs, args.timeout, tmp)
        for row in rows:
            if row["status"] is None:
                record = results[row["case"]]
                row.update(status=record["status"], reason=record["reason"], seconds=record["seconds"])
        counted = [r for r in rows if r["status"] != "skip"]
        passed = sum(r["status"] == "pass" for r in counted)
        report["kinds"][kind] = {"counted": len(counted), "passed": passed,
                                 "pass_rate": round(passed / len(counted), 4) if counted else None,
                                 "cases": rows}
        _table(kind, rows)
        print(f"{kind}: {passed}/{len(counted)} counted cases pass "
              f"({100 * passed / max(len(counted), 1):.1f}%), {len(rows) - len(counted)} skipped\n")
    report["seconds"] = round(time.time() - start, 1)
    out = Path(args.json) if args.json else \
        ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-{device_name()}-onnx.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out} in {report['seconds']} s")


def _table(kind: str, rows: list) -> None:
    by_op = collections.defaultdict(collections.Counter)
    for r in rows:
        by_op[r["op"]][r["status"]] += 1
    print(f"{kind:<28} {'pass':>5} {'fail':>5} {'error':>5} {'skip':>5}")
    for op in sorted(by_op):
        c = by_op[op]
        if sum(c[s] for s in ("pass", "fail", "error")) == 0:
            continue
        print(f"{op:<28} {c['pass']:>5} {c['fail']:>5} {c['error']:>5} {c['skip']:>5}")
    for r in rows:
        if r["status"] in ("fail", "error"):
            print(f"  {r['status']:<5} {r['case']}: {r['reason']}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
