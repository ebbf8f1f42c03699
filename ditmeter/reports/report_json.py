"""``report.json``: a model-agnostic schema (see docs/artifacts.md).

Counts are JSON integers (exact); derived ratios are floats or null.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pandas as pd
import pyarrow as pa

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.categories import CATEGORIES
from ditmeter.analytic.cost import COST_FIELDS, Cost
from ditmeter.compare.gate import REL_ERROR_RULE, WORST_SHOWN, ModuleCheck, Verdict
from ditmeter.reports.device_report import (
    DeviceView,
    device_json,
    measured_by_category,
    time_json,
)
from ditmeter.reports.ingest_report import IngestSummary
from ditmeter.reports.memory_report import memory_json
from ditmeter.reports.parallel_report import parallel_json
from ditmeter.reports.tables import CONVENTION, library_versions

SCHEMA_VERSION = "ditmeter.report/1"


def _totals(cost: Cost) -> dict[str, Any]:
    out: dict[str, Any] = cost.as_dict()
    out["flops"] = cost.flops
    out["arithmetic_intensity"] = cost.flops / cost.moved_bytes if cost.moved_bytes else None
    return out


def _workload(analysis: Analysis) -> dict[str, Any]:
    g = analysis.geometry
    return {
        "requested": attrs.asdict(analysis.workload),
        "effective": {
            "num_frames": g.effective_frames,
            "height": g.effective_height,
            "width": g.effective_width,
        },
        "geometry": {
            "latent_frames": g.latent_frames,
            "latent_height": g.latent_height,
            "latent_width": g.latent_width,
            "tokens": g.tokens,
            "text_len": analysis.workload.text_len,
            "context_len": g.context_len,
        },
        "adjustments": [attrs.asdict(a) for a in g.adjustments],
        "pipeline": analysis.workload.pipeline,
        "guidance_forwards_per_step": analysis.workload.guidance_forwards,
        "forwards_per_video": analysis.forwards_per_video,
    }


def stages_json(analysis: Analysis) -> list[dict[str, Any]]:
    """Every stage of the video: runs, what one run is, per-run and per-video totals, share."""
    stages = analysis.stages
    video = analysis.whole_video.flops
    return [
        {
            "stage": s.name,
            "module_prefix": s.name,
            "runs_per_video": s.runs_per_video,
            "run": s.run,
            "dtype": s.dtype,
            "per_run": _totals(s.per_run),
            "per_video": _totals(s.per_video),
            "share_of_video_flops": s.per_video.flops / video if video else None,
        }
        for s in stages
    ]


def _check(c: ModuleCheck) -> dict[str, Any]:
    return {
        "module_id": c.module_id,
        "kind": c.kind,
        "analytic_flops": c.analytic,
        "measured_flops": c.measured,
        "rel_error": c.rel_error,
        "passed": c.passed,
    }


def compare_section(verdict: Verdict, forward: str, **extra: Any) -> dict[str, Any]:
    """``report.json``'s ``compare``: the gate's verdict, worst modules first, coverage.

    ``end_to_end`` is one run of the ``forward`` stage; ``stages`` every stage's run.
    """
    e2e = verdict.end_to_end(forward)
    cov = verdict.coverage
    return {
        "measured_by": "torch.utils.flop_counter formulas applied to each captured aten op",
        "compared_metric": "tensor_flops (analytic) vs measured_flops",
        "rel_error_rule": REL_ERROR_RULE,
        "tolerance": verdict.tolerance,
        "passed": verdict.passed,
        "max_rel_error": verdict.max_error,
        "end_to_end": _check(e2e) if e2e else None,
        "stages": [_check(c) for c in verdict.stage_totals()],
        "memory": [
            {
                "stage": c.module_id,
                "analytic_peak_live_bytes": c.analytic,
                "measured_peak_live_bytes": c.measured,
                "rel_error": c.rel_error,
                "passed": c.passed,
            }
            for c in verdict.memory
        ],
        "memory_measured_by": "tensor lifetimes of the real module on meta (ditmeter.tracer.memory), "
        "flash attention",
        "collectives": {
            "compared_kinds": verdict.collectives_compared,
            "mismatches": list(verdict.collective_mismatches),
            "passed": not verdict.collective_mismatches,
            "measured_by": "the collective aten ops of rank 0 of the reference's context-parallel run under "
            "torch's fake process group, captured as graph nodes",
        }
        if verdict.collectives_compared
        else None,
        "kernels": {
            "unit": verdict.kernels.unit,
            "launches": verdict.kernels.launches,
            "mismatches": verdict.kernels.mismatches(),
            "passed": not verdict.kernels.mismatches(),
            "measured_by": "every aten op that moves data in the unit's real module on meta (views and "
            "allocations dropped, SDPA as the flash kernel), against the eager recipes of its leaves",
        }
        if verdict.kernels is not None
        else None,
        "compared_modules": len(verdict.checks),
        "failed_modules": len(verdict.failures),
        "worst": [_check(c) for c in verdict.checks[:WORST_SHOWN]],
        "layers": [
            {
                "layer": g.layer,
                "kind": g.kind,
                "count": g.count,
                "analytic_flops": g.analytic,
                "measured_flops": g.measured,
                "max_rel_error": g.max_error,
                "worst_module": g.worst,
                "failed": g.failed,
            }
            for g in verdict.layers()
        ],
        "coverage": {
            "nodes": cov.nodes,
            "measured_flops": cov.flops,
            "unmatched_flop_nodes": list(cov.unmatched_flop_nodes),
        },
        **extra,
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as JSON objects of Python scalars: a missing value (NaN included: Arrow reads
    a pandas NaN as null) is null, never NaN. Through Arrow: five times pandas' row dicts."""
    rows: list[dict[str, Any]] = pa.Table.from_pandas(frame, preserve_index=False).to_pylist()
    return rows


