"""The ``ditmeter`` command line (also ``python -m ditmeter``).

Every subcommand takes Hydra overrides: ``model=NAME workload=NAME key=value``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from ditmeter import __version__
from ditmeter.errors import ConfigError

if TYPE_CHECKING:
    from ditmeter.compare.gate import Verdict
    from ditmeter.reports.device_report import DeviceView

EXIT_OK, EXIT_GATE, EXIT_BAD_INPUT = 0, 1, 2

_OVERRIDES_HELP = """\
Hydra overrides, e.g.:
  model=wan2.1-t2v-14b workload=720p-81f
  workload.num_frames=33 workload.height=480 workload.width=832
  workload.batch_size=2 workload.guidance_scale=1 workload.context_len=226
  workload.dtype=fp16 workload.rounding=diffusers output_root=/tmp/runs run_id=my-run
  device=h100-sxm device.efficiency=0.6 measured_video_s=1800
  stages=[dit] stages=[text_encoder,dit,vae_decode]   (default: every stage of the model)

workload keys: batch_size num_frames height width num_inference_steps guidance_scale
               text_len context_len dtype(bf16|fp16|fp32) rounding(official|diffusers)
device (optional; predicted time, roofline.png, time_breakdown.png, memory fit):
               {devices}
"""


def _parser() -> argparse.ArgumentParser:
    from ditmeter.config import choices

    models, workloads = ", ".join(choices("model")), ", ".join(choices("workload"))
    overrides_help = _OVERRIDES_HELP.format(devices=", ".join(choices("device")))
    p = argparse.ArgumentParser(
        prog="ditmeter",
        description="Where every FLOP and byte of a Wan2.1 video goes: analytic cost rules "
        "checked against the real model.",
        epilog=f"models: {models}\nworkloads: {workloads}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ditmeter {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rep = sub.add_parser(
        "report",
        help="analytic report of one DiT forward and the whole video",
        description="Evaluate the analytic cost model and write report.json, modules.parquet "
        "and summary.md under <output_root>/<run_id>/static_analysis/wan2_1/.",
        epilog=f"{overrides_help}\nmodels: {models}\nworkloads: {workloads}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    tr = sub.add_parser(
        "trace",
        help="trace the real model on meta, join it with the analytic rules, and gate",
        description="Build the diffusers WanTransformer3DModel on the meta device (no weights), "
        "capture one forward as a torch.fx graph with per-node FLOPs from torch.utils.flop_counter, "
        "map every node to its analytic rule, and gate analytic vs measured FLOPs per module. "
        "Writes everything `report` writes plus nodes.parquet and graph.json. "
        "Exit 0 gate passed, 1 gate failed, 2 bad input.",
        epilog=f"{overrides_help}\ngate: compare.tolerance=0.05 (5%), compare.show=15 (table rows)\n\n"
        f"models: {models}\nworkloads: {workloads}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    cmp_ = sub.add_parser(
        "compare",
        help="re-read a traced run's tables: per-module errors, coverage, verdict",
        description="Re-read modules.parquet and nodes.parquet of a traced run (the newest traced "
        "run under output_root unless run_id= is given), print the per-module error table worst "
        "first, node coverage, and the gate's verdict. Exit 0 pass, 1 gate failure, 2 bad input.",
        epilog="overrides: run_id=RUN output_root=DIR compare.tolerance=0.05 compare.show=15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp_.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    prof = sub.add_parser(
        "profile",
        help="measure time per module with torch.profiler (random weights) and join it with the rules",
        description="Build the diffusers DiT with random weights on profile.device_kind with "
        "profile.num_layers blocks, profile one forward op by op with torch.profiler, map every op to "
        "its analytic module as `trace` does, and write measured time, achieved FLOP/s and bandwidth "
        "per module (and the share of the roofline prediction with device=) into modules.parquet, plus "
        "the Chrome trace under torch_profiler/. profile.trace=PATH re-reads an earlier profile run's "
        "trace instead of running.",
        epilog=f"{overrides_help}\nprofile: profile.device_kind=cpu|cuda profile.num_layers=2 "
        f"profile.warmup=1 profile.trace=PATH\n\nmodels: {models}\nworkloads: {workloads}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prof.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


class _Steps:
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


_STEP_LABELS = {
    "profile": "profile one forward op by op (torch.profiler)",
    "build": "build the real module",
    "capture": "capture one run (fx graph, per-node FLOPs)",
    "map": "map nodes to analytic rules",
    "join": "join, roll up per module, gate",
    "write": "write the run folder",
}


def _coverage_table(verdict: Verdict) -> Table:
    from ditmeter.compare.mapping import STATUSES
    from ditmeter.reports.format import grouped, percent

    cov = verdict.coverage
    table = Table(title="node coverage", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("status", "nodes", "measured FLOPs", "share"):
        table.add_column(col, justify="left" if col == "status" else "right", overflow="fold")
    for status in STATUSES:
        table.add_row(
            status,
            grouped(cov.nodes[status]),
            grouped(cov.flops[status]),
            percent(cov.flops[status], cov.total_flops),
        )
    return table


def _layers_table(verdict: Verdict, shown: int) -> Table:
    from ditmeter.reports.format import grouped, si
    from ditmeter.reports.summary import error_text

    layers = verdict.layers()
    table = Table(
        title=f"modules by layer, worst first ({min(shown, len(layers))} of {len(layers)} layers, "
        f"{len(verdict.checks)} modules compared; × = copies across blocks)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("module", "×", "analytic", "measured", "Δ FLOPs", "max error", "gate"):
        left = col in ("module", "gate")
        table.add_column(col, justify="left" if left else "right", overflow="fold", no_wrap=col == "module")
    for g in layers[:shown]:
        table.add_row(
            g.layer or "dit",
            str(g.count),
            si(g.analytic),
            si(g.measured),
            grouped(g.measured - g.analytic),
            error_text(g.max_error).removesuffix(" (measured 0)").removesuffix(" (exact)"),
            "ok" if g.passed else f"FAIL {g.failed}/{g.count}",
            style=None if g.passed else "red",
        )
    return table


def _verdict_line(verdict: Verdict) -> str:
    from ditmeter.reports.summary import error_text

    reasons = []
    if verdict.failures:
        worst = ", ".join(c.module_id or "dit" for c in verdict.failures[:5])
        more = len(verdict.failures) - 5
        reasons.append(
            f"{len(verdict.failures)} modules over tolerance, worst: {worst}"
            + (f" (+{more} more)" if more > 0 else "")
        )
    if verdict.coverage.unmatched_flop_nodes:
        reasons.append(f"{len(verdict.coverage.unmatched_flop_nodes)} unmatched nodes carry FLOPs")
    word = "PASS" if verdict.passed else "FAIL"
    return (
        f"gate: {word} at tolerance {100 * verdict.tolerance:g}%, max error {error_text(verdict.max_error)}"
        + (f" — {'; '.join(reasons)}" if reasons else "")
    )


def _print_verdict(console: Console, verdict: Verdict, shown: int) -> None:
    from ditmeter.reports.format import grouped
    from ditmeter.reports.summary import error_text

    console.print(_coverage_table(verdict))
    for name in verdict.coverage.unmatched_flop_nodes[:shown]:
        console.print(f"unmatched node with FLOPs: {name}", style="red")
    console.print(_layers_table(verdict, shown))
    from ditmeter.analytic.pipeline import STAGES

    for c in verdict.checks:
        if c.module_id == "" or c.module_id in STAGES:  # each stage's root: one whole run
            console.print(
                f"end to end, one run of {c.module_id or 'dit'}: analytic {grouped(c.analytic)} vs measured "
                f"{grouped(c.measured)} FLOPs, error {error_text(c.rel_error)}"
            )
    console.print(_verdict_line(verdict), style="green" if verdict.passed else "red")


def _cmd_trace(overrides: list[str], console: Console) -> int:
    from ditmeter.analytic.geometry import geometry
    from ditmeter.config import load
    from ditmeter.reports.trace_report import trace

    start = time.perf_counter()
    cfg = load(overrides)
    console.print(f"tracing {cfg.model.name} × {cfg.workload.name} on meta, stages: {', '.join(cfg.stages)}")
    g = geometry(cfg.model, cfg.workload)  # said before the long steps, not after
    for adj in g.adjustments:
        console.print(
            f"adjusted workload.{adj.field}: {adj.requested} → {adj.effective} ({adj.reason})",
            style="yellow",
        )
    result = trace(cfg, progress=_Steps(console))
    console.print(
        f"{g.tokens:,} tokens, context {g.context_len}; graph {result.graph_nodes:,} nodes, "
        f"{result.graph_edges:,} edges"
    )
    _print_verdict(console, result.verdict, cfg.show)
    _print_device(console, result.view)
    console.print(
        f"wrote {result.analysis_dir}/ ({', '.join(result.files)}) in {time.perf_counter() - start:.2f} s"
    )
    return EXIT_OK if result.verdict.passed else EXIT_GATE


def _cmd_compare(overrides: list[str], console: Console) -> int:
    from ditmeter.config import load
    from ditmeter.reports.trace_report import compare

    for o in overrides:
        key = o.partition("=")[0].lstrip("+~")
        if key.split(".", 1)[0] in ("model", "workload"):
            raise ConfigError(key, "compare reads the model and workload from the run; give run_id=… instead")
    cfg = load(overrides)
    result = compare(cfg.output_root, cfg.run_id, cfg.tolerance)
    console.print(f"run {result.run_id}: {result.model} × {result.workload}")
    console.print(f"tables: {result.analysis_dir}/modules.parquet, nodes.parquet")
    _print_verdict(console, result.verdict, cfg.show)
    return EXIT_OK if result.verdict.passed else EXIT_GATE


def _print_device(console: Console, view: DeviceView) -> None:
    from ditmeter.reports.device_report import FIT_SCOPE
    from ditmeter.reports.format import binary_bytes, percent

    f = view.footprint
    line = (
        f"memory: DiT weights {binary_bytes(f.weight_bytes)}, peak activation "
        f"{binary_bytes(f.peak_activation_bytes)} ({f.peak_stage} stage)"
    )
    p = view.prediction
    if p is None:
        console.print(line)
        return
    d, t = p.device, p.per_forward
    others = ", ".join(f"{k} {binary_bytes(sum(w.values()))}" for k, w in view.others.items())
    console.print(f"{line}; other weights: {others or 'not counted'}")

    def fit(need: int) -> str:
        verdict = "fits" if need <= d.memory_bytes else "DOES NOT FIT"
        return f"{binary_bytes(need)} of {binary_bytes(d.memory_bytes)} → {verdict}"

    console.print(
        f"memory fit: with offload {fit(f.total_bytes)}; without offload {fit(view.resident_without_offload)}"
    )
    console.print(f"  ({FIT_SCOPE})")
    console.print(
        f"predicted on {d.display_name} (efficiency {d.efficiency:g}): {t.predicted_s:.3g} s per forward, "
        f"{p.per_step_s:.3g} s per step, {p.per_video_s:,.1f} s per video; "
        f"{percent(t.compute_bound_s, t.predicted_s)} of the time compute-bound"
    )
    if view.mfu is not None:
        console.print(f"measured {view.measured_video_s:g} s per video → MFU {100 * view.mfu:.1f}%")


def _cmd_report(overrides: list[str], console: Console) -> int:
    from ditmeter.config import load
    from ditmeter.reports.analytic_report import write_report
    from ditmeter.reports.format import percent, si

    start = time.perf_counter()
    cfg = load(overrides)
    result = write_report(cfg)
    a = result.analysis
    f, v = a.per_forward, a.per_video
    console.print(
        f"{cfg.model.name} × {cfg.workload.name}: "
        f"{a.geometry.tokens:,} tokens, context {a.geometry.context_len}, "
        f"{a.forwards_per_video} forwards per video"
    )
    for adj in a.geometry.adjustments:
        console.print(
            f"adjusted workload.{adj.field}: {adj.requested} → {adj.effective} ({adj.reason})",
            style="yellow",
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
    if len(a.stages) > 1:
        parts = ", ".join(f"{s.name} ×{s.runs_per_video} {si(s.per_video.flops, 'FLOP')}" for s in a.stages)
        console.print(f"whole video: {si(a.whole_video.flops, 'FLOP')} ({parts})")
    _print_device(console, result.view)
    console.print(
        f"wrote {result.analysis_dir}/ ({', '.join(result.files)}) in {time.perf_counter() - start:.2f} s"
    )
    return EXIT_OK


def _cmd_profile(overrides: list[str], console: Console) -> int:
    from ditmeter.config import load
    from ditmeter.reports.device_report import measured_by_category
    from ditmeter.reports.format import percent
    from ditmeter.reports.profile_report import profile

    start = time.perf_counter()
    cfg = load(overrides)
    p = cfg.profile
    layers = min(p.num_layers, cfg.model.num_layers)
    what = f"re-reading {p.trace}" if p.trace else f"on {p.device_kind}, random weights"
    name = f"{cfg.model.name} × {cfg.workload.name}"
    console.print(f"profiling {name} with {layers} of {cfg.model.num_layers} blocks ({what})")
    result = profile(cfg, progress=_Steps(console))
    s = result.summary
    console.print(
        f"forward: {s.forward_s:.4g} s measured, {percent(s.in_nodes_s, s.forward_s)} inside the ops; "
        f"scaled to {s.model_layers} blocks ≈ {s.full_forward_s:.4g} s"
    )
    table = Table(title="measured time by category", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("category", "time / forward", "share", "TFLOP/s", "GB/s", "roofline fraction"):
        table.add_column(col, justify="left" if col == "category" else "right", overflow="fold")
    for r in measured_by_category(result.modules).itertuples():
        frac = "-" if r.roofline_fraction != r.roofline_fraction else f"{100 * r.roofline_fraction:.1f}%"
        table.add_row(
            r.category,
            f"{r.measured_time_s * 1e3:.3f} ms",
            percent(r.measured_time_s, s.in_nodes_s),
            f"{r.achieved_flop_per_s / 1e12:.3g}",
            f"{r.achieved_bytes_per_s / 1e9:.3g}",
            frac,
        )
    console.print(table)
    console.print(
        f"wrote {result.analysis_dir}/ ({', '.join(result.files)}) in {time.perf_counter() - start:.2f} s"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 gate failure, 2 bad input)."""
    args = _parser().parse_args(argv)
    # markup=False: names and paths from the user print as written ("w001-tiny[batch_size=2]").
    # Logs and pipes get 120 columns (rich's default is 80), so tables keep whole numbers.
    width = None if sys.stdout.isatty() else 120
    console = Console(markup=False, highlight=False, soft_wrap=True, width=width)
    err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
    try:
        if args.command == "report":
            return _cmd_report(args.overrides, console)
        if args.command == "trace":
            return _cmd_trace(args.overrides, console)
        if args.command == "compare":
            return _cmd_compare(args.overrides, console)
        if args.command == "profile":
            return _cmd_profile(args.overrides, console)
    except ConfigError as exc:
        err.print(f"ditmeter: error: {exc}")
        return EXIT_BAD_INPUT
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
