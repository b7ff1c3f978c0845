"""`python -m kgen.fuzz`: fuzz open-ended, shrink what fails, print a summary, write JSON.

    python -m kgen.fuzz --minutes 30 --jobs 2                 # seeds from the clock
    python -m kgen.fuzz --seed 100000 --programs 5000 --jobs 2
    python -m kgen.fuzz --replay fuzz-failures/NAME.json      # one saved program again

Programs run in child processes (kgen/fuzz/pool.py). Failures are grouped by signature
(kgen/fuzz/runner.py); the smallest program of each group is shrunk (kgen/fuzz/shrink.py)
and written as a reproducer under --out (default fuzz-failures/, git-ignored). The JSON
result (default benchmarks/results/fuzz-DATE-DEVICE.json) holds the seeds, the counts, the
counts by op and every failure group with its seeds and reproducer.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from kgen.fuzz.generator import generate
from kgen.fuzz.pool import Pool
from kgen.fuzz.program import Program
from kgen.fuzz.repro import write_reproducer
from kgen.fuzz.runner import STATUSES, same_failure
from kgen.fuzz.shrink import shrink

FAILURES = ("mismatch", "refusal", "crash", "invalid")


class Tally:
    """Counts of outcomes, overall and by op, and the failures grouped by signature."""

    def __init__(self):
        self.counts = Counter()
        self.by_op = defaultdict(Counter)
        self.groups = {}  # signature -> {"status", "count", "seeds", "instances"}
        self.seconds = 0.0
        self.worst = defaultdict(list)  # comparison -> each program's largest error / tolerance

    def add(self, program: Program, outcome: dict) -> None:
        status = outcome["status"]
        self.counts[status] += 1
        self.seconds += outcome.get("seconds", 0.0)
        for pair, value in outcome.get("worst", {}).items():
            self.worst[pair].append(value)
        for op in program.ops:
            self.by_op[op]["programs"] += 1
            self.by_op[op][status] += 1
        if status == "ok":
            return
        group = self.groups.setdefault(outcome["signature"], {"status": status, "count": 0, "seeds": [],
                                                              "instances": []})
        group["count"] += 1
        if len(group["seeds"]) < 50:
            group["seeds"].append(program.seed)
        if len(group["instances"]) < 50:
            group["instances"].append((program, outcome))

    def margins(self) -> dict:
        """Per comparison, how close the programs came to their tolerance (1.0 = at it)."""
        out = {}
        for pair, values in sorted(self.worst.items()):
            v = sorted(values)
            out[pair] = {"median": v[len(v) // 2], "p99": v[min(len(v) - 1, int(0.99 * len(v)))], "max": v[-1]}
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def line(self, elapsed: float) -> str:
        rate = self.total / elapsed if elapsed else 0.0
        return (f"[{self.total:6d} programs {rate:5.2f}/s {elapsed:6.0f}s] "
                + "  ".join(f"{s} {self.counts[s]}" for s in STATUSES))

    def table(self) -> str:
        lines = [f"{'op':<22} {'programs':>8} " + " ".join(f"{s:>9}" for s in FAILURES)]
        for op in sorted(self.by_op):
            c = self.by_op[op]
            lines.append(f"{op:<22} {c['programs']:>8} " + " ".join(f"{c[s]:>9}" for s in FAILURES))
        lines.append(f"{'all':<22} {self.total:>8} " + " ".join(f"{self.counts[s]:>9}" for s in FAILURES))
        return "\n".join(lines)


def _progress(total):
    try:
        from tqdm import tqdm
        return tqdm(total=total, unit="program", file=sys.stderr)
    except ImportError:
        return None


def fuzz(seed: int, programs=None, minutes=None, jobs: int = 1, max_steps: int = 8, timeout: float = 300.0,
         log=print, through: str = "kgen") -> Tally:
    """Run programs of seeds seed, seed+1, ... until `programs` ran or `minutes` passed."""
    tally = Tally()
    start = time.monotonic()
    stop_at = start + minutes * 60 if minutes else None

    def seeds():
        k = 0
        while (programs is None or k < programs) and (stop_at is None or time.monotonic() < stop_at):
            yield generate(seed + k, max_steps)
            k += 1

    bar = _progress(programs)
    last = start
    with Pool(jobs, timeout=timeout, through=through) as pool:
        for program, outcome in pool.imap(seeds()):
            tally.add(program, outcome)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({s: tally.counts[s] for s in FAILURES if tally.counts[s]})
            elif time.monotonic() - last > 5:
                last = time.monotonic()
                log(tally.line(last - start))
            if outcome["status"] != "ok" and bar is None:
                log(f"  seed {program.seed}: {outcome['signature'][:150]}")
    if bar is not None:
        bar.close()
    log(tally.line(time.monotonic() - start))
    return tally


def shrink_groups(tally: Tally, out: Path, minutes: float, per_group: int = 3, timeout: float = 40.0,
                  log=print, through: str = "kgen") -> None:
    """Shrink up to `per_group` programs of each failure group (the smallest ones with
    different sets of ops) and write a reproducer for each distinct shrunk program (same
    signature, same ops: one class)."""

    work = []
    for signature, group in sorted(tally.groups.items(), key=lambda kv: (kv[1]["status"] == "invalid",
                                                                         -kv[1]["count"])):
        seen_ops = set()
        for program, outcome in sorted(group["instances"], key=lambda po: len(po[0].steps)):
            if tuple(program.ops) not in seen_ops and len(seen_ops) < per_group:
                seen_ops.add(tuple(program.ops))
                work.append((group, program, outcome))
        group["classes"] = {}
    deadline = time.monotonic() + minutes * 60
    with Pool(1, timeout=timeout, through=through) as pool:
        for k, (group, program, example) in enumerate(work):
            left = deadline - time.monotonic()
            shrunk, outcome = program, example
            if left > 10:
                log(f"shrinking {example['signature'][:110]} (seed {program.seed}, {len(program.steps)} steps)")

                def fails(candidate, _example=example):
                    return same_failure(pool.run(candidate), _example)

                try:
                    shrunk = shrink(program, fails, seconds=max(30.0, left / (len(work) - k)))
                except Exception as e:  # noqa: BLE001  (a shrinker bug must not lose the run's result)
                    log(f"  shrinking failed: {type(e).__name__}: {e}")
                    shrunk = program
                if shrunk is not program:
                    outcome = pool.run(shrunk)
                    if not same_failure(outcome, example):  # flaky: keep the original
                        shrunk, outcome = program, example
            key = tuple(shrunk.ops)
            if key in group["classes"]:
                group["classes"][key]["seeds"].append(program.seed)
                continue
            path = write_reproducer(shrunk, outcome, out)
            group["classes"][key] = {"ops": list(key), "seeds": [program.seed], "reproducer": str(path),
                                     "program": shrunk.to_dict(), "error": outcome.get("error", "")[:1000]}
            log(f"  -> {path} ({len(shrunk.steps)} steps: {', '.join(key)})")


def _device() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0).replace(" ", "-")
    except ImportError:
        pass
    return "cpu"


def result_json(tally: Tally, args, seed: int, elapsed: float) -> dict:
    groups = []
    for signature, g in sorted(tally.groups.items(), key=lambda kv: -kv[1]["count"]):
        example = g["instances"][0][1]
        groups.append({"signature": signature, "status": g["status"], "count": g["count"], "seeds": g["seeds"],
                       "error": example.get("error", "")[:1000],
                       "classes": list(g.get("classes", {}).values())})
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": _device(),
            "host": platform.node(), "python": platform.python_version(),
            "seeds": [seed, seed + tally.total], "programs": tally.total, "elapsed_s": round(elapsed, 1),
            "jobs": args.jobs, "max_steps": args.max_steps, "through": args.through, "counts": {s: tally.counts[s] for s in STATUSES},
            "margins": tally.margins(),
            "by_op": {op: dict(c) for op, c in sorted(tally.by_op.items())}, "failures": groups}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kgen.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, help="stop starting programs after this long")
    ap.add_argument("--programs", type=int, help="stop after this many programs")
    ap.add_argument("--seed", type=int, help="the first program's seed (default: from the clock)")
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="worker processes")
    ap.add_argument("--max-steps", type=int, default=8, help="ops drawn per program (at most)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a program counts as hung")
    ap.add_argument("--out", default="fuzz-failures", help="where reproducers go")
    ap.add_argument("--json", help="the JSON result (default benchmarks/results/fuzz-DATE-DEVICE.json)")
    ap.add_argument("--no-shrink", action="store_true", help="write failures unshrunk")
    ap.add_argument("--shrink-minutes", type=float, default=15.0, help="time for shrinking, all groups")
    ap.add_argument("--shrink-per-group", type=int, default=3, help="programs shrunk per failure signature")
    ap.add_argument("--through", choices=("kgen", "torch"), default="kgen",
                    help="build each program with kgen's API, or import its torch twin with kgen.from_torch")
    ap.add_argument("--replay", help="run one program from a reproducer's .json and print its outcome")
    args = ap.parse_args(argv)

    if args.replay:
        record = json.loads(Path(args.replay).read_text())
        with Pool(1, timeout=args.timeout, quiet=False, through=args.through) as pool:
            outcome = pool.run(Program.from_dict(record.get("program", record)))
        print(json.dumps({k: v for k, v in outcome.items() if k != "mismatches"}, indent=1))
        return 0 if outcome["status"] == "ok" else 1
    if args.minutes is None and args.programs is None:
        ap.error("give --minutes or --programs")
    seed = args.seed if args.seed is not None else int(time.time()) % 10**9
    print(f"kgen fuzz: seeds from {seed}, {args.jobs} jobs, "
          f"{f'{args.minutes} min' if args.minutes else ''}{' / ' if args.minutes and args.programs else ''}"
          f"{f'{args.programs} programs' if args.programs else ''}", flush=True)
    start = time.monotonic()
    tally = fuzz(seed, args.programs, args.minutes, args.jobs, args.max_steps, args.timeout,
                 log=lambda m: print(m, flush=True), through=args.through)
    elapsed = time.monotonic() - start
    kgen_failures = {s: g for s, g in tally.groups.items() if g["status"] != "invalid"}
    if tally.groups:
        if args.no_shrink:
            for g in tally.groups.values():
                program, outcome = g["instances"][0]
                g["classes"] = {tuple(program.ops): {"ops": program.ops, "seeds": [program.seed], "program":
                                                     program.to_dict(), "error": outcome.get("error", "")[:1000],
                                                     "reproducer": str(write_reproducer(program, outcome, args.out))}}
        else:
            shrink_groups(tally, Path(args.out), args.shrink_minutes, args.shrink_per_group,
                          log=lambda m: print(m, flush=True), through=args.through)
    print()
    print(tally.table())
    for pair, m in tally.margins().items():
        print(f"error / tolerance, {pair}: median {m['median']:.2g}, 99th percentile {m['p99']:.2g}, "
              f"max {m['max']:.2g}")
    print()
    for signature, g in sorted(tally.groups.items(), key=lambda kv: -kv[1]["count"]):
        print(f"{g['count']:5d}  {signature[:140]}\n       seeds {g['seeds'][:8]}")
        for c in g.get("classes", {}).values():
            print(f"         {c['reproducer']}  ({', '.join(c['ops'])})")
    path = Path(args.json) if args.json else \
        Path("benchmarks/results") / f"fuzz-{datetime.date.today().isoformat()}-{_device()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result_json(tally, args, seed, elapsed), indent=1, default=str))
    tmp.replace(path)
    print(f"\n{tally.total} programs (seeds {seed}..{seed + tally.total - 1}) in {elapsed:.0f} s; "
          f"{sum(g['count'] for g in kgen_failures.values())} failed in {len(kgen_failures)} groups; "
          f"result: {path}")
    return 1 if kgen_failures else 0
