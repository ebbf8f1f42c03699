"""``summary.md``: what a person reads first."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.cost import Cost
from ditmeter.analytic.tree import layer_pattern
from ditmeter.compare.gate import Verdict
from ditmeter.compare.mapping import STATUSES
from ditmeter.reports.device_report import DeviceView, profile_lines, summary_lines
from ditmeter.reports.format import binary_bytes, grouped, percent, si

TOP_LAYERS = 10
TOP_CATEGORIES = 5


def stage_lines(analysis: Analysis) -> list[str]:
    """The stage table: what one video runs, FLOPs per run and per video, share, parameters."""
    video = analysis.whole_video
    out = [
        "| stage | runs / video | one run | FLOPs / run | FLOPs / video | share | params |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for s in analysis.stages:
        out.append(
            f"| {s.name} | {s.runs_per_video} | {s.run} | {si(s.per_run.flops, 'FLOP')} | "
            f"{si(s.per_video.flops, 'FLOP')} | {percent(s.per_video.flops, video.flops)} | "
            f"{si(s.per_run.params)} |"
        )
    out.append(
        f"| **whole video** | | | | **{si(video.flops, 'FLOP')}** | 100.0% | "
        f"{si(sum(s.per_run.params for s in analysis.stages))} |"
    )
    return out


def top_layers(modules: pd.DataFrame, n: int = TOP_LAYERS) -> pd.DataFrame:
    """DiT leaf layers grouped across blocks, by tensor + CUDA FLOPs per forward."""
    leaves = modules[(modules["kind"] == "leaf") & (modules["stage"] == "dit")].copy()
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


def _totals_table(analysis: Analysis) -> list[str]:
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
    out = ["| metric | per DiT forward | per video | exact per forward |", "|---|---:|---:|---:|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return out


def _workload_section(analysis: Analysis) -> list[str]:
    w, g = analysis.workload, analysis.geometry
    out = [
        f"- Requested: batch {w.batch_size}, {w.num_frames} frames, {w.height}×{w.width}, "
        f"{w.num_inference_steps} steps, guidance {w.guidance_scale:g}, {w.dtype}",
        f"- Effective: {g.effective_frames} frames, {g.effective_height}×{g.effective_width} "
        f"(rounding rule: `{w.rounding}`)",
        f"- Latent {g.latent_frames}×{g.latent_height}×{g.latent_width} → "
        f"**{grouped(g.tokens)} video tokens** per sample",
        f"- Prompt {w.text_len} tokens; the DiT computes over **context_len {g.context_len}** tokens",
        f"- DiT forwards per video: {w.num_inference_steps} steps × {w.guidance_forwards} "
        f"(guidance) = **{analysis.forwards_per_video}**",
    ]
    out += [f"- Adjusted `{a.field}`: {a.requested} → {a.effective} ({a.reason})" for a in g.adjustments]
    return out


def _categories(analysis: Analysis) -> list[str]:
    cats = analysis.by_category()
    whole = analysis.per_forward.flops
    ranked = sorted(cats.items(), key=lambda kv: kv[1].flops, reverse=True)[:TOP_CATEGORIES]
    out = ["| category | FLOPs / forward | share | tensor-core | CUDA-core |", "|---|---:|---:|---:|---:|"]
    for name, c in ranked:
        out.append(
            f"| {name} | {si(c.flops, 'FLOP')} | {percent(c.flops, whole)} | "
            f"{si(c.tensor_flops, 'FLOP')} | {si(c.cuda_flops, 'FLOP')} |"
        )
    return out


def _layers(modules: pd.DataFrame, whole: int) -> list[str]:
    out = ["| layer | × | category | FLOPs / forward | share |", "|---|---:|---|---:|---:|"]
    for r in top_layers(modules).itertuples():
        out.append(
            f"| `{r.layer}` | {r.count} | {r.category} | {si(int(r.flops), 'FLOP')} | "
            f"{percent(int(r.flops), whole)} |"
        )
    return out


def error_text(err: float | None) -> str:
    """A relative error for people: ``0`` exactly, ``1.2e-06``, ``3.10%``, or ``undefined``."""
    if err is None:
        return "undefined (measured 0)"
    if err == 0:
        return "0 (exact)"
    return f"{err:.2e}" if err < 1e-4 else f"{100 * err:.2f}%"


def compare_lines(verdict: Verdict, shown: int = TOP_LAYERS) -> list[str]:
    """The compare section: verdict, end-to-end, coverage, worst modules first."""
    cov = verdict.coverage
    e2e = verdict.end_to_end()
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
    out += ["| node status | nodes | measured FLOPs | share |", "|---|---:|---:|---:|"]
    for status in STATUSES:
        out.append(
            f"| {status} | {grouped(cov.nodes[status])} | {si(cov.flops[status], 'FLOP')} | "
            f"{percent(cov.flops[status], cov.total_flops)} |"
        )
    if cov.unmatched_flop_nodes:
        out += ["", "Unmatched nodes with FLOPs (each fails the gate):"]
        out += [f"- `{n}`" for n in cov.unmatched_flop_nodes[:shown]]
    layers = verdict.layers()
    out += [
        "",
        f"Worst {min(shown, len(layers))} of {len(layers)} layers (× = copies across blocks; "
        "the error is the worst copy's):",
        "",
        "| module | × | analytic FLOPs | measured FLOPs | Δ FLOPs | max error | worst copy | gate |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for g in layers[:shown]:
        mark = "ok" if g.passed else f"**FAIL** {g.failed}/{g.count}"
        delta = grouped(g.measured - g.analytic)
        out.append(
            f"| `{g.layer or 'dit'}` | {g.count} | {si(g.analytic, 'FLOP')} | {si(g.measured, 'FLOP')} | "
            f"{delta} | {error_text(g.max_error)} | `{g.worst or 'dit'}` | {mark} |"
        )
    out += [
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
) -> str:
    """Markdown summary of one run (with the compare section when it was traced)."""
    f = analysis.per_forward
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
        *(["## Stages of one video", *stage_lines(analysis), ""] if len(analysis.stages) > 1 else []),
        "## Totals (the DiT)",
        *_totals_table(analysis),
        "",
        f"Attention core: **{percent(core.flops, f.flops)}** of all FLOPs "
        f"({percent(core.tensor_flops, f.tensor_flops)} of tensor-core FLOPs), "
        f"{si(core.flops, 'FLOP')} per forward, {si(core_video.flops, 'FLOP')} per video.",
        "",
        f"## Top {TOP_LAYERS} layers by FLOPs (per forward; × = copies across blocks)",
        *_layers(modules, f.flops),
        "",
        f"## Top {TOP_CATEGORIES} categories by FLOPs "
        f"(per forward; ×{analysis.forwards_per_video} per video)",
        *_categories(analysis),
        "",
        *(["## Time and memory", *summary_lines(view, modules), ""] if view else []),
        *(["## Check against the real model", *compare_lines(verdict), ""] if verdict else []),
        *(["## Measured time (torch.profiler)", *profile_lines(modules, profile), ""] if profile else []),
        "## Notes (what is and is not modeled)",
        *[f"- {n}" for n in analysis.notes()],
        "",
    ]
    return "\n".join(lines)
