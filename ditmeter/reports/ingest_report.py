"""What ``ditmeter ingest`` writes and shows besides the usual run files: ``ops.parquet``,
``kernels.parquet``, ``ingest.png``, the "Measured run" section of ``summary.md`` and its
terminal tables.

Measured times are per run of each stage (per forward for the DiT): the total
the trace holds divided by the runs found in it. GPU time where the trace has
GPU events, else the ops' CPU time (a CPU run, or a trace without CUDA activity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pandas as pd
import pyarrow as pa

from ditmeter.reports.device_report import measured_by_category, measured_table
from ditmeter.reports.format import percent, seconds, si
from ditmeter.reports.table_model import Column, Table, table, to_markdown

#: Files ``ingest`` writes besides the report files.
INGEST_FILES = ("ops.parquet", "kernels.parquet", "ingest.png")

#: ops.parquet: one row per top-level op of the trace, in time order.
OPS_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string()),  # null: outside every stage's root module
        pa.field("run", pa.int64()),  # the stage's root call the op ran under (a call index)
        pa.field("op", pa.string(), nullable=False),  # the profiler's name, e.g. aten::linear
        pa.field("module_path", pa.string()),  # in the stage's real module ("" = its root)
        pa.field("cpu_time_s", pa.float64(), nullable=False),
        pa.field("gpu_time_s", pa.float64(), nullable=False),  # its kernels, memcpys and memsets
        pa.field("kernel_count", pa.int64(), nullable=False),
        pa.field("kernels", pa.string(), nullable=False),  # JSON list of distinct kernel names
        # torch's formulas on the recorded shapes (matmul, attention, convolution); null: none apply
        pa.field("flops", pa.int64()),
        pa.field("thread", pa.string(), nullable=False),  # "pid:tid"
        pa.field("ts_us", pa.float64(), nullable=False),  # the profiler's clock
        pa.field("time_s", pa.float64(), nullable=False),  # gpu_time_s on a GPU trace, else cpu_time_s
        pa.field("module_id", pa.string()),
        pa.field("leaf_id", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("category", pa.string()),
        pa.field("mapping", pa.string()),
        # costed | zero | unmatched (mapped stage); whole (a stage measured whole); outside
        pa.field("status", pa.string(), nullable=False),
    ]
)

#: kernels.parquet: one row per (stage, module, kernel name).
KERNELS_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string()),
        pa.field("module_id", pa.string()),  # the leaf (or the stage, measured whole); null outside
        pa.field("kernel", pa.string(), nullable=False),
        pa.field("cat", pa.string(), nullable=False),  # kernel | gpu_memcpy | gpu_memset
        pa.field("count", pa.int64(), nullable=False),
        pa.field("gpu_time_s", pa.float64(), nullable=False),  # over the whole trace
        pa.field("communication", pa.bool_(), nullable=False),
    ]
)


@attrs.frozen
class FlopsCheck:
    """A stage's FLOPs the trace shows (torch's formulas on its recorded shapes) against the
    analytic tensor FLOPs: per run, and for a stage mapped leaf by leaf the leaves whose totals
    over the trace differ."""

    trace_per_run: float
    analytic_per_run: int
    equal: bool  # the totals over the trace, exactly
    leaves: int  # leaves with FLOPs on either side (0: the stage is measured whole)
    differing: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "differing": list(self.differing)}


@attrs.frozen
class StageRuns:
    stage: str
    root_calls: int
    runs: float  # root calls / calls per run (a VAE run calls its root once per chunk)
    measured_per_run_s: float  # its ops' time (GPU, or CPU on a CPU trace)
    wall_per_run_s: float  # its root calls' wall time on the host, Python and launches included
    predicted_per_run_s: float | None
    flops: FlopsCheck | None = None  # None: no op of the stage has a FLOP formula


@attrs.frozen
class IngestSummary:
    """What one ingested trace says, for report.json ``ingest``, summary.md and the terminal."""

    trace: str
    device_names: tuple[str, ...]
    time_source: str  # "gpu" or "cpu"
    span_s: float  # the trace's first event to its last
    ops: int
    device_events: int
    forwards: int
    forwards_per_step: int
    stages: tuple[StageRuns, ...]
    measured_forward_s: float | None
    predicted_forward_s: float | None
    gpu_busy_s: float | None  # the union of GPU events
    gpu_window_s: float | None  # first GPU event to last
    comm_s: float | None  # communication kernels
    outside_s: float  # ops outside every stage's root module
    unlinked_gpu_s: float | None  # GPU events no op of the trace launched (another thread, a graph)
    unresolved_calls: int
    unmatched_ops: int
    unmatched_s: float
    flops: FlopsCheck | None = None

    @property
    def steps(self) -> float:
        return self.forwards / self.forwards_per_step

    @property
    def gpu_idle_s(self) -> float | None:
        if self.gpu_busy_s is None or self.gpu_window_s is None:
            return None
        return max(self.gpu_window_s - self.gpu_busy_s, 0.0)

    def as_json(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["device_names"] = list(self.device_names)
        out["stages"] = [attrs.asdict(s) for s in self.stages]
        out["flops"] = (
            None
            if self.flops is None
            else {**attrs.asdict(self.flops), "differing": list(self.flops.differing)}
        )
        out["steps"] = self.steps
        out["gpu_idle_s"] = self.gpu_idle_s
        out["predicted_ratio"] = _ratio(self.predicted_forward_s, self.measured_forward_s)
        return out


def _ratio(predicted: float | None, measured: float | None) -> float | None:
    return predicted / measured if predicted is not None and measured else None


def _maybe(value: float | None) -> str:
    return "-" if value is None else seconds(value)


def _flops_cell(f: FlopsCheck | None) -> str:
    if f is None:
        return "-"
    if f.equal and not f.differing:
        return f"exact, {f.leaves} leaves"
    ratio = f"{si(f.trace_per_run, 'FLOP')} / {si(f.analytic_per_run, 'FLOP')}"
    return f"no: {ratio}, {len(f.differing)} leaves differ"


def stage_table(s: IngestSummary) -> Table:
    columns = (
        Column("stage", "left", code=True),
        Column("runs found"),
        Column("measured / run"),
        Column("host wall / run"),
        Column("predicted / run"),
        Column("predicted / measured"),
        Column("FLOPs check"),
    )
    rows = [
        (
            r.stage,
            f"{r.runs:g}",
            seconds(r.measured_per_run_s),
            seconds(r.wall_per_run_s),
            _maybe(r.predicted_per_run_s),
            "-" if (q := _ratio(r.predicted_per_run_s, r.measured_per_run_s)) is None else f"{q:.3g}",
            _flops_cell(r.flops),
        )
        for r in s.stages
    ]
    return table("stages found in the trace", columns, rows)


def headline(s: IngestSummary) -> list[str]:
    """The facts of the trace, one per line (summary.md and the terminal)."""
    where = f"GPU time ({', '.join(s.device_names) or 'GPU'})" if s.time_source == "gpu" else "CPU time"
    steps = f"{s.steps:g} step{'' if s.steps == 1 else 's'}" + (
        "" if float(s.steps).is_integer() else " (a part of a step)"
    )
    lines = [
        f"Trace `{s.trace}`: {s.ops:,} top-level ops, {s.device_events:,} GPU events over "
        f"{seconds(s.span_s)}; times are {where}.",
        f"Found {s.forwards} DiT forward{'' if s.forwards == 1 else 's'} = {steps} at {s.forwards_per_step} "
        f"forward{'' if s.forwards_per_step == 1 else 's'} per step.",
    ]
    if s.measured_forward_s is not None:
        ratio = _ratio(s.predicted_forward_s, s.measured_forward_s)
        pred = (
            f"; predicted {seconds(s.predicted_forward_s)} (predicted / measured {ratio:.3g})"
            if s.predicted_forward_s is not None and ratio is not None
            else ""
        )
        machines = (
            " (a CPU trace against a GPU's prediction: the ratio compares two machines)"
            if pred and s.time_source == "cpu"
            else ""
        )
        lines.append(f"DiT forward: {seconds(s.measured_forward_s)} measured (mean){pred}{machines}.")
    if s.gpu_busy_s is not None and s.gpu_window_s is not None and s.comm_s is not None:
        idle = s.gpu_idle_s or 0.0
        lines.append(
            f"GPU busy {seconds(s.gpu_busy_s)} of the {seconds(s.gpu_window_s)} from its first kernel to its "
            f"last: idle {seconds(idle)} ({percent(idle, s.gpu_window_s)}); communication kernels "
            f"{seconds(s.comm_s)} ({percent(s.comm_s, s.gpu_busy_s)} of GPU time)."
        )
    if s.flops is not None:
        f = s.flops
        same = (
            "equal"
            if not f.differing
            else f"{len(f.differing)} of {f.leaves} leaves differ ({', '.join(f.differing[:3])}…)"
        )
        lines.append(
            "DiT FLOPs in the trace (torch's formulas on its recorded shapes): "
            f"{si(f.trace_per_run, 'FLOP')} per forward against {si(f.analytic_per_run, 'FLOP')} "
            f"analytic tensor FLOPs; per leaf: {same}."
        )
    unlinked = "" if s.unlinked_gpu_s is None else f"; GPU time no op launched: {seconds(s.unlinked_gpu_s)}"
    lines.append(
        f"Outside every stage's module: {seconds(s.outside_s)}{unlinked}; module calls no module matched: "
        f"{s.unresolved_calls}; ops of the mapped stages no rule maps: {s.unmatched_ops} "
        f"({seconds(s.unmatched_s)})."
    )
    return lines


def forward_table(modules: pd.DataFrame, forward: str) -> Table | None:
    """The forward stage's measured time by category (None when none of it was measured)."""
    own = modules[modules["stage"] == forward]
    total = float(own.loc[own["kind"] == "leaf", "measured_time_s"].fillna(0.0).sum())
    return measured_table(own, total) if total > 0 else None


