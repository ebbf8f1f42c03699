"""What the commands print on the terminal (rich), from the same table models as ``summary.md``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console

from ditmeter.analytic.geometry import Geometry
from ditmeter.compare.gate import Verdict
from ditmeter.reports.device_report import (
    DeviceView,
    measured_table,
    plan_line,
    stage_times,
    top_layers_by_time,
)
from ditmeter.reports.format import batch_note, binary_bytes, percent, seconds, si
from ditmeter.reports.memory_report import fit_line
from ditmeter.reports.parallel_report import plan_line as parallel_line
from ditmeter.reports.table_model import to_rich
from ditmeter.reports.verdict import coverage_table, layers_table, stage_lines, verdict_line

if TYPE_CHECKING:
    from ditmeter.commands.calibrate import CalibrationResult
    from ditmeter.commands.compare import CompareResult
    from ditmeter.commands.diff import DiffResult
    from ditmeter.commands.ingest import IngestResult
    from ditmeter.commands.profile import ProfileResult
    from ditmeter.commands.report import ReportResult
    from ditmeter.commands.trace import TraceResult
    from ditmeter.commands.validate import ValidateResult

#: Rows of the terminal's top-layers-by-time table (summary.md shows 10).
TOP_SHOWN = 5

_STEP_LABELS = {
    "profile": "profile one forward op by op (torch.profiler)",
    "build": "build the real module",
    "capture": "capture one run (fx graph, per-node FLOPs)",
    "memory": "measure peak live activations (tensor lifetimes)",
    "memory+kernels": "measure peak live activations and one block's kernels",
    "map": "map nodes to analytic rules",
    "join": "join, roll up per module, gate",
    "write": "write the run folder",
    "read": "read the Chrome trace",
    "resolve": "resolve module calls to paths (named_modules on meta)",
    "place": "place ops in modules and map them to analytic leaves",
}


class StepPrinter:
    """Progress of the long steps: a spinner while running, one line with the time after."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        verb, _, stage = name.partition(" ")
        label = _STEP_LABELS.get(verb, verb) + (f" [{stage}]" if stage else "")
        start = time.perf_counter()
        with self.console.status(f"{label} …"):
            yield
        self.console.print(f"  {label:<62} {time.perf_counter() - start:6.2f} s")


def print_notes(console: Console, notes: tuple[str, ...]) -> None:
    """What the configuration chose for the user (``RunConfig.notes``), said before anything runs."""
    for note in notes:
        console.print(f"note: {note}", style="yellow")


def print_adjustments(console: Console, g: Geometry) -> None:
    for adj in g.adjustments:
        console.print(f"adjusted {adj.text}", style="yellow")


def print_verdict(console: Console, verdict: Verdict, shown: int) -> None:
    """Coverage, the worst layers, each stage end to end, and the verdict line."""
    console.print(to_rich(coverage_table(verdict)))
    for name in verdict.coverage.unmatched_flop_nodes[:shown]:
        console.print(f"unmatched node with FLOPs: {name}", style="red")
    console.print(to_rich(layers_table(verdict, shown)))
    for line in stage_lines(verdict):
        console.print(line)
    console.print(verdict_line(verdict), style="green" if verdict.passed else "red")


def print_device(console: Console, view: DeviceView, modules: pd.DataFrame) -> None:
    """The peak memory per GPU (and with a device whether it fits), the predicted time, the MFU."""
    a = view.analysis
    f = a.footprint
    console.print(f"memory: {fit_line(a.memory, view.device)}")
    console.print(
        f"  DiT weights {binary_bytes(f.weight_bytes)}, forward activations "
        f"{binary_bytes(f.peak_activation_bytes)} ({f.peak_stage} phase)"
    )
    p = view.prediction
    if p is None:
        return
    t = p.per_forward
    console.print(f"predicted on {plan_line(p)}")
    parts = ", ".join(f"{x['stage']} {seconds(x['per_video_s'])}" for x in stage_times(view))
    per_gpu = " per GPU" if view.plan is not None else ""
    whose = " (one GPU's share, compute only)" if per_gpu else ""
    console.print(
        f"  {seconds(view.per_video_s or 0.0)} per video{per_gpu}, every stage ({parts}); "
        f"roofline {seconds(view.roofline_video_s or 0.0)}{whose}"
    )
    if view.plan is not None:
        console.print(parallel_line(view.plan), style="bold")
    share = f" ({seconds(t.predicted_s)} of it compute)" if view.plan is not None else ""
    console.print(
        f"  {a.forward.name} {seconds(view.per_forward_s or 0.0)} per forward{share}, "
        f"{seconds(view.per_step_s or 0.0)} per step, "
        f"{percent(t.roofline_s, t.predicted_s)} of the peaks, "
        f"{percent(t.compute_bound_s, t.predicted_s)} of the time compute-bound"
    )
    console.print(to_rich(top_layers_by_time(view, modules, TOP_SHOWN)))
    if view.mfu is not None:
        console.print(
            f"measured {view.measured_video_s:g} s per video → MFU {100 * view.mfu:.1f}%{view.mfu_basis}"
        )
    for warning in view.warnings:
        console.print(f"warning: {warning}", style="yellow")


