"""What `kgen tune` shows while it works: a line per phase (which kernels, how many
candidates), and, on a terminal, a tqdm bar over the candidates being compiled or timed.
The tuner calls `progress(message)` and, where the progress has it, `count(total, what)`
for a tick() per finished candidate (kgen.autotune.tuner.tune_program)."""
from __future__ import annotations

import sys


class Progress:
    """Lines to `stream` (stderr), and a bar per batch of candidates when `bar` (default:
    when the stream is a terminal and tqdm is installed, as for fit's progress)."""

    def __init__(self, stream=None, bar: bool = None):
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._open = None

    def __call__(self, message: str) -> None:
        self._close()
        print(f"  {message}", file=self.stream, flush=True)

    def count(self, total: int, what: str):
        """A tick() for `total` candidates, drawn as a bar; None where there is no bar."""
        self._close()
        if not self.bar:
            return None
        try:
            # tqdm only here: the display needs it, `import kgen` does not
            from tqdm import tqdm
        except ImportError:
            return None
        self._open = tqdm(total=total, desc=f"  {what}", unit="candidate", file=self.stream, leave=False,
                          dynamic_ncols=True)
        return lambda: self._open.update(1) if self._open is not None else None

    def _close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None

    def close(self) -> None:
        self._close()
