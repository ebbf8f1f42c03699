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
  device=h100-sxm device.efficiency=0.6 measured_video_s=1800
  stages=[dit] stages=[text_encoder,dit,vae_decode]   (default: every stage of the model)

workload keys: batch_size num_frames height width num_inference_steps guidance_scale
               text_len context_len dtype(bf16|fp16|fp32) rounding(official|diffusers)
device (optional; predicted time, roofline.png, time_breakdown.png, memory fit):
               {devices}
"""


def _commands() -> list[tuple[str, str, str, str]]:
    """(name, one-line summary, description, epilog) of every subcommand; the file lists and the
    modules built come from the code that writes and builds them."""
    from ditmeter.config import choices
    from ditmeter.models import families
    from ditmeter.reports.run_files import DEVICE_FILES, PROFILE_FILES, REPORT_FILES, TRACE_FILES

    overrides_help = _OVERRIDES_HELP.format(devices=", ".join(choices("device")))
    tail = f"models: {', '.join(choices('model'))}\nworkloads: {', '.join(choices('workload'))}"
    folder = "<output_root>/<run_id>/static_analysis/<family>/"
    writes, device = ", ".join(REPORT_FILES), ", ".join(DEVICE_FILES)
    built = "\n".join(f"  {f.name}: {f.describe()}" for f in families().values())
    return [
        (
            "report",
            "analytic report of every stage of the video (no tracing, milliseconds)",
            f"Evaluate the analytic cost model of every selected stage and write {writes} "
            f"(and {device} with device=) under {folder}. Builds no module. Exit 0 ok, 2 bad input.",
            f"{overrides_help}\n{tail}",
        ),
        (
            "trace",
            "trace each stage's real module on meta, join it with the analytic rules, and gate",
            "Build the real module of every selected stage on the meta device (no weights), capture one "
            "run of each as a torch.fx graph with per-node FLOPs from torch.utils.flop_counter, map every "
            "node to its analytic rule, and gate analytic vs measured FLOPs per module. Writes everything "
            f"`report` writes plus {', '.join(TRACE_FILES)}. Exit 0 gate passed, 1 gate failed, 2 bad input.",
            f"modules built, per family and stage:\n{built}\n\n{overrides_help}\n"
            f"gate: compare.tolerance=0.05 (5%), compare.show=15 (table rows)\n\n{tail}",
        ),
        (
            "compare",
            "re-read a traced run's tables: per-module errors, coverage, verdict",
            "Re-read modules.parquet and nodes.parquet of a traced run (the newest traced run under "
            "output_root unless run_id= is given), print the per-module error table worst first, node "
            "coverage, and the gate's verdict. Builds and writes nothing. Exit 0 pass, 1 gate failure, "
            "2 bad input.",
            "overrides: run_id=RUN output_root=DIR compare.tolerance=0.05 compare.show=15",
        ),
        (
            "profile",
            "measure time per module with torch.profiler (random weights) and join it with the rules",
            "Build the forward stage's real module (the DiT) with random weights on profile.device_kind "
            "with profile.num_layers blocks, profile one forward op by op with torch.profiler, map every op "
            "to its analytic module as `trace` does, and write measured time, achieved FLOP/s and bandwidth "
            "per module (and the share of the roofline prediction with device=): "
            f"{writes}, {', '.join(PROFILE_FILES)} (and {device} with device=). profile.trace=PATH "
            "re-reads an earlier profile run's trace instead of running. Exit 0 ok, 2 bad input.",
            f"{overrides_help}\nprofile: profile.device_kind=cpu|cuda profile.num_layers=2 "
            f"profile.warmup=1 profile.trace=PATH\n\n{tail}",
        ),
    ]


def _parser() -> argparse.ArgumentParser:
    from ditmeter.config import choices

    p = argparse.ArgumentParser(
        prog="ditmeter",
        description="Where every FLOP and byte of a video diffusion transformer goes (Wan2.1): "
        "analytic cost rules checked against the real model.",
        epilog=f"models: {', '.join(choices('model'))}\nworkloads: {', '.join(choices('workload'))}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ditmeter {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary, description, epilog in _commands():
        cmd = sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def _cmd_trace(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.trace import trace
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    cfg = load(overrides)
    console.print(f"tracing {cfg.model.name} × {cfg.workload.name} on meta, stages: {', '.join(cfg.stages)}")
    show.print_adjustments(console, cfg.geometry)  # said before the long steps, not after
    result = trace(cfg, progress=show.StepPrinter(console))
    show.print_trace(console, result, cfg.compare.show)
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK if result.verdict.passed else EXIT_GATE


def _cmd_compare(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.compare import compare
    from ditmeter.config import load
    from ditmeter.reports import console as show

    for o in overrides:
        key = o.partition("=")[0].lstrip("+~")
        if key.split(".", 1)[0] in ("model", "workload"):
            raise ConfigError(key, "compare reads the model and workload from the run; give run_id=… instead")
    cfg = load(overrides)
    result = compare(cfg.output_root, cfg.run_id, cfg.compare.tolerance)
    show.print_compare(console, result, cfg.compare.show)
    return EXIT_OK if result.verdict.passed else EXIT_GATE


def _cmd_report(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.report import report
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    result = report(load(overrides))
    show.print_report(console, result)
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_profile(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.profile import profile
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    cfg = load(overrides)
    p = cfg.profile
    layers = min(p.num_layers, cfg.model.num_layers)
    what = f"re-reading {p.trace}" if p.trace else f"on {p.device_kind}, random weights"
    name = f"{cfg.model.name} × {cfg.workload.name}"
    console.print(f"profiling {name} with {layers} of {cfg.model.num_layers} blocks ({what})")
    result = profile(cfg, progress=show.StepPrinter(console))
    show.print_profile(console, result)
    show.print_wrote(console, result.analysis_dir, result.files, start)
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
