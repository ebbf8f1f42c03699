"""Measured time per traced node: one forward under ``torch.profiler``, read back from its Chrome trace.

The forward runs under the same recorder as ``capture_forward`` with
``annotate=True``: each aten op sits in a ``record_function`` range named
``ditmeter::<node>``, and the whole forward in ``ditmeter.forward``. The
profiler's Chrome trace is then read back (the same reader ingests a trace a
user recorded the same way):

* CPU time of a node: its range's duration.
* GPU time of a node: the durations of the kernels (and memcpy/memset) whose
  launching runtime call (``cudaLaunchKernel`` …, matched by ``correlation``)
  lies inside the node's range on the same thread.

NB: a node's CPU range includes the dispatcher and allocator work of that op;
the recorder's own bookkeeping runs outside the ranges.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import fx, nn

from ditmeter.files import available_memory_bytes
from ditmeter.tracer.capture import NODE_RANGE_PREFIX, capture_forward, range_node
from ditmeter.tracer.chrome_trace import (
    DEVICE_CATS,
    LAUNCH_CATS,
    RUN_KEY,
    TraceFormatError,
    complete_events,
    load_trace,
)
from ditmeter.tracer.chrome_trace import timed as _timed

__all__ = ["FORWARD_RANGE", "NodeTimes", "TraceFormatError", "profile_forward", "read_chrome_trace"]

#: The range around the whole profiled forward.
FORWARD_RANGE = "ditmeter.forward"


@attrs.frozen
class NodeTimes:
    """Seconds per node name, and the forward's own totals."""

    cpu_s: dict[str, float]
    device_s: dict[str, float]
    forward_cpu_s: float
    forward_device_s: float  # summed kernel time of the whole forward (0 on CPU)

    def time_s(self, node: str) -> float:
        """The node's time on the device that ran it: GPU time when there is any, else CPU."""
        return self.device_s.get(node, 0.0) if self.forward_device_s else self.cpu_s.get(node, 0.0)

    @property
    def forward_s(self) -> float:
        return self.forward_device_s or self.forward_cpu_s


def read_chrome_trace(path: Path) -> NodeTimes:
    """Per-node CPU and GPU seconds from a torch.profiler Chrome trace (see the module docstring).

    An event this reader uses must have a finite ``ts`` and a finite, non-negative ``dur``.
    """
    return _node_times(load_trace(path), path)


def _node_times(data: Any, path: Path) -> NodeTimes:
    """:func:`read_chrome_trace` of the trace ``data`` already loaded from ``path``."""
    events = list(enumerate(complete_events(data, path)))
    ranges: dict[Any, list[tuple[float, float, str]]] = defaultdict(list)
    cpu: dict[str, float] = {}
    forward = None
    for i, e in events:
        if e.get("cat") != "user_annotation":
            continue
        name = str(e.get("name", ""))
        if name == FORWARD_RANGE:
            forward = _timed(i, e)[1] * 1e-6
        elif name.startswith(NODE_RANGE_PREFIX):
            node = range_node(name)
            ts, dur = _timed(i, e)
            ranges[(e.get("pid"), e.get("tid"))].append((ts, ts + dur, node))
            cpu[node] = cpu.get(node, 0.0) + dur * 1e-6
    if forward is None or not cpu:
        raise TraceFormatError(f"{path} has no {FORWARD_RANGE!r} range or no {NODE_RANGE_PREFIX}* ranges")
    for spans in ranges.values():
        spans.sort()
    launcher: dict[Any, str] = {}
    for i, e in events:
        if e.get("cat") in LAUNCH_CATS:
            corr = (e.get("args") or {}).get("correlation")
            spans = ranges.get((e.get("pid"), e.get("tid")), [])
            ts = _timed(i, e)[0]
            j = bisect.bisect_right(spans, (ts, float("inf"), "")) - 1
            if corr is not None and j >= 0 and spans[j][0] <= ts <= spans[j][1]:
                launcher[corr] = spans[j][2]
    device: dict[str, float] = {}
    device_total = 0.0
    for i, e in events:
        if e.get("cat") in DEVICE_CATS:
            dur = _timed(i, e)[1] * 1e-6
            device_total += dur
            owner = launcher.get((e.get("args") or {}).get("correlation"))
            if owner is not None:
                device[owner] = device.get(owner, 0.0) + dur
    return NodeTimes(cpu, device, forward, device_total)


