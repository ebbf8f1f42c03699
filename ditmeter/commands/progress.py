"""Progress of the long steps of a command: each step is timed and reported to a callback."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

#: Called with a step's name ("build dit", "capture dit", "memory dit", "map dit", "join",
#: "write"); the context it returns spans the step (the CLI shows a spinner, then a line with the time).
Progress = Callable[[str], AbstractContextManager[None]]


@contextlib.contextmanager
def no_progress(_step: str) -> Iterator[None]:
    yield


class Steps:
    """Times each long step and reports it to ``progress``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.progress(name):
            yield
        self.seconds[name] = time.perf_counter() - start
