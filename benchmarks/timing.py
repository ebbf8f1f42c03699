"""Shared by the benchmark scripts: best-of-N wall time, and the verdict on each printed target."""

from __future__ import annotations

import time
from collections.abc import Callable


def best(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds (the least disturbed by a noisy machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class Targets:
    """The targets a benchmark prints, each met or missed; the script exits 1 if any was missed."""

    def __init__(self) -> None:
        self.checked: list[str] = []
        self.missed: list[str] = []

    def verdict(self, what: str, met: bool, target: str) -> str:
        """``PASS (target …)`` or ``FAIL (target …)``, printed beside the number; a miss is kept."""
        self.checked.append(what)
        if not met:
            self.missed.append(what)
        return f"{'PASS' if met else 'FAIL'} (target {target})"

    def finish(self) -> int:
        """Print the summary line; the exit status: 0 every target met, 1 any missed."""
        if self.missed:
            print(f"FAIL: {len(self.missed)} of {len(self.checked)} targets missed: {'; '.join(self.missed)}")
            return 1
        print(f"PASS: all {len(self.checked)} targets met")
        return 0
