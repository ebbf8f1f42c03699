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
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import fx, nn

from ditmeter.tracer.capture import NODE_RANGE_PREFIX, capture_forward

#: The range around the whole profiled forward.
FORWARD_RANGE = "ditmeter.forward"
_DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


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


class TraceFormatError(ValueError):
    """The file is not a torch.profiler Chrome trace with ditmeter's ranges."""


def read_chrome_trace(path: Path) -> NodeTimes:
    """Per-node CPU and GPU seconds from a torch.profiler Chrome trace (see the module docstring)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TraceFormatError(f"cannot read {path} as JSON: {exc}") from exc
    events = data.get("traceEvents") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise TraceFormatError(f"{path} has no traceEvents list (not a Chrome trace)")
    ranges: dict[Any, list[tuple[float, float, str]]] = defaultdict(list)
    cpu: dict[str, float] = {}
    forward = None
    for e in events:
        if e.get("ph") != "X" or e.get("cat") != "user_annotation":
            continue
        name = str(e.get("name", ""))
        if name == FORWARD_RANGE:
            forward = float(e["dur"]) * 1e-6
        elif name.startswith(NODE_RANGE_PREFIX):
            node = name[len(NODE_RANGE_PREFIX) :]
            ts, dur = float(e["ts"]), float(e["dur"])
            ranges[(e.get("pid"), e.get("tid"))].append((ts, ts + dur, node))
            cpu[node] = cpu.get(node, 0.0) + dur * 1e-6
    if forward is None or not cpu:
        raise TraceFormatError(f"{path} has no {FORWARD_RANGE!r} range or no {NODE_RANGE_PREFIX}* ranges")
    for spans in ranges.values():
        spans.sort()
    launcher: dict[Any, str] = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver"):
            corr = (e.get("args") or {}).get("correlation")
            spans = ranges.get((e.get("pid"), e.get("tid")), [])
            i = bisect.bisect_right(spans, (float(e["ts"]), float("inf"), "")) - 1
            if corr is not None and i >= 0 and spans[i][0] <= float(e["ts"]) <= spans[i][1]:
                launcher[corr] = spans[i][2]
    device: dict[str, float] = {}
    device_total = 0.0
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in _DEVICE_CATS:
            dur = float(e["dur"]) * 1e-6
            device_total += dur
            owner = launcher.get((e.get("args") or {}).get("correlation"))
            if owner is not None:
                device[owner] = device.get(owner, 0.0) + dur
    return NodeTimes(cpu, device, forward, device_total)


def profile_forward(
    model: nn.Module,
    inputs: Mapping[str, Any],
    trace_path: Path,
    *,
    device_kind: str,
    warmup: int,
    name_prefix: str = "",
) -> tuple[fx.Graph, NodeTimes]:
    """Warm up, then profile one recorded forward; the Chrome trace is written to ``trace_path``.

    Each op's range (and so its key in the returned times) is ``name_prefix`` + its node name.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    with torch.no_grad():
        for _ in range(warmup):
            model(**inputs)
    if device_kind == "cuda":
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_kind == "cuda" else [])
    with profile(activities=activities) as prof, record_function(FORWARD_RANGE):
        graph = capture_forward(model, inputs, annotate=name_prefix)
        if device_kind == "cuda":
            torch.cuda.synchronize()
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    return graph, read_chrome_trace(trace_path)
