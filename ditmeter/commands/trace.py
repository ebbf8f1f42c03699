"""``ditmeter trace``: capture each stage's real module, map, join, gate, publish the run.

For every selected stage the family's reference module is built on meta and
one run is captured (``ditmeter.tracer``); every node is assigned to an
analytic leaf with the reference's name table and node rules; measured and
analytic FLOPs are joined per module in one graph; the gate decides; and a run
folder is published with everything ``report`` writes plus ``nodes.parquet``
and ``graph.json``.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pandas as pd

from ditmeter.analytic.analysis import Analysis, Stage
from ditmeter.analytic.tree import ModuleRow
from ditmeter.commands.progress import Progress, Steps, no_progress
from ditmeter.commands.report import analyze, run_id_for
from ditmeter.compare.check import map_graph
from ditmeter.compare.gate import Verdict, evaluate
from ditmeter.compare.join import (
    NODES_SCHEMA,
    build_graph,
    graph_json,
    measured_by_module,
    unfused_by_module,
    with_measured,
)
from ditmeter.config import RunConfig
from ditmeter.models.family import Reference
from ditmeter.reports.device_report import DeviceView
from ditmeter.reports.report_json import compare_section
from ditmeter.reports.run_dir import analysis_dir, ensure_free, staged_run
from ditmeter.reports.run_files import TRACE_FILES, write_analysis_files, write_text
from ditmeter.reports.tables import library_versions, modules_frame, table_metadata, write_parquet


@attrs.frozen
class TraceResult:
    run_id: str
    analysis_dir: Path
    analysis: Analysis
    verdict: Verdict
    graph_nodes: int
    graph_edges: int
    timings: dict[str, float]
    view: DeviceView
    files: tuple[str, ...]


def trace_stage(
    cfg: RunConfig, analysis: Analysis, stage: Stage, ref: Reference, rows: list[ModuleRow], step: Steps
) -> pd.DataFrame:
    """Build the stage's real module on meta, capture one run, map every node: its nodes table."""
    from ditmeter.tracer.capture import capture_forward

    with step(f"build {stage.name}"):
        module, inputs = ref.make(cfg.model, cfg.workload, analysis.geometry, "meta")
    with step(f"capture {stage.name}"):
        graph = capture_forward(module, inputs)
    with step(f"map {stage.name}"):
        return map_graph(graph, rows, ref.names, ref.rules, stage=stage.name)


def trace(cfg: RunConfig, progress: Progress = no_progress) -> TraceResult:
    """Capture every selected stage's real module, gate each against the rules, publish a run folder."""
    run_id = run_id_for(cfg)
    ensure_free(cfg.output_root, run_id)  # say so before a minute of tracing, not after
    step = Steps(progress)
    analysis, view = analyze(cfg)
    refs = {s.name: cfg.family.references()[s.name] for s in analysis.stages}
    rows = {s.name: s.rows() for s in analysis.stages}
    nodes = pd.concat(
        [trace_stage(cfg, analysis, s, refs[s.name], rows[s.name], step) for s in analysis.stages],
        ignore_index=True,
    )
    with step("join"):
        every = [r for stage_rows in rows.values() for r in stage_rows]
        measured, unfused = measured_by_module(nodes, every), unfused_by_module(nodes, every)
        pairs = [(name, r) for name, stage_rows in rows.items() for r in stage_rows]
        modules = with_measured(modules_frame(analysis, view.prediction, pairs), measured, unfused)
        verdict = evaluate(modules, nodes, cfg.compare.tolerance)
        g = build_graph(modules, nodes)
    lib = library_versions()
    versions = f"diffusers {lib['diffusers']}, transformers {lib['transformers']}"
    sources = "; ".join(f"{name}: {r.name} ({r.source})" for name, r in refs.items())
    with step("write"), staged_run(cfg.output_root, run_id, cfg.family.slug) as out:
        ref_meta = {"reference": f"{sources}; {versions}"}
        write_parquet(
            nodes, NODES_SCHEMA, out / "nodes.parquet", table_metadata(analysis, "nodes", **ref_meta)
        )
        write_text(out / "graph.json", graph_json(g))
        section = compare_section(
            verdict,
            analysis.forward.name,
            reference={
                "stages": {n: {"name": r.name, "source": r.source} for n, r in refs.items()},
                "diffusers": lib["diffusers"],
                "transformers": lib["transformers"],
            },
            graph={"file": "graph.json", "nodes": g.number_of_nodes(), "edges": g.number_of_edges()},
            timings_s={k: round(v, 3) for k, v in step.seconds.items()},
        )
        files = write_analysis_files(
            out,
            view,
            modules,
            run_id,
            meta={**ref_meta, "tolerance": str(cfg.compare.tolerance)},
            compare=section,
            verdict=verdict,
        )
    return TraceResult(
        run_id,
        analysis_dir(cfg.output_root / run_id, cfg.family.slug),
        analysis,
        verdict,
        g.number_of_nodes(),
        g.number_of_edges(),
        step.seconds,
        view,
        (*files, *TRACE_FILES),
    )
