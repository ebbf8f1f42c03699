"""``summary.md``: what a person reads first."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.cost import Cost
from ditmeter.analytic.tree import layer_pattern
from ditmeter.compare.gate import Verdict
from ditmeter.reports.device_report import DeviceView, profile_lines, summary_lines
from ditmeter.reports.format import binary_bytes, grouped, percent, si
from ditmeter.reports.ingest_report import IngestSummary, ingest_lines
from ditmeter.reports.memory_report import summary_lines as memory_lines
from ditmeter.reports.parallel_report import summary_lines as parallel_lines
from ditmeter.reports.table_model import Cell, Column, Strong, Table, table, to_markdown
from ditmeter.reports.verdict import coverage_table, error_text, layers_table, stage_lines

TOP_LAYERS = 10
TOP_CATEGORIES = 5


def stage_table(analysis: Analysis) -> Table:
    """What one video runs: FLOPs per run and per video, share, parameters; the whole video last."""
    video = analysis.whole_video
    columns = (
        Column("stage", "left"),
        Column("runs / video"),
        Column("one run", "left"),
        Column("FLOPs / run"),
        Column("FLOPs / video"),
        Column("share"),
        Column("params"),
    )
    rows: list[tuple[Cell, ...]] = [
        (
            s.name,
            str(s.runs_per_video),
            s.run,
            si(s.per_run.flops, "FLOP"),
            si(s.per_video.flops, "FLOP"),
            percent(s.per_video.flops, video.flops),
            si(s.per_run.params),
        )
        for s in analysis.stages
    ]
    params = si(sum(s.per_run.params for s in analysis.stages))
    rows.append((Strong("whole video"), "", "", "", Strong(si(video.flops, "FLOP")), "100.0%", params))
    return table("stages of one video", columns, rows)


def top_layers(modules: pd.DataFrame, stage: str, n: int = TOP_LAYERS) -> pd.DataFrame:
    """``stage``'s leaf layers grouped across blocks, by tensor + CUDA FLOPs per run."""
    leaves = modules[(modules["kind"] == "leaf") & (modules["stage"] == stage)].copy()
    repeated = list(modules.loc[modules["kind"] == "repeated", "module_id"])
    leaves["layer"] = [layer_pattern(m, repeated) for m in leaves["module_id"]]
    leaves["flops"] = leaves["tensor_flops"] + leaves["cuda_flops"]
    grouped_ = leaves.groupby("layer", sort=False).agg(
        count=("module_id", "size"),
        category=("category", "first"),
        flops=("flops", "sum"),
        tensor_flops=("tensor_flops", "sum"),
    )
    return grouped_.sort_values("flops", ascending=False, kind="stable").head(n).reset_index()


def _totals_table(analysis: Analysis) -> Table:
    f, v = analysis.per_forward, analysis.per_video
    rows = [
        (
            "Tensor-core FLOPs",
            si(f.tensor_flops, "FLOP"),
            si(v.tensor_flops, "FLOP"),
            grouped(f.tensor_flops),
        ),
        ("CUDA-core FLOPs", si(f.cuda_flops, "FLOP"), si(v.cuda_flops, "FLOP"), grouped(f.cuda_flops)),
        ("Parameters", si(f.params), si(v.params), grouped(f.params)),
        ("Weight bytes", binary_bytes(f.weight_bytes), binary_bytes(v.weight_bytes), grouped(f.weight_bytes)),
        (
            "Bytes moved (fused ideal)",
            binary_bytes(f.moved_bytes),
            binary_bytes(v.moved_bytes),
            grouped(f.moved_bytes),
        ),
        ("KV-cache bytes", "0 B", "0 B", "0"),
    ]
    columns = (
        Column("metric", "left"),
        Column("per DiT forward"),
        Column("per video"),
        Column("exact per forward"),
    )
    return table("totals", columns, rows)


def _workload_section(analysis: Analysis) -> list[str]:
    w, g = analysis.workload, analysis.geometry
    out = [
        f"- Requested: batch {w.batch_size}, {w.num_frames} frames, {w.height}×{w.width}, "
        f"{w.num_inference_steps} steps, guidance {w.guidance_scale:g}, {w.dtype}",
        f"- Effective: {g.effective_frames} frames, {g.effective_height}×{g.effective_width} "
        f"(pipeline: `{w.pipeline}`)",
        f"- Latent {g.latent_frames}×{g.latent_height}×{g.latent_width} → "
        f"**{grouped(g.tokens)} video tokens** per sample",
        f"- Prompt {w.text_len} tokens; the DiT computes over **context_len {g.context_len}** tokens",
        f"- DiT forwards per video: {w.num_inference_steps} steps × {w.guidance_forwards} "
        f"(guidance) = **{analysis.forwards_per_video}**",
    ]
    out += [f"- Adjusted `{a.field}`: {a.requested} → {a.effective} ({a.reason})" for a in g.adjustments]
    return out


