"""Peak memory per GPU through one video: report.json's ``memory``, summary.md's memory section
and the terminal lines (``memory_timeline.png`` is drawn in :mod:`ditmeter.reports.plots`)."""

from __future__ import annotations

from typing import Any

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.memory import CUDA_CONTEXT_SOURCE, TIMELINE_SCOPE, Timeline
from ditmeter.reports.format import binary_bytes
from ditmeter.reports.table_model import Column, Table, table, to_markdown


def _activation(value: int | None) -> str:
    return "not modeled" if value is None else binary_bytes(value)


def memory_json(analysis: Analysis, device: DeviceSpec | None) -> dict[str, Any]:
    """The ``memory`` section: the peak per GPU, the timeline, the DiT's live set, the fit."""
    t, f = analysis.memory, analysis.footprint
    peak = t.peak_phase
    out: dict[str, Any] = {
        "peak_per_gpu_bytes": t.peak_per_gpu_bytes,
        "peak_live_bytes": t.peak_live_bytes,
        "peak_stage": peak.stage,
        "overhead_bytes": t.overhead_bytes,
        "overhead_source": CUDA_CONTEXT_SOURCE,
        "offload": {"model": t.offload_model, "t5_cpu": t.t5_cpu},
        "components": {
            name: {"weights_by_dtype": w, "weight_bytes": sum(w.values())} for name, w in t.components.items()
        },
        "timeline": [
            {
                "stage": p.stage,
                "resident_bytes": p.resident,
                "weight_bytes": p.weight_bytes,
                "activation_bytes": p.activation_bytes,
                "activation_modeled": p.activation_bytes is not None,
                "total_bytes": p.live_bytes,
            }
            for p in t.phases
        ],
        "dit_activation": {
            "peak_bytes": f.peak_activation_bytes,
            "persistent_bytes": f.persistent_bytes,
            "phase_bytes": f.stage_bytes,
            "peak_phase": f.peak_stage,
        },
        "scope": TIMELINE_SCOPE,
    }
    if device is not None:
        out["device_memory_bytes"] = device.memory_bytes
        out["fits"] = t.fits(device)
    return out


def timeline_table(t: Timeline) -> Table:
    rows = [
        (
            p.stage,
            ", ".join(f"{c} {binary_bytes(b)}" for c, b in p.resident.items()) or "none",
            _activation(p.activation_bytes),
            binary_bytes(p.live_bytes) + (" ← peak" if p is t.peak_phase else ""),
        )
        for p in t.phases
    ]
    columns = (Column("stage"), Column("weights on the GPU"), Column("activations"), Column("total"))
    return table("memory timeline (one GPU)", columns, rows)


def fit_line(t: Timeline, device: DeviceSpec | None) -> str:
    """``peak per GPU X (stage) [of CAPACITY → fits]`` (GiB = 2³⁰ bytes)."""
    line = (
        f"peak per GPU {binary_bytes(t.peak_per_gpu_bytes)} at {t.peak_phase.stage} "
        f"({binary_bytes(t.peak_live_bytes)} live + {binary_bytes(t.overhead_bytes)} CUDA context)"
    )
    if device is None:
        return line
    verdict = "fits" if t.fits(device) else "DOES NOT FIT"
    return f"{line} of {binary_bytes(device.memory_bytes)} on {device.display_name} → {verdict}"


def summary_lines(analysis: Analysis, device: DeviceSpec | None) -> list[str]:
    """The "Memory" section of summary.md."""
    t, f = analysis.memory, analysis.footprint
    offload = f"offload.model={str(t.offload_model).lower()}, offload.t5_cpu={str(t.t5_cpu).lower()}"
    return [
        f"- **{fit_line(t, device)}** ({offload})",
        f"- DiT forward live activations: {binary_bytes(f.peak_activation_bytes)} "
        f"({binary_bytes(f.persistent_bytes)} persistent + the {f.peak_stage} phase; flash attention)",
        "",
        *to_markdown(timeline_table(t)),
        "",
        TIMELINE_SCOPE,
        *(["", "![memory timeline](memory_timeline.png)"] if device is not None else []),
    ]
