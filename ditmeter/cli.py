"""The ``ditmeter`` command line (also ``python -m ditmeter``).

Every subcommand takes Hydra overrides: ``model=NAME workload=NAME key=value``.
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console

from ditmeter import __version__
from ditmeter.errors import ConfigError

EXIT_OK, EXIT_GATE, EXIT_BAD_INPUT = 0, 1, 2

_OVERRIDES_HELP = """\
Hydra overrides, e.g.:
  model=wan2.1-t2v-14b workload=720p-81f
  workload.num_frames=33 workload.height=480 workload.width=832
  workload.batch_size=2 workload.guidance_scale=1 workload.context_len=226
  workload.dtype=fp16 workload.rounding=diffusers output_root=/tmp/runs run_id=my-run

workload keys: batch_size num_frames height width num_inference_steps guidance_scale
               text_len context_len dtype(bf16|fp16|fp32) rounding(official|diffusers)
"""


def _parser() -> argparse.ArgumentParser:
    from ditmeter.config import choices

    models, workloads = ", ".join(choices("model")), ", ".join(choices("workload"))
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
        epilog=f"{_OVERRIDES_HELP}\nmodels: {models}\nworkloads: {workloads}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


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
    console.print(
        f"wrote {result.analysis_dir}/ (report.json, modules.parquet, summary.md) "
        f"in {time.perf_counter() - start:.2f} s"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 gate failure, 2 bad input)."""
    args = _parser().parse_args(argv)
    # markup=False: names and paths from the user print as written ("w001-tiny[batch_size=2]").
    console = Console(markup=False, highlight=False, soft_wrap=True)
    err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
    try:
        if args.command == "report":
            return _cmd_report(args.overrides, console)
    except ConfigError as exc:
        err.print(f"ditmeter: error: {exc}")
        return EXIT_BAD_INPUT
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
