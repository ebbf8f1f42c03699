"""``ditmeter trace`` and ``ditmeter compare``: capture, map, join, gate, publish the run.

``trace`` builds the reference on meta, captures one forward, assigns every
node to an analytic leaf, joins measured and analytic FLOPs per module, gates,
and publishes a run folder with everything ``report`` writes plus
``nodes.parquet`` and ``graph.json``. ``compare`` re-reads a traced run's
tables and re-evaluates the gate (optionally at another tolerance).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import attrs
import pandas as pd
import pyarrow.parquet as pq

from ditmeter.analytic.analysis import Analysis, analyze
from ditmeter.analytic.pipeline import Stage
from ditmeter.analytic.tree import ModuleRow
from ditmeter.compare import (  # noqa: F401  (register every stage's node rules)
    clip_rules,
    umt5_rules,
    wan_dit_rules,
    wan_vae_rules,
)
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
from ditmeter.errors import ConfigError
from ditmeter.reports.analytic_report import write_analysis_files, write_text
from ditmeter.reports.device_report import DeviceView, device_view
from ditmeter.reports.report_json import compare_section
from ditmeter.reports.run_dir import ANALYSIS_SUBDIR, list_runs, new_run_id, staged_run
from ditmeter.reports.tables import (
    library_versions,
    module_rows,
    modules_frame,
    table_metadata,
    write_parquet,
)

Progress = Callable[[str], AbstractContextManager[None]]


@contextlib.contextmanager
def no_progress(_step: str) -> Iterator[None]:
    yield


class Steps:
    """Times each long step and reports it to ``progress`` (the CLI's spinner and timing line)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.progress(name):
            yield
        self.seconds[name] = time.perf_counter() - start


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


def _trace_stage(
    cfg: RunConfig, analysis: Analysis, stage: Stage, rows: list[ModuleRow], step: Steps
) -> pd.DataFrame:
    """Build the stage's real module on meta, capture one run, map every node: its nodes table."""
    from ditmeter.tracer.capture import capture_forward
    from ditmeter.tracer.stages import STAGE_REFERENCES

    ref = STAGE_REFERENCES[stage.name]
    label = "" if len(analysis.stages) == 1 else f" {stage.name}"
    with step(f"build{label}"):
        model, inputs = ref.make(
            analysis.model, cfg.workload, analysis.geometry, cfg.raw.get("model") or {}, "meta"
        )
    with step(f"capture{label}"):
        graph = capture_forward(model, inputs)
    with step(f"map{label}"):
        return map_graph(
            graph,
            rows,
            ref.canonical_id,
            ref.reference,
            qualify=stage.qualify,
            stage=stage.name,
            prefix=stage.prefix,
        )


def trace(cfg: RunConfig, progress: Progress = no_progress) -> TraceResult:
    """Capture every selected stage's real module, gate each against the rules, publish a run folder."""
    from ditmeter.tracer.stages import STAGE_REFERENCES

    run_id = cfg.run_id or new_run_id(cfg.model.name, cfg.workload.name)
    if (cfg.output_root / run_id).exists():  # say so before a minute of tracing, not after
        raise ConfigError("run_id", f"{run_id!r} already exists under {cfg.output_root}; pick another")
    step = Steps(progress)
    analysis = analyze(cfg.model, cfg.workload, cfg.raw.get("model"), cfg.stages)
    view = device_view(analysis, cfg.device, cfg.measured_video_s, cfg.raw.get("model"))
    by_stage: dict[str, list[ModuleRow]] = {s.name: [] for s in analysis.stages}
    for name, row in module_rows(analysis):
        by_stage[name].append(row)
    nodes = pd.concat(
        [_trace_stage(cfg, analysis, s, by_stage[s.name], step) for s in analysis.stages], ignore_index=True
    )
    with step("join"):
        rows = [r for stage_rows in by_stage.values() for r in stage_rows]
        measured, unfused = measured_by_module(nodes, rows), unfused_by_module(nodes, rows)
        modules = with_measured(modules_frame(analysis, view.prediction), measured, unfused)
        verdict = evaluate(modules, nodes, cfg.tolerance)
        g = build_graph(modules, nodes)
    refs = {s.name: STAGE_REFERENCES[s.name] for s in analysis.stages}
    lib = library_versions()
    versions = f"diffusers {lib['diffusers']}, transformers {lib['transformers']}"
    sources = "; ".join(f"{name}: {r.reference} ({r.source})" for name, r in refs.items())
    with step("write"), staged_run(cfg.output_root, run_id) as out:
        ref_meta = {"reference": f"{sources}; {versions}"}
        write_parquet(
            nodes, NODES_SCHEMA, out / "nodes.parquet", table_metadata(analysis, "nodes", **ref_meta)
        )
        write_text(out / "graph.json", graph_json(g))
        section = compare_section(
            verdict,
            reference={
                "stages": {n: {"name": r.reference, "source": r.source} for n, r in refs.items()},
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
            meta={**ref_meta, "tolerance": str(cfg.tolerance)},
            compare=section,
            verdict=verdict,
        )
    return TraceResult(
        run_id,
        cfg.output_root / run_id / ANALYSIS_SUBDIR,
        analysis,
        verdict,
        g.number_of_nodes(),
        g.number_of_edges(),
        step.seconds,
        view,
        (*files, "nodes.parquet", "graph.json"),
    )


@attrs.frozen
class CompareResult:
    run_id: str
    analysis_dir: Path
    model: str
    workload: str
    verdict: Verdict


def _traced(run: Path) -> bool:
    return (run / ANALYSIS_SUBDIR / "nodes.parquet").is_file()


def find_run(output_root: Path, run_id: str | None) -> Path:
    """The run folder to compare: ``run_id``, or the newest traced run under ``output_root``."""
    if run_id is None:
        traced = [r for r in list_runs(output_root) if _traced(r)]
        if not traced:
            raise ConfigError("run_id", f"no traced run under {output_root}; run `ditmeter trace` first")
        return traced[-1]
    run = output_root / run_id
    if not run.is_dir():
        known = [r.name for r in list_runs(output_root)][-5:]
        hint = f"; newest runs: {', '.join(known)}" if known else ""
        raise ConfigError("run_id", f"no run {run_id!r} under {output_root}{hint}")
    missing = [f for f in ("modules.parquet", "nodes.parquet") if not (run / ANALYSIS_SUBDIR / f).is_file()]
    if missing:
        raise ConfigError(
            "run_id",
            f"run {run_id!r} has no {' or '.join(missing)} (written by `ditmeter trace`, not `report`)",
        )
    return run


def _read(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ConfigError("run_id", f"cannot read {path}: {exc}") from exc
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.to_pandas(), meta


def compare(output_root: Path, run_id: str | None, tolerance: float) -> CompareResult:
    """Re-read a traced run's tables and evaluate the gate at ``tolerance``."""
    run = find_run(output_root, run_id)
    analysis_dir = run / ANALYSIS_SUBDIR
    modules, meta = _read(analysis_dir / "modules.parquet")
    nodes, _ = _read(analysis_dir / "nodes.parquet")
    if modules["measured_flops"].isna().any():
        raise ConfigError("run_id", f"{analysis_dir / 'modules.parquet'} has no measured_flops")
    model: dict[str, Any] = json.loads(meta.get("ditmeter.model", "{}"))
    workload: dict[str, Any] = json.loads(meta.get("ditmeter.workload", "{}"))
    return CompareResult(
        run.name,
        analysis_dir,
        str(model.get("name", "?")),
        str(workload.get("name", "?")),
        evaluate(modules, nodes, tolerance),
    )