def print_wrote(console: Console, folder: object, files: tuple[str, ...], start: float) -> None:
    console.print(f"wrote {folder}/ ({', '.join(files)}) in {time.perf_counter() - start:.2f} s")


def print_report(console: Console, result: ReportResult) -> None:
    a = result.analysis
    f, v, g = a.per_forward, a.per_video, a.geometry
    console.print(
        f"{a.model.name} × {a.workload.name}: {g.tokens:,} tokens, context {g.context_len}, "
        f"{a.forwards_per_video} forwards per video"
    )
    print_adjustments(console, a.geometry)
    if a.workload.batch_size > 1:
        console.print(batch_note(a.workload.batch_size))
    if result.view.plan is not None:
        console.print(
            f"one GPU of {result.view.plan.estimate.plan.name} (rank 0): the counts below are its share"
        )
    selected = [s.name for s in a.stages]
    if a.forward.name not in selected:
        console.print(
            f"stages=[{','.join(selected)}]: the per-forward and per-video lines and the {a.forward.name} "
            f"line are the {a.forward.name}'s, for reference; the time below costs the stages selected"
        )
    core = a.by_category().get("attn_core")
    console.print(
        f"per forward: {si(f.tensor_flops, 'FLOP')} tensor-core, "
        f"{si(f.cuda_flops, 'FLOP')} CUDA-core, {f.params:,} params; "
        f"attention core {percent(core.flops if core else 0, f.flops)} of FLOPs"
    )
    console.print(
        f"per video:   {si(v.tensor_flops, 'FLOP')} tensor-core, {si(v.cuda_flops, 'FLOP')} CUDA-core"
    )
    if len(a.stages) > 1 or a.forward.name not in selected:
        parts = ", ".join(f"{s.name} ×{s.runs_per_video} {si(s.per_video.flops, 'FLOP')}" for s in a.stages)
        what = "whole video" if a.forward.name in selected else "selected stages"
        console.print(f"{what}: {si(a.whole_video.flops, 'FLOP')} ({parts})")
    p, runs = result.view.prediction, result.view.forward_kinds
    if p is not None and a.forward.name in selected and (runs or p.plan.sparse is not None):
        n = a.forwards_per_video
        kinds = ", ".join(f"{r.count} {r.kind}" for r in runs) or f"{n} sparse"
        console.print(
            f"{a.forward.name} forwards by kind (methods.*): {kinds}; the FLOP lines above count all "
            f"{n} as dense and computed, the times below each kind's own"
        )
    print_device(console, result.view, result.modules)


def print_trace(console: Console, result: TraceResult, shown: int) -> None:
    g = result.analysis.geometry
    console.print(
        f"{g.tokens:,} tokens, context {g.context_len}; graph {result.graph_nodes:,} nodes, "
        f"{result.graph_edges:,} edges"
    )
    print_verdict(console, result.verdict, shown)
    print_device(console, result.view, result.modules)


def print_diff(console: Console, result: DiffResult) -> None:
    """The two runs, then the video, stage, category and top-module tables."""
    from ditmeter.reports.diff import diff_tables

    console.print(f"A: {result.a.run_id} ({result.a.label})")
    console.print(f"B: {result.b.run_id} ({result.b.label})")
    for t in diff_tables(result.frame, result.a, result.b):
        if t.rows:
            console.print(to_rich(t))


