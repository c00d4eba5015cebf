"""A minimal progress line on stderr, shown only when asked for (the CLI asks when stderr is a terminal)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts steps of a long job and redraws one stderr line at most ten times a second; the last one gives the
    seconds it took."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.done, self._last, self._start = 0, 0.0, time.monotonic()

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            sys.stderr.write(f"\r{self.label}: {self.done}/{self.total}")
            if self.done >= self.total:  # the finished line also says how long the step took
                sys.stderr.write(f" ({now - self._start:.2f} s)\n")
            sys.stderr.flush()