def build_report(
    analysis: Analysis,
    modules: pd.DataFrame,
    run_id: str,
    view: DeviceView | None = None,
    compare: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
    ingest: IngestSummary | None = None,
) -> dict[str, Any]:
    """The whole report as plain JSON-able data (``compare`` for traced runs, ``profile`` and
    ``ingest`` for measured ones)."""
    per_forward = analysis.per_forward
    cats = analysis.by_category()
    module_rows = _records(modules)
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run_id,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool": {"name": "ditmeter", "versions": library_versions()},
        "convention": CONVENTION,
        "pipeline": analysis.workload.pipeline,
        "model": {"family": analysis.family, **attrs.asdict(analysis.model)},
        "workload": _workload(analysis),
        "stages": stages_json(analysis),
        "categories": [
            {"category": name, "description": CATEGORIES[name], **_totals(cats[name])}
            for name in CATEGORIES
            if name in cats
        ],
        "modules": module_rows,
        "totals": {
            "per_forward": _totals(per_forward),
            "per_video": _totals(analysis.per_video),
            "whole_video": _totals(analysis.whole_video),
            "kv_cache_bytes_note": "0: a diffusion transformer keeps no KV cache.",
        },
        "metric_fields": list(COST_FIELDS),
        "device": device_json(view) if view else None,
        "time": time_json(view, modules) if view else None,
        "memory": memory_json(analysis, view.device if view else None),
        "parallel": parallel_json(view.plan) if view and view.plan else None,
        "compare": compare,
        "profile": {**profile, "by_category": _records(measured_by_category(modules))} if profile else None,
        "ingest": {
            **ingest.as_json(),
            "by_category": _records(measured_by_category(modules[modules["stage"] == analysis.forward.name])),
        }
        if ingest
        else None,
        "notes": list(analysis.notes),
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` to ``path`` as UTF-8 (inside a staged run folder); NaN is refused.

    Indented, except that a top-level table (``modules``: a list of objects) has one object per
    line: a row reads across, and the C encoder writes it (indenting every field of 2,564 rows
    was most of the writing time)."""
    tables = {k for k, v in data.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)}
    text = json.dumps({k: [] if k in tables else v for k, v in data.items()}, indent=2, allow_nan=False)
    for key in tables:
        rows = ",\n".join(f"    {json.dumps(r, allow_nan=False)}" for r in data[key])
        text = text.replace(f"\n  {json.dumps(key)}: []", f"\n  {json.dumps(key)}: [\n{rows}\n  ]", 1)
    path.write_text(text + "\n", encoding="utf-8")