def print_validate(console: Console, result: ValidateResult) -> None:
    """The errors over the dataset, per GPU, framework, source and GPU count, then every point."""
    from ditmeter.reports.validate_report import below_roofline, fp32_notes, point_table, summary_tables

    console.print(
        f"{len(result.frame)} public measurements of real Wan runs predicted under the settings "
        "their sources state or imply "
        f"({result.settings}); error = predicted / measured - 1"
    )
    for note in (fp32_notes(result.frame, result.fp32_matmul), below_roofline(result.frame)):
        if note:
            console.print(note)
    for t in [*summary_tables(result.frame), point_table(result.frame)]:
        console.print(to_rich(t))


def print_compare(console: Console, result: CompareResult, shown: int) -> None:
    which = "the newest traced run, " if result.newest else ""
    console.print(
        f"run {result.run_id}: {result.model} × {result.workload} ({which}created {result.created_utc})"
    )
    console.print(f"tables: {result.analysis_dir}/modules.parquet, nodes.parquet")
    print_verdict(console, result.verdict, shown)


def print_profile(console: Console, result: ProfileResult) -> None:
    s = result.summary
    console.print(
        f"forward: {s.forward_s:.4g} s measured, {percent(s.in_nodes_s, s.forward_s)} inside the ops; "
        f"scaled to {s.model_layers} blocks ≈ {s.full_forward_s:.4g} s"
    )
    console.print(to_rich(measured_table(result.modules, s.in_nodes_s)))


def print_ingest(console: Console, result: IngestResult) -> None:
    """The trace's facts, the stages found and the DiT's measured time by category."""
    from ditmeter.reports.ingest_report import forward_table, headline, stage_table

    s = result.summary
    for line in headline(s):
        console.print(line)
    console.print(to_rich(stage_table(s)))
    by_category = forward_table(result.modules, result.analysis.forward.name)
    if by_category is not None:
        console.print(to_rich(by_category))


def print_calibration(console: Console, result: CalibrationResult) -> None:
    """The measured points by kernel class (rate and fraction of the peak) and the file written."""
    from ditmeter.reports.table_model import Column, table

    d = result.device
    peak = {"gemm": d.tensor_flop_per_s, "attention": d.tensor_flop_per_s, "conv": d.conv_flop_per_s}
    rows = []
    for p in result.points:
        if p["kind"] in peak:
            rate = p["flops"] / p["seconds"]
            share = percent(rate, peak[p["kind"]](p["dtype"]))
            rows.append(
                (
                    p["kind"],
                    p["dtype"],
                    p["shape"],
                    seconds(p["seconds"]),
                    f"{rate / 1e12:.3g} TFLOP/s",
                    share,
                )
            )
        elif p["kind"] in ("copy", "elementwise", "elementwise_rule"):
            rate = p["bytes"] / p["seconds"]
            rows.append(
                (
                    p["kind"],
                    p["dtype"],
                    p["shape"],
                    seconds(p["seconds"]),
                    f"{rate / 1e9:.3g} GB/s",
                    percent(rate, d.bytes_per_s),
                )
            )
        elif p["kind"] != "module_host":  # its own line below the table
            rows.append((p["kind"], p["dtype"], p["shape"], seconds(p["seconds"]), "-", "-"))
    columns = (
        Column("kernel", "left"),
        Column("dtype", "left"),
        Column("shape", "left"),
        Column("per call"),
        Column("achieved"),
        Column("of peak"),
    )
    console.print(to_rich(table(f"measured on {d.display_name}", columns, rows)))
    k = result.kernels
    console.print(
        f"element-wise at {percent(k.bandwidth.fraction[0], 1)} of {d.memory_bandwidth_gbps:.3g} GB/s; "
        f"{seconds(k.host.per_kernel_s)} per op ({'overlapped' if k.host.overlapped else 'added'})"
    )
    for p in result.points:
        if p["kind"] == "module_host":
            console.print(
                f"the real diffusers DiT's code: {seconds(p['seconds'])} of host per launched kernel "
                f"({p['shape']}; recorded, not fitted: docs/eager.md)"
            )
    for warning in result.warnings:
        console.print(f"warning: {warning}")
    console.print(f"wrote {result.path} in {result.seconds:.1f} s; use it with calibration={result.path}")