def _categories(analysis: Analysis) -> Table:
    cats = analysis.by_category()
    whole = analysis.per_forward.flops
    ranked = sorted(cats.items(), key=lambda kv: kv[1].flops, reverse=True)[:TOP_CATEGORIES]
    columns = (
        Column("category", "left"),
        Column("FLOPs / forward"),
        Column("share"),
        Column("tensor-core"),
        Column("CUDA-core"),
    )
    rows = [
        (
            name,
            si(c.flops, "FLOP"),
            percent(c.flops, whole),
            si(c.tensor_flops, "FLOP"),
            si(c.cuda_flops, "FLOP"),
        )
        for name, c in ranked
    ]
    return table("categories", columns, rows)


def _layers(modules: pd.DataFrame, stage: str, whole: int) -> Table:
    columns = (
        Column("layer", "left", code=True),
        Column("×"),
        Column("category", "left"),
        Column("FLOPs / forward"),
        Column("share"),
    )
    rows = [
        (r.layer, str(r.count), r.category, si(int(r.flops), "FLOP"), percent(int(r.flops), whole))
        for r in top_layers(modules, stage).itertuples()
    ]
    return table("top layers", columns, rows)


def compare_lines(verdict: Verdict, forward: str, shown: int = TOP_LAYERS) -> list[str]:
    """The compare section: verdict, end-to-end, coverage, worst modules first."""
    cov = verdict.coverage
    e2e = verdict.end_to_end(forward)
    word = "PASS" if verdict.passed else "FAIL"
    out = [
        f"**Gate: {word}** at tolerance {100 * verdict.tolerance:g}% — {len(verdict.checks)} modules "
        f"compared (analytic tensor-core FLOPs vs torch.utils.flop_counter on the traced model), "
        f"{len(verdict.failures)} over tolerance, max error {error_text(verdict.max_error)}.",
        "",
    ]
    if e2e is not None:
        out += [
            f"End to end: analytic {grouped(e2e.analytic)} vs measured {grouped(e2e.measured)} FLOPs "
            f"(error {error_text(e2e.rel_error)}).",
            "",
        ]
    out += [f"- {line}" for line in stage_lines(verdict)]
    out += ["", *to_markdown(coverage_table(verdict))]
    if cov.unmatched_flop_nodes:
        out += ["", "Unmatched nodes with FLOPs (each fails the gate):"]
        out += [f"- `{n}`" for n in cov.unmatched_flop_nodes[:shown]]
    layers = layers_table(verdict, shown)
    out += [
        "",
        f"Worst {len(layers.rows)} of {len(verdict.layers())} layers (× = copies across blocks; "
        "the error is the worst copy's):",
        "",
        *to_markdown(layers),
        "",
        "Per node: `nodes.parquet`; per module: `measured_flops` and `rel_error` in `modules.parquet`; "
        "the joined graph: `graph.json` (networkx node-link).",
    ]
    return out


def render_summary(
    analysis: Analysis,
    modules: pd.DataFrame,
    run_id: str,
    view: DeviceView | None = None,
    verdict: Verdict | None = None,
    profile: dict[str, Any] | None = None,
    ingest: IngestSummary | None = None,
) -> str:
    """Markdown summary of one run (with the compare section when it was traced)."""
    f, forward = analysis.per_forward, analysis.forward.name
    core: Cost = analysis.by_category().get("attn_core", Cost())
    core_video = core.per_video(analysis.forwards_per_video)
    lines = [
        f"# ditmeter report — {analysis.model.name} × {analysis.workload.name}",
        "",
        f"Run `{run_id}`. Counts are exact integers in `modules.parquet` and `report.json`; "
        "this page rounds them for reading.",
        "",
        "## Workload",
        *_workload_section(analysis),
        "",
        *(
            ["## Stages of one video", *to_markdown(stage_table(analysis)), ""]
            if len(analysis.stages) > 1
            else []
        ),
        "## Totals (the DiT)",
        *to_markdown(_totals_table(analysis)),
        "",
        f"Attention core: **{percent(core.flops, f.flops)}** of all FLOPs "
        f"({percent(core.tensor_flops, f.tensor_flops)} of tensor-core FLOPs), "
        f"{si(core.flops, 'FLOP')} per forward, {si(core_video.flops, 'FLOP')} per video.",
        "",
        f"## Top {TOP_LAYERS} layers by FLOPs (per forward; × = copies across blocks)",
        *to_markdown(_layers(modules, forward, f.flops)),
        "",
        f"## Top {TOP_CATEGORIES} categories by FLOPs "
        f"(per forward; ×{analysis.forwards_per_video} per video)",
        *to_markdown(_categories(analysis)),
        "",
        "## Memory per GPU (one video)",
        *memory_lines(analysis, view.device if view else None),
        "",
        *(["## Time", *summary_lines(view, modules), ""] if view else []),
        *(
            ["## Many GPUs", *parallel_lines(view.plan, view.device.display_name), ""]
            if view and view.plan and view.device
            else []
        ),
        *(["## Check against the real model", *compare_lines(verdict, forward), ""] if verdict else []),
        *(["## Measured time (torch.profiler)", *profile_lines(modules, profile), ""] if profile else []),
        *(
            ["## Measured run (ingested trace)", *ingest_lines(modules, forward, ingest), ""]
            if ingest
            else []
        ),
        "## Notes (what is and is not modeled)",
        *[f"- {n}" for n in analysis.notes],
        "",
    ]
    return "\n".join(lines)
