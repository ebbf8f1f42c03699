"""The files every run folder holds: ``modules.parquet``, ``report.json``, ``summary.md`` and, with
a device, ``roofline.png`` and ``time_breakdown.png``; ``trace`` and ``profile`` add their own.

All are written directly into the staged run folder (published by one rename,
:mod:`ditmeter.reports.run_dir`); text is always UTF-8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ditmeter.compare.gate import Verdict
from ditmeter.reports.device_report import DeviceView, stage_times, time_by_category
from ditmeter.reports.ingest_report import IngestSummary
from ditmeter.reports.report_json import build_report, write_json
from ditmeter.reports.summary import render_summary
from ditmeter.reports.tables import MODULES_SCHEMA, table_metadata, write_parquet
from ditmeter.reports.timeline import write_timeline

#: What each run writes (the CLI's help and the docs list these).
REPORT_FILES = ("report.json", "summary.md", "modules.parquet")
DEVICE_FILES = ("roofline.png", "time_breakdown.png", "memory_timeline.png", "timeline.json")  # with device=
PLAN_FILES = ("parallel.parquet", "scaling.png")  # with parallel.gpus > 1
TRACE_FILES = ("nodes.parquet", "graph.json")  # trace, besides REPORT_FILES
PROFILE_FILES = ("nodes.parquet", "torch_profiler/trace.json")  # profile, besides REPORT_FILES


def write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8, whatever the locale."""
    path.write_text(text, encoding="utf-8")


def write_analysis_files(
    out: Path,
    view: DeviceView,
    modules: pd.DataFrame,
    run_id: str,
    *,
    meta: dict[str, str] | None = None,
    compare: dict[str, Any] | None = None,
    verdict: Verdict | None = None,
    profile: dict[str, Any] | None = None,
    ingest: IngestSummary | None = None,
) -> list[str]:
    """modules.parquet, report.json, summary.md (and the plots with a device) into ``out``."""
    a = view.analysis
    meta = dict(meta or {})
    if view.prediction is not None:  # the *_s columns are per forward; say what a step and a video take
        p = view.prediction
        meta["time"] = json.dumps(
            {
                "device": p.device.name,
                "per_forward_s": view.per_forward_s,
                "per_step_s": view.per_step_s,
                "per_video_s": view.per_video_s,
                "per_gpu_of": view.plan.estimate.plan.name if view.plan else "1 GPU",
                "forward_per_video_s": view.forward_video_s,
                "mode": p.plan.mode if p.plan.predicted else "roofline",
                "forwards_per_step": p.forwards_per_step,
                "forwards_per_video": p.forwards_per_video,
            }
        )
    write_parquet(modules, MODULES_SCHEMA, out / "modules.parquet", table_metadata(a, "modules", **meta))
    write_json(
        build_report(a, modules, run_id, view, compare=compare, profile=profile, ingest=ingest),
        out / "report.json",
    )
    write_text(
        out / "summary.md",
        render_summary(a, modules, run_id, view, verdict=verdict, profile=profile, ingest=ingest),
    )
    files = list(REPORT_FILES)
    if view.prediction is not None:
        from ditmeter.reports.plots import memory_timeline_png, roofline_png, time_breakdown_png

        device, forward = view.prediction.device, a.forward.name
        title = f"{a.model.name} × {a.workload.name} on {device.display_name}"
        timed = {st.name: (st.runs_per_video, st.dtype) for st in a.stages} or {forward: (1, a.forward.dtype)}
        roofline_png(modules, timed, device, title, out / "roofline.png")
        shown = forward if forward in timed else next(iter(timed))  # stages= may leave the DiT out
        run = "DiT forward" if shown == forward else f"{shown} run"
        by_stage = {t["stage"]: t["per_video_s"] for t in stage_times(view)}
        time_breakdown_png(
            time_by_category(modules, shown), device, title, out / "time_breakdown.png", run, by_stage
        )
        memory_timeline_png(a, device, out / "memory_timeline.png")
        write_timeline(out / "timeline.json", a, view.prediction)
        files += DEVICE_FILES
    if view.plan is not None and view.prediction is not None:
        from ditmeter.reports.parallel_report import PARALLEL_SCHEMA, collectives_frame
        from ditmeter.reports.plots import scaling_png

        frame = collectives_frame(view.plan.estimate)
        write_parquet(frame, PARALLEL_SCHEMA, out / "parallel.parquet", table_metadata(a, "parallel", **meta))
        scaling_png(
            view.plan.scaling,
            view.prediction.device,
            f"{a.model.name} × {a.workload.name}",
            out / "scaling.png",
        )
        files += PLAN_FILES
    return files
