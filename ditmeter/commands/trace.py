"""``ditmeter trace``: capture each stage's real module, map, join, gate, publish the run.

For every selected stage the family's reference module is built on meta and
one run is captured (``ditmeter.tracer``); every node is assigned to an
analytic leaf with the reference's name table and node rules; measured and
analytic FLOPs are joined per module in one graph; the gate decides; and a run
folder is published with everything ``report`` writes plus ``nodes.parquet``
and ``graph.json``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import networkx as nx
import pandas as pd

from ditmeter.analytic.analysis import Analysis, Stage
from ditmeter.analytic.parallel import CollectiveSpec
from ditmeter.analytic.tree import ModuleRow, walk
from ditmeter.commands.progress import Progress, Steps, no_progress
from ditmeter.commands.report import analyze, open_run, run_id_for
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
from ditmeter.compare.kernels import KernelCheck, launched, recipe_launches
from ditmeter.compare.parallel import Measured
from ditmeter.config import RunConfig
from ditmeter.errors import ConfigError
from ditmeter.models.family import Reference
from ditmeter.reports.device_report import DeviceView
from ditmeter.reports.report_json import compare_section
from ditmeter.reports.run_dir import analysis_dir
from ditmeter.reports.run_files import TRACE_FILES, write_analysis_files, write_text
from ditmeter.reports.tables import library_versions, modules_frame, table_metadata, write_parquet

if TYPE_CHECKING:
    from ditmeter.tracer.kernels import Launch

#: The most calls of a real module one traced run makes (the VAE decode: 256 latent frames, 1,021
#: video frames; its meta trace then takes tens of seconds).
MAX_TRACED_CALLS = 256


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
    modules: pd.DataFrame


@attrs.frozen
class _Traced:
    """One stage's mapped nodes, its measured peak live activations (None: not measured) and,
    under a parallel plan, the plan's and the traced rank's collectives."""

    nodes: pd.DataFrame
    peak: int | None
    expected: tuple[CollectiveSpec, ...] = ()
    measured: tuple[Measured, ...] = ()
    kernels: KernelCheck | None = None


#: Launches of the functional collectives (and their autograd wrapper): communication, costed by the
#: plan's collectives (``parallel.parquet``), not by the kernel recipes.
COLLECTIVE_LAUNCHES = frozenset(
    {
        "all_to_all_single",
        "all_gather_into_tensor",
        "reduce_scatter_tensor",
        "_wrap_tensor_autograd",
        "wait_tensor",
    }
)
#: The pipeline whose eager code the traced references run (diffusers' and transformers' modules).
REFERENCE_FLAVOUR = "diffusers"


def kernel_unit(analysis: Analysis, stage: Stage) -> str | None:
    """The repeated unit of the forward stage whose eager kernels ``trace`` checks (``blocks.1``,
    or ``blocks.0`` of a one-block model); None where nothing is checked.

    NB: checked at the pipelines' batch of 1 in a 16-bit dtype (both pipelines run each forward at
    batch 1): the RoPE recipes read the cos/sin tables per row, which a larger batch shares, and an
    fp32 DiT runs the memory-efficient attention kernel, not the flash one the recipes name."""
    w = analysis.workload
    if stage.name != analysis.forward.name or w.batch_size != 1 or w.dtype == "fp32":
        return None
    rows = list(walk(stage.tree, expand=False))
    repeated = [r for r in rows if r.kind == "repeated" and r.depth == 1]
    if not repeated:
        return None
    name = repeated[0].module_id
    copies = next(r.copies for r in rows if r.module_id == f"{name}.*")
    return f"{name}.{1 if copies > 1 else 0}"


def check_kernels(analysis: Analysis, stage: Stage, unit: str, launches: Sequence[Launch]) -> KernelCheck:
    """The recipes of ``unit``'s leaves against the launches captured inside it."""
    from ditmeter.tracer.kernels import under

    template = unit.rsplit(".", 1)[0] + ".*"
    rows = walk(stage.tree, expand=False)
    analytic = recipe_launches(rows, template, REFERENCE_FLAVOUR, stage.name, analysis.workload.dtype)
    return KernelCheck(unit, analytic, launched((x.op, x.dtype, x.bytes) for x in under(launches, unit)))


