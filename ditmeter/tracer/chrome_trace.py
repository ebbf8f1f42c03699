"""torch.profiler Chrome traces: read one (``.json`` or ``.json.gz``) and check its events.

The reader is the json module (``docs/ingest.md`` says why not Holistic Trace
Analysis: it drops the Python ids a module tree needs and rounds timestamps
into negative durations). Only complete events (``ph == "X"``) are used; every
one that is used must carry a finite ``ts`` and a finite, non-negative ``dur``
in microseconds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ditmeter.errors import ConfigError
from ditmeter.files import TRACE_LIMIT_BYTES, load_json

#: Event categories of device work: what a GPU ran.
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
#: Event categories of the host-side launches that name a kernel's ``correlation``.
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
#: The top-level key under which ``ditmeter profile`` says, in its own trace, what it ran (model,
#: blocks, workload, pipeline, latent shape); a Chrome trace viewer ignores keys it does not know.
RUN_KEY = "ditmeter"


class TraceFormatError(ValueError):
    """The file is not a torch.profiler Chrome trace (or lacks what the reader needs)."""


def timed(i: int, e: Any) -> tuple[float, float]:
    """An event's start and duration in microseconds: finite numbers, the duration >= 0."""
    values = []
    for key in ("ts", "dur"):
        value = e.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        huge = number and isinstance(value, int) and abs(value) > 2**63  # JSON's integers have no bound
        if not number or huge or not math.isfinite(value) or (key == "dur" and value < 0):
            # JSON's 1e999, Infinity and NaN read as non-finite floats: named, never printed as inf/nan
            if huge:
                shown = "an integer past 2^63"
            else:
                shown = repr(value) if not number or math.isfinite(value) else "not a finite number"
            raise TraceFormatError(
                f"complete event {i} ({e.get('name', '?')!r}) has no valid {key!r}: {shown}"
            )
        values.append(float(value))
    return values[0], values[1]


def load_trace(path: Path) -> Any:
    """The parsed JSON of a Chrome trace; gzip-compressed when the file starts with gzip's magic
    bytes (``trace.json.gz``, as ``tensorboard_trace_handler(use_gzip=True)`` writes it). A regular
    file of at most :data:`~ditmeter.files.TRACE_LIMIT_BYTES`, also once decompressed."""
    try:
        return load_json(path, "trace", TRACE_LIMIT_BYTES)
    except ConfigError as exc:  # the callers name their own key (trace=, profile.trace=)
        raise TraceFormatError(exc.message) from None


def complete_events(data: Any, path: Path) -> list[dict[str, Any]]:
    """The complete (``ph == "X"``) events of a loaded trace; refuses what is no Chrome trace."""
    events = data.get("traceEvents") if isinstance(data, dict) else None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise TraceFormatError(f"{path} has no traceEvents list of events (not a Chrome trace)")
    return [e for e in events if e.get("ph") == "X"]


def args_of(e: dict[str, Any]) -> dict[str, Any]:
    """An event's ``args`` (an empty mapping when it has none or they are not a mapping)."""
    a = e.get("args")
    return a if isinstance(a, dict) else {}


def recorded_run(data: Any) -> dict[str, Any] | None:
    """What a loaded trace says about the ditmeter run that recorded it (:data:`RUN_KEY`); None for
    a trace recorded otherwise."""
    run = data.get(RUN_KEY) if isinstance(data, dict) else None
    return run if isinstance(run, dict) else None