def available_bytes(device_kind: str) -> int:
    """Free memory on the device a profile runs on: the GPU's free bytes, or the machine's available
    RAM (``MemAvailable`` in /proc/meminfo; the physical pages where that file does not exist)."""
    if device_kind == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return int(free)
    available = available_memory_bytes()
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) if available is None else available


#: The lines libkineto (torch's profiler) writes on stderr at each start and stop, whatever its log level.
KINETO_LINES = ("USDT:", "STAGE:")


@contextlib.contextmanager
def _without_kineto_lines() -> Iterator[None]:
    """Standard error (file descriptor 2, where libkineto writes) into a temporary file while the
    profiler runs; then every line but libkineto's own goes back to standard error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not line.startswith(KINETO_LINES)))


def profile_forward(
    model: nn.Module,
    inputs: Mapping[str, Any],
    trace_path: Path,
    *,
    device_kind: str,
    warmup: int,
    name_prefix: str = "",
    run: Mapping[str, Any] | None = None,
) -> tuple[fx.Graph, NodeTimes]:
    """Warm up, then profile one recorded forward; the Chrome trace is written to ``trace_path``.

    Each op's range (and so its key in the returned times) is ``name_prefix`` + its node name.
    ``run`` (what ran: model, blocks, workload …) is written into the trace under
    :data:`~ditmeter.tracer.chrome_trace.RUN_KEY`, for ``ditmeter ingest`` to read back.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    with torch.no_grad():
        for _ in range(warmup):
            model(**inputs)
    if device_kind == "cuda":
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_kind == "cuda" else [])
    # with_stack and record_shapes: what `ditmeter ingest` needs to place the ops in their modules
    # and count their FLOPs, so the run's own trace can be ingested (NB: they add the profiler's
    # bookkeeping between the ops, and the trace is tens of MB for a few blocks)
    with (
        _without_kineto_lines(),
        profile(activities=activities, with_stack=True, record_shapes=True) as prof,
        record_function(FORWARD_RANGE),
    ):
        graph = capture_forward(model, inputs, annotate=name_prefix)
        if device_kind == "cuda":
            torch.cuda.synchronize()
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    data = load_trace(trace_path)
    annotate_trace(data, graph, name_prefix)
    if run is not None:
        data[RUN_KEY] = dict(run)
    trace_path.write_text(json.dumps(data), encoding="utf-8")
    return graph, _node_times(data, trace_path)


def annotate_trace(data: Any, graph: fx.Graph, name_prefix: str = "") -> None:
    """Give every ``ditmeter::`` range of the Chrome trace ``data`` its node's counts as args
    (``module_path``, ``op``, ``flops``, ``bytes_in``, ``bytes_out``), read in Perfetto beside the
    range's own timing."""
    meta = {name_prefix + n.name: n for n in graph.nodes}
    for e in data.get("traceEvents", []):
        name = str(e.get("name", ""))
        if e.get("cat") == "user_annotation" and name.startswith(NODE_RANGE_PREFIX):
            node = meta.get(range_node(name))
            if node is not None:
                m = node.meta
                e["args"] = {
                    **(e.get("args") or {}),
                    "module_path": m.get("module_path", ""),
                    "op": str(node.target),
                    "flops": int(m.get("flops", 0)),
                    "bytes_in": int(m.get("bytes_in", 0)),
                    "bytes_out": int(m.get("bytes_out", 0)),
                }