def trace_stage(
    cfg: RunConfig,
    analysis: Analysis,
    stage: Stage,
    ref: Reference,
    rows: list[ModuleRow],
    step: Steps,
    measure_memory: bool,
) -> _Traced:
    """Build the stage's real module on meta, capture one run, map every node: its nodes table,
    and with ``measure_memory`` the peak live activation bytes of one more run under the
    tensor-lifetime counter (for the forward stage the same run records its eager kernels). Under a
    sequence-parallel plan the forward stage runs as rank 0 of the reference's own
    context-parallel code under torch's fake process group, and its collectives are captured
    beside the compute nodes."""
    from ditmeter.compare.mapping import ZERO_OPS
    from ditmeter.tracer.capture import capture_forward, graph_collectives
    from ditmeter.tracer.collectives import fake_rank
    from ditmeter.tracer.kernels import eager_launches
    from ditmeter.tracer.memory import LiveBytes, peak_live_bytes

    cp = cfg.parallel.sequence
    if stage.name != analysis.forward.name or cp.degree == 1:
        with step(f"build {stage.name}"):
            module, inputs = ref.make(cfg.model, cfg.workload, analysis.geometry, "meta")
        with step(f"capture {stage.name}"):
            graph = capture_forward(module, inputs)
        measured, kernels, unit = None, None, kernel_unit(analysis, stage)
        if unit is not None:  # one run gives the launches and (the tensor lifetimes) the peak
            with step(f"memory+kernels {stage.name}"):
                live = [LiveBytes()] if measure_memory else []
                launches = eager_launches(lambda: module(**inputs), ZERO_OPS, *live)
                measured = live[0].peak if live else None
                kernels = check_kernels(analysis, stage, unit, launches)
        elif measure_memory:
            with step(f"memory {stage.name}"):
                measured = peak_live_bytes(module, inputs)
        with step(f"map {stage.name}"):
            nodes = map_graph(graph, rows, ref.names, ref.rules, stage=stage.name)
            return _Traced(nodes, measured, kernels=kernels)
    with fake_rank(0, cp.degree), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers calls deprecated funcol names
        with step(f"build {stage.name} (rank 0 of {cp.degree})"):
            module, inputs = ref.make(cfg.model, cfg.workload, analysis.geometry, "meta")
            expected = cfg.family.context_parallel(module, analysis, cfg.parallel)
        with step(f"capture {stage.name} (rank 0 of {cp.degree})"):
            graph = capture_forward(module, inputs)
        kernels, unit = None, kernel_unit(analysis, stage)
        if unit is not None:  # the rank's launches against its tree's recipes (the plan's code)
            with step(f"kernels {stage.name} (rank 0 of {cp.degree})"):
                launches = eager_launches(lambda: module(**inputs), ZERO_OPS)
                compute = [x for x in launches if x.op not in COLLECTIVE_LAUNCHES]
                kernels = check_kernels(analysis, stage, unit, compute)
    calls = tuple((c.op, c.group_size, c.input_bytes, c.output_bytes) for c in graph_collectives(graph))
    with step(f"map {stage.name}"):
        nodes = map_graph(graph, rows, ref.names, ref.rules, stage=stage.name)
    return _Traced(nodes, None, tuple(expected), calls, kernels=kernels)


def _write(
    cfg: RunConfig,
    out: Path,
    run_id: str,
    joined: _Joined,
    refs: dict[str, Reference],
    step: Steps,
    collectives: tuple[Sequence[CollectiveSpec], Sequence[Measured]] | None,
) -> list[str]:
    """nodes.parquet, graph.json and everything ``report`` writes, with the gate's section."""
    analysis, lib = joined.analysis, library_versions()
    versions = f"diffusers {lib['diffusers']}, transformers {lib['transformers']}"
    sources = "; ".join(f"{name}: {r.name} ({r.source})" for name, r in refs.items())
    memory = {c.module_id: [c.analytic, c.measured] for c in joined.verdict.memory}
    ref_meta = {"reference": f"{sources}; {versions}", "memory": json.dumps(memory)}
    if joined.verdict.kernels is not None:  # compare re-reads it
        ref_meta["kernels"] = json.dumps(joined.verdict.kernels.as_json())
    if collectives is not None:  # compare re-reads them
        expected, measured = collectives
        ref_meta["collectives"] = json.dumps(
            {"expected": [attrs.astuple(c) for c in expected], "measured": [list(m) for m in measured]}
        )
    write_parquet(
        joined.nodes, NODES_SCHEMA, out / "nodes.parquet", table_metadata(analysis, "nodes", **ref_meta)
    )
    write_text(out / "graph.json", graph_json(joined.graph))
    section = compare_section(
        joined.verdict,
        analysis.forward.name,
        reference={
            "stages": {n: {"name": r.name, "source": r.source} for n, r in refs.items()},
            "diffusers": lib["diffusers"],
            "transformers": lib["transformers"],
        },
        graph={
            "file": "graph.json",
            "nodes": joined.graph.number_of_nodes(),
            "edges": joined.graph.number_of_edges(),
        },
        timings_s={k: round(v, 3) for k, v in step.seconds.items()},
    )
    meta = {**ref_meta, "tolerance": str(cfg.compare.tolerance)}
    files = write_analysis_files(
        out, joined.view, joined.modules, run_id, meta=meta, compare=section, verdict=joined.verdict
    )
    return [*files, *TRACE_FILES]


