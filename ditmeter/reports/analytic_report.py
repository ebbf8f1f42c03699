"""``ditmeter report``: the analytic run folder (report.json, modules.parquet, summary.md)."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from ditmeter.analytic.analysis import Analysis, analyze
from ditmeter.config import RunConfig
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


def write_report(cfg: RunConfig) -> ReportResult:
    """Evaluate the analytic model and publish a complete run folder atomically."""
    analysis = analyze(cfg.model, cfg.workload)
    modules = modules_frame(analysis)
    run_id = cfg.run_id or new_run_id(cfg.model.name, cfg.workload.name)
    with staged_run(cfg.output_root, run_id) as out:
        write_parquet(modules, MODULES_SCHEMA, out / "modules.parquet", table_metadata(analysis, "modules"))
        write_json(build_report(analysis, modules, run_id), out / "report.json")
        tmp = out / ".summary.md.tmp"
        tmp.write_text(render_summary(analysis, modules, run_id))
        os.replace(tmp, out / "summary.md")
    run_dir = cfg.output_root / run_id
    return ReportResult(run_id, run_dir, run_dir / ANALYSIS_SUBDIR, analysis)
