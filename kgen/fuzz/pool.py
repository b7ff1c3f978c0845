"""Running programs in child processes, so that a kernel that kills its interpreter (a
segfault on a bad mask) or hangs costs one program, not the run.

Each worker is a fresh process (spawned: no state shared with the parent) that runs
programs one after another and sends back their outcomes. A worker that dies mid-program
counts that program as a crash (signature "crash:process:<signal>") and is replaced; one
that takes longer than `timeout` seconds is killed and the program counts as a crash
("crash:timeout"). Workers are replaced after `recycle` programs to bound their memory.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import signal
import tempfile
import time
from multiprocessing.connection import wait

from kgen.fuzz.program import Program


def _serve(conn, quiet: bool, crash_log: str, through: str = "kgen") -> None:
    """A worker's loop: receive a program (as a dict), send back its outcome; None stops.
    A fatal signal writes the Python stack to `crash_log` (faulthandler). `through`: how the
    program is built (kgen/fuzz/runner.py, run_program)."""
    import faulthandler
    log = open(crash_log, "w")
    faulthandler.enable(log)
    faulthandler.register(signal.SIGUSR1, log)  # the parent asks where a hung program is
    if quiet:  # the interpreter and NumPy may print; keep the parent's progress readable
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    import warnings
    warnings.simplefilter("ignore")
    import torch
    torch.set_num_threads(1)
    from kgen.fuzz.runner import run_program  # in the worker, once its output is silenced and torch set up
    while True:
        message = conn.recv()
        if message is None:
            return
        conn.send(run_program(Program.from_dict(message), through))


def crash_site(text: str) -> str:
    """Where a fatal signal struck (or a hang was), from faulthandler's stack: the generated
    kernel's kind and the innermost function ("pointwise:create_masked_load"), or else the
    innermost frame of kgen itself ("lowering/fusion.py:_launch_order")."""
    frames = re.findall(r'File "([^"]+)", line \d+ in (\S+)', text)
    if not frames:
        return ""
    kernel = next((re.sub(r"^k\d+_", "", fn) for path, fn in frames if re.match(r"k\d+_\w+$", fn)), "")
    if kernel:
        return f"{kernel}:{frames[0][1]}"
    own = [(path.split("/kgen/")[-1], fn) for path, fn in frames if "/kgen/" in path and "/kgen/fuzz/" not in path]
    return f"{own[0][0]}:{own[0][1]}" if own else frames[0][1]


def died(program: Program, exitcode, seconds: float, timed_out: bool = False, stack: str = "") -> dict:
    if timed_out:
        why, signature = f"no result after {seconds:.0f} s (killed)", "crash:timeout"
    else:
        name = signal.Signals(-exitcode).name if exitcode is not None and exitcode < 0 else f"exit {exitcode}"
        why, signature = f"the process running the program died ({name})", f"crash:process:{name}"
    site = crash_site(stack)
    if site:
        signature += f"@{site}"
    if stack:
        why += "\n" + "\n".join(line for line in stack.splitlines() if line.strip().startswith("File"))[:3000]
    return {"seed": program.seed, "ops": program.ops, "steps": len(program.steps), "symbolic": bool(program.sizes),
            "status": "crash", "stage": "process", "signature": signature, "error": why,
            "seconds": round(seconds, 3)}


class _Worker:
    def __init__(self, context, quiet: bool, through: str):
        self.conn, child = context.Pipe()
        fd, self.crash_log = tempfile.mkstemp(prefix="kgen-fuzz-crash-", suffix=".txt")
        os.close(fd)
        self.process = context.Process(target=_serve, args=(child, quiet, self.crash_log, through), daemon=True)
        self.process.start()
        child.close()
        self.done = 0
        self.job = None  # (program, start time)

    def stop(self, kill: bool = False) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5 if not kill else None)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        try:
            os.unlink(self.crash_log)
        except OSError:
            pass

    def stack(self) -> str:
        """What faulthandler wrote when the worker died (if it did)."""
        try:
            with open(self.crash_log) as f:
                return f.read()
        except OSError:
            return ""


class Pool:
    """`jobs` worker processes; `imap(programs)` yields (program, outcome) as they finish."""

    def __init__(self, jobs: int = 1, timeout: float = 300.0, recycle: int = 150, quiet: bool = True,
                 through: str = "kgen"):
        self.context = multiprocessing.get_context("spawn")
        self.jobs, self.timeout, self.recycle, self.quiet = max(1, jobs), timeout, recycle, quiet
        self.through = through
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for w in self.workers:
            w.stop(kill=w.job is not None)
        self.workers = []

    def _fresh(self) -> _Worker:
        return _Worker(self.context, self.quiet, self.through)

    def imap(self, programs):
        programs = iter(programs)
        while len(self.workers) < self.jobs:
            self.workers.append(self._fresh())
        exhausted = False
        while True:
            for w in self.workers:
                if w.job is None and not exhausted:
                    program = next(programs, None)
                    if program is None:
                        exhausted = True
                        break
                    w.job = (program, time.perf_counter())
                    w.conn.send(program.to_dict())
            busy = [w for w in self.workers if w.job is not None]
            if not busy:
                return
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
            for k, w in enumerate(self.workers):
                if w.job is None:
                    continue
                program, start = w.job
                elapsed = time.perf_counter() - start
                outcome, replace = None, False
                if w.conn in ready:
                    try:
                        outcome = w.conn.recv()
                    except (EOFError, OSError):
                        w.process.join(timeout=5)
                        outcome, replace = died(program, w.process.exitcode, elapsed, stack=w.stack()), True
                elif w.process.sentinel in ready or not w.process.is_alive():
                    w.process.join(timeout=5)
                    outcome, replace = died(program, w.process.exitcode, elapsed, stack=w.stack()), True
                elif elapsed > self.timeout:
                    try:
                        os.kill(w.process.pid, signal.SIGUSR1)
                        time.sleep(1.0)
                    except OSError:
                        pass
                    outcome, replace = died(program, None, elapsed, timed_out=True, stack=w.stack()), True
                if outcome is None:
                    continue
                w.job = None
                w.done += 1
                if replace or w.done >= self.recycle:
                    w.stop(kill=replace)
                    self.workers[k] = self._fresh()
                yield program, outcome

    def run(self, program: Program) -> dict:
        """One program's outcome."""
        for _, outcome in self.imap([program]):
            return outcome
