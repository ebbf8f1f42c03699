"""``ditmeter report``: the analytic run folder, and the files every run folder shares.

Every run writes ``modules.parquet``, ``report.json`` and ``summary.md``; with a
device also ``roofline.png`` and ``time_breakdown.png``. ``trace`` adds its own
files through the same :func:`write_analysis_files`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

from ditmeter.analytic.analysis import Analysis, analyze
from ditmeter.compare.gate import Verdict
from ditmeter.config import RunConfig
from ditmeter.reports.device_report import DeviceView, device_view, time_by_category
from ditmeter.reports.report_json import build_report, write_json
from ditmeter.reports.run_dir import ANALYSIS_SUBDIR, new_run_id, staged_run
from ditmeter.reports.summary import render_summary
from ditmeter.reports.tables import MODULES_SCHEMA, modules_frame, table_metadata, write_parquet


@attrs.frozen
class ReportResult:
    run_id: str
    run_dir: Path
    analysis_dir: Path
    analysis: Analysis
    view: DeviceView
    files: tuple[str, ...]


def write_text(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name, then rename (no half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
) -> list[str]:
    """modules.parquet, report.json, summary.md (and the plots with a device) into ``out``."""
    a = view.analysis
    meta = dict(meta or {})
    if view.prediction is not None:  # the *_s columns are per forward; say what a step and a video take
        p = view.prediction
        meta["time"] = json.dumps(
            {
                "device": p.device.name,
                "per_forward_s": p.per_forward.predicted_s,
                "per_step_s": p.per_step_s,
                "per_video_s": p.per_video_s,
                "forwards_per_step": p.forwards_per_step,
                "forwards_per_video": p.forwards_per_video,
            }
        )
    write_parquet(modules, MODULES_SCHEMA, out / "modules.parquet", table_metadata(a, "modules", **meta))
    write_json(build_report(a, modules, run_id, view, compare=compare, profile=profile), out / "report.json")
    write_text(out / "summary.md", render_summary(a, modules, run_id, view, verdict=verdict, profile=profile))
    files = ["report.json", "summary.md", "modules.parquet"]
    if view.prediction is not None:
        from ditmeter.reports.plots import roofline_png, time_breakdown_png

        device = view.prediction.device
        title = f"{a.model.name} × {a.workload.name} on {device.display_name}"
        roofline_png(modules, device, a.workload.dtype, title, out / "roofline.png")
        time_breakdown_png(time_by_category(modules), device, title, out / "time_breakdown.png")
        files += ["roofline.png", "time_breakdown.png"]
    return files


def write_report(cfg: RunConfig) -> ReportResult:
    """Evaluate the analytic model and publish a complete run folder atomically."""
    analysis = analyze(cfg.model, cfg.workload, cfg.raw.get("model"), cfg.stages)
    view = device_view(analysis, cfg.device, cfg.measured_video_s, cfg.raw.get("model"))
    modules = modules_frame(analysis, view.prediction)
    run_id = cfg.run_id or new_run_id(cfg.model.name, cfg.workload.name)
    with staged_run(cfg.output_root, run_id) as out:
        files = write_analysis_files(out, view, modules, run_id)
    run_dir = cfg.output_root / run_id
    return ReportResult(run_id, run_dir, run_dir / ANALYSIS_SUBDIR, analysis, view, tuple(files))