def ingest_lines(modules: pd.DataFrame, forward: str, section: IngestSummary) -> list[str]:
    """The "Measured run" section of summary.md."""
    by_category = forward_table(modules, forward)
    return [
        *[f"- {line}" for line in headline(section)],
        "",
        *to_markdown(stage_table(section)),
        "",
        *([*to_markdown(by_category), ""] if by_category is not None else []),
        "Per op and per kernel: `ops.parquet`, `kernels.parquet`; predicted against measured per "
        "category: `ingest.png`.",
    ]


def ingest_png(modules: pd.DataFrame, forward: str, title: str, path: Path) -> None:
    """Predicted against measured seconds per DiT forward by category (measured only without a
    device)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cats = measured_by_category(modules[modules["stage"] == forward]).sort_values("measured_time_s")
    total = float(cats["measured_time_s"].sum()) if len(cats) else 0.0
    scale, unit = (1.0, "s") if total >= 1 else (1e3, "ms")
    y = np.arange(len(cats))
    fig, ax = plt.subplots(figsize=(9, 0.55 * max(len(cats), 1) + 1.8), layout="tight")
    predicted = cats["predicted_s"].fillna(0.0)
    both = bool((predicted > 0).any())
    shift, height = (0.2, 0.4) if both else (0.0, 0.6)
    ax.barh(y + shift, cats["measured_time_s"] * scale, height=height, color="#fd8d3c", label="measured")
    if both:
        ax.barh(y - shift, predicted * scale, height=height, color="#9ecae1", label="predicted")
        for yi, m, p in zip(y, cats["measured_time_s"], predicted, strict=True):
            if p > 0 and m > 0:
                ax.text(max(m, p) * scale, float(yi), f"  {p / m:.3g}×", va="center", fontsize=9)
    widest = float(max(cats["measured_time_s"].max(), predicted.max())) if len(cats) else 0.0
    if widest > 0:
        ax.set_xlim(0, widest * scale * 1.15)  # room for the ratio labels
    ax.set_yticks(y, cats["category"])
    ax.set_xlabel(f"time per DiT forward ({unit})" + ("; label: predicted / measured" if both else ""))
    ax.set_title(title, fontsize=11)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="x", lw=0.3, alpha=0.5)
    fig.savefig(path, dpi=100)
    plt.close(fig)