@attrs.frozen
class _Joined:
    analysis: Analysis
    view: DeviceView
    nodes: pd.DataFrame
    modules: pd.DataFrame
    verdict: Verdict
    graph: nx.DiGraph


def _join(
    cfg: RunConfig,
    analysis: Analysis,
    view: DeviceView,
    rows: dict[str, list[ModuleRow]],
    nodes: pd.DataFrame,
    memory: dict[str, tuple[int, int]],
    collectives: tuple[Sequence[CollectiveSpec], Sequence[Measured]] | None,
    kernels: KernelCheck | None = None,
) -> _Joined:
    """Roll the measured FLOPs up the tree beside the analytic ones, gate (memory, a plan's
    collectives and the forward's eager kernels too), build the graph."""
    every = [r for stage_rows in rows.values() for r in stage_rows]
    measured, unfused = measured_by_module(nodes, every), unfused_by_module(nodes, every)
    pairs = [(name, r) for name, stage_rows in rows.items() for r in stage_rows]
    modules = with_measured(modules_frame(analysis, view.prediction, pairs), measured, unfused)
    verdict = evaluate(modules, nodes, cfg.compare.tolerance, memory, collectives, kernels)
    return _Joined(analysis, view, nodes, modules, verdict, build_graph(modules, nodes))


def check_traceable(cfg: RunConfig) -> None:
    """Refuse a plan whose code trace cannot run: xDiT's patch (``parallel.runtime=xdit``) is costed
    from its code, and xDiT is not installed to capture it."""
    if cfg.parallel.runtime != "own":
        raise ConfigError(
            "parallel.runtime",
            f"{cfg.parallel.runtime}: trace runs the pipeline's own context-parallel code under the fake "
            "process group (xDiT is not installed; its patch is costed from its code); allowed: own",
        )


def trace(cfg: RunConfig, progress: Progress = no_progress) -> TraceResult:
    """Capture every selected stage's real module, gate each against the rules, publish a run folder.

    The run id is reserved before the first module is built, so a clash is said at once.
    """
    step = Steps(progress)
    check_traceable(cfg)
    analysis, view = analyze(cfg)
    for s in analysis.stages:  # the real module runs its loop on meta too: refuse what cannot end soon
        if s.calls > MAX_TRACED_CALLS:
            raise ConfigError(
                "workload.num_frames",
                f"tracing {s.name} calls the real module {s.calls:,} times (once per chunk of frames); "
                f"at most {MAX_TRACED_CALLS} (cost it with `report`, or leave it out with stages=)",
            )
    refs = {s.name: cfg.family.references()[s.name] for s in analysis.stages}
    rows = {s.name: s.rows() for s in analysis.stages}
    run_id = run_id_for(cfg)
    with open_run(cfg, "trace", run_id) as out:
        expected = cfg.family.reference_memory(analysis)  # stages with a memory rule
        traced = {
            s.name: trace_stage(cfg, analysis, s, refs[s.name], rows[s.name], step, s.name in expected)
            for s in analysis.stages
        }
        nodes = pd.concat([t.nodes for t in traced.values()], ignore_index=True)
        memory = {n: (expected[n], t.peak) for n, t in traced.items() if t.peak is not None}
        forward = traced.get(analysis.forward.name)
        collectives = None
        if cfg.parallel.sequence.degree > 1 and forward is not None:
            collectives = (forward.expected, forward.measured)
        kernels = forward.kernels if forward is not None else None
        with step("join"):
            joined = _join(cfg, analysis, view, rows, nodes, memory, collectives, kernels)
        with step("write"):
            files = _write(cfg, out, run_id, joined, refs, step, collectives)
    return TraceResult(
        run_id,
        analysis_dir(cfg.output_root / run_id, cfg.family.slug),
        analysis,
        joined.verdict,
        joined.graph.number_of_nodes(),
        joined.graph.number_of_edges(),
        step.seconds,
        view,
        tuple(files),
        joined.modules,
    )
