"""The ``ditmeter`` command line (also ``python -m ditmeter``).

Every subcommand takes Hydra overrides: ``model=NAME workload=NAME key=value``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn, cast

from rich.console import Console

from ditmeter import __version__
from ditmeter.errors import ConfigError

EXIT_OK, EXIT_GATE, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a process SIGTERM ended


def _commands() -> list[tuple[str, str, str, str]]:
    """(name, one-line summary, description, epilog) of every subcommand; the file lists and the
    modules built come from the code that writes and builds them."""
    from ditmeter.catalog import choices
    from ditmeter.commands.help import command_help
    from ditmeter.models import families
    from ditmeter.reports.ingest_report import INGEST_FILES
    from ditmeter.reports.run_files import DEVICE_FILES, PROFILE_FILES, REPORT_FILES, TRACE_FILES

    tail = f"models: {', '.join(choices('model'))}\nworkloads: {', '.join(choices('workload'))}"
    folder = "<output_root>/<run_id>/static_analysis/<family>/"
    writes, device = ", ".join(REPORT_FILES), ", ".join(DEVICE_FILES)
    built = "\n".join(
        f"  {f.name}: " + ", ".join(f"{stage}: {r.source}" for stage, r in f.references().items())
        for f in families().values()
    )
    return [
        (
            "report",
            "analytic report of every stage of the video (no tracing, milliseconds)",
            f"Evaluate the analytic cost model of every selected stage and write {writes} "
            f"(and {device} with device=) under {folder}. Builds no module. Exit 0 ok, 2 bad input.",
            f"{command_help('report')}\n\n{tail}",
        ),
        (
            "trace",
            "trace each stage's real module on meta, join it with the analytic rules, and gate",
            "Build the real module of every selected stage on the meta device (no weights), capture one "
            "run of each as a torch.fx graph with per-node FLOPs from torch.utils.flop_counter, map every "
            "node to its analytic rule, and gate analytic vs measured FLOPs per module. Writes everything "
            f"`report` writes plus {', '.join(TRACE_FILES)}. Exit 0 gate passed, 1 gate failed, 2 bad input.",
            f"modules built, per family and stage:\n{built}\n\n{command_help('trace')}\n\n{tail}",
        ),
        (
            "compare",
            "re-read a traced run's tables: per-module errors, coverage, verdict",
            "Re-read modules.parquet and nodes.parquet of a traced run (the newest traced run under "
            "output_root unless run_id= is given), print the per-module error table worst first, node "
            "coverage, and the gate's verdict. Builds and writes nothing. Exit 0 pass, 1 gate failure, "
            "2 bad input.",
            command_help("compare"),
        ),
        (
            "diff",
            "two runs side by side: per video, stage, category and module, with deltas and ratios",
            "Read two run folders (RUN_A RUN_B: run ids under output_root, or paths to run folders) and "
            "set them side by side: FLOPs, bytes, predicted and measured time and memory per video, per "
            "stage, per category of the forward stage and per module, with B - A and B / A. Two "
            "workloads, devices, plans or pipelines, or a predicted run against a profiled one. Prints "
            "the tables and writes diff.parquet (every row) and diff.md under "
            "<output_root>/<run_id>/static_analysis/diff/. Gates nothing. Exit 0 ok, 2 bad input.",
            "usage: ditmeter diff RUN_A RUN_B [output_root=DIR] [run_id=NAME]\n"
            "example: ditmeter report model=wan2.1-t2v-14b workload=480p-81f device=h100-sxm run_id=a\n"
            "         ditmeter report model=wan2.1-t2v-14b workload=720p-81f device=h100-sxm run_id=b\n"
            "         ditmeter diff a b\n\n" + command_help("diff"),
        ),
        (
            "validate",
            "the tool's accuracy: public measurements of real Wan runs against their prediction",
            "Predict every public measurement of a real Wan run shipped in data/measurements/ (the "
            "Wan2.1 and Wan2.2 READMEs' efficiency tables, methods' baseline rows; each point with its "
            "source, quote and what it does not state) under its stated settings, and print predicted "
            "vs measured with the relative error, the median and max per GPU, framework and GPU count. "
            "Writes validate.parquet, validate.md and validate.png (log axes, y = x, ±10% band) under "
            "<output_root>/<run_id>/static_analysis/validate/. Gates nothing. Exit 0 ok, 2 bad input.",
            "usage: ditmeter validate [validate.data=DIR] [time.execution=eager|compiled] "
            "[time.fp32_matmul=ieee|tf32] [output_root=DIR] [run_id=NAME]\n"
            "example: ditmeter validate\n"
            "         ditmeter validate time.execution=compiled run_id=fused\n"
            "         ditmeter validate time.fp32_matmul=tf32   # as if every run had TF32 matmuls (NGC)\n\n"
            + command_help("validate"),
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
            "ingest its torch_profiler/trace.json (Python stacks and shapes recorded) at its block count:\n"
            "  ditmeter ingest trace=RUN/static_analysis/wan2_1/torch_profiler/trace.json "
            "model=wan2.1-t2v-1.3b workload=w001-tiny pipeline=diffusers model.num_layers=2\n\n"
            f"{command_help('profile')}\n\n{tail}",
        ),
        (
            "ingest",
            "join a torch.profiler trace of your own run to the module tree, against the prediction",
            "Read a torch.profiler Chrome trace (trace=PATH, .json or .json.gz) of a real run of the "
            "official generate.py or the diffusers pipeline, recorded with with_stack=True (and "
            "record_shapes=True): ops are placed in their module calls, GPU kernels joined to the "
            "ops that launched them (External id, else correlation), module calls resolved to the "
            "real module's paths, and the ops mapped to the analytic leaves as `trace` maps them (every "
            "stage under diffusers, the DiT under the official code, whose T5, CLIP and VAE are "
            "measured whole). "
            "Measured time (GPU time on a GPU trace, else CPU) per run of each stage (per forward for "
            "the DiT), per module and category, with achieved FLOP/s against the analytic FLOPs and, "
            "with device=, predicted / measured; GPU idle time and the share of communication "
            "kernels; the forwards and steps found; the trace's FLOPs (torch's formulas on its "
            "recorded shapes) against the analytic, leaf by leaf. Writes "
            f"{writes}, {', '.join(INGEST_FILES)} (and {device} with device=) under {folder}. "
            "Exit 0 ok, 2 bad input.",
            "example: ditmeter ingest trace=run.json.gz model=wan2.1-t2v-1.3b workload=480p-81f "
            "pipeline=diffusers device=h100-sxm\n"
            "record:  with torch.profiler.profile(activities=[CPU, CUDA], with_stack=True, "
            "record_shapes=True) as prof: ...; prof.export_chrome_trace('run.json')\n"
            "workload= must be the run's (sizes, steps, guidance): the prediction is made for it.\n\n"
            f"{command_help('ingest')}\n\n{tail}",
        ),
        (
            "calibrate",
            "measure the model's own kernels on this machine and write a calibration file",
            "Time every GEMM, attention and convolution shape of the selected stages (at the workload) "
            "and the element-wise bandwidth and per-op overhead on device_kind=cpu|cuda "
            "(torch.utils.benchmark on cuda, a timed loop on cpu), fit them as fractions of the device's "
            "peaks (cuda: device=NAME's; cpu: the best rates measured) and write a YAML calibration file. "
            "calibration=PATH then makes "
            "report, trace and profile predict with it. Exit 0 ok, 2 bad input.",
            "overrides: model=NAME workload=NAME device_kind=cpu|cuda device=NAME stages=[dit]\n"
            "  calibrate.output=PATH calibrate.max_flops=2e10 calibrate.min_run_time=0.2\n"
            "example: ditmeter calibrate model=wan2.1-t2v-1.3b workload=w001-tiny stages=[dit]\n"
            "         ditmeter report model=wan2.1-t2v-1.3b workload=w001-tiny calibration=PATH\n\n"
            f"{command_help('calibrate')}\n\n{tail}",
        ),
        (
            "sweep",
            "the analytic model over a grid of models, workloads, devices and plan keys",
            "Every key given as a list is an axis (model=[a,b] device=[h100-sxm,a100-sxm-80gb] "
            "workload.num_frames=[33,49,81] attention=[fa2,fa3] time.mode=[predicted,roofline]); the grid "
            "is their product. Each point is costed analytically (no tracing) and predicted on its device: "
            "writes sweep.parquet (one row per point: the axes, FLOPs and bytes per video, peak memory per "
            "GPU and whether it fits, time per video, forward and step, per stage and the DiT's share by "
            "category) and time_vs_frames.png, time_vs_resolution.png, category_share.png under "
            "<output_root>/<run_id>/static_analysis/sweep/. Needs device=. Exit 0 ok, 2 bad input.",
            "example (quote the brackets for the shell):\n"
            "  ditmeter sweep model=wan2.1-t2v-14b workload=720p-81f 'device=[h100-sxm,a100-sxm-80gb]' "
            "'workload.num_frames=[17,33,49,65,81]'\n\n"
            f"{command_help('sweep')}\n\n{tail}",
        ),
        (
            "plan",
            "every plan that runs a video on exactly N GPUs, ranked by predicted seconds per video",
            "Enumerate parallel.ulysses × parallel.ring × parallel.cfg = gpus (one node of 8, a GB200 "
            "NVL72 rack of 72, or whole nodes over the device's network), each "
            "with parallel.dit_fsdp and parallel.t5_fsdp off and on; cost each as `report` costs it with "
            "those overrides; rank by seconds per video with the speedup and efficiency over one GPU, the "
            "communication nothing hides, the peak memory per GPU and whether it fits, videos per GPU-hour "
            "(and the cost per video with plan.price_per_gpu_hour=). Names the best plan and the best that "
            "fits, the data-parallel split with the most videos per hour, warns of plans slower than the "
            "best on half the GPUs, lists the plans the pipeline "
            "cannot run with the reason. Writes plan.parquet and plan.md under "
            "<output_root>/<run_id>/static_analysis/plan/. Needs device=. Exit 0 ok, 2 bad input.",
            "example:\n  ditmeter plan model=wan2.1-t2v-14b workload=720p-81f device=h100-sxm gpus=8\n\n"
            f"{command_help('plan')}\n\n{tail}",
        ),
        (
            "whatif",
            "the video under each speed-up method (caching, few steps, FP8, compile, CUDA graphs), on one "
            "GPU or a plan",
            "Cost the baseline and the same video under each what-if of whatif=[...] alone and all of them "
            "together, each as `report` costs it with the method's overrides (the mechanism: which forwards "
            "run the blocks, which kernels run, in which dtype): seconds per video, speed-up, where the "
            "DiT's time goes (compute-, memory-, launch-bound), peak memory and whether it fits. With "
            "parallel.* every row is one GPU of that plan (its exposed communication too). Quality is "
            "not modelled. Writes whatif.parquet, whatif.md and whatif.png under "
            "<output_root>/<run_id>/static_analysis/whatif/. Needs device=. Exit 0 ok, 2 bad input.",
            "example:\n  ditmeter whatif model=wan2.1-t2v-14b workload=720p-81f device=h100-sxm "
            "'whatif=[fp8,teacache]' methods.cache_skip=0.5\n\n"
            f"{command_help('whatif')}\n\n{tail}",
        ),
    ]


@functools.cache  # the help text composes every config (~0.2 s); build it once per process
def _parser() -> argparse.ArgumentParser:
    from ditmeter.catalog import choices

    p = _OneLineParser(
        prog="ditmeter",
        description="Where every FLOP and byte of a video diffusion transformer goes (Wan2.1 and Wan2.2): "
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
    cfg = load(overrides, "trace")
    console.print(f"tracing {cfg.model.name} × {cfg.workload.name} on meta, stages: {', '.join(cfg.stages)}")
    cp = cfg.parallel.sequence
    if cp.degree > 1:
        console.print(
            f"  the DiT as rank 0 of diffusers' context parallelism (ulysses {cp.ulysses} × ring {cp.ring}) "
            "under torch's fake process group: per-module FLOPs and every collective against the plan "
            "(its live-memory check runs on one GPU only)"
            + (
                "; FSDP and CFG parallel are costed, not traced"
                if cfg.parallel.gpus > cp.degree or cfg.parallel.dit_fsdp
                else ""
            )
        )
    show.print_adjustments(console, cfg.geometry)  # said before the long steps, not after
    result = trace(cfg, progress=show.StepPrinter(console))
    show.print_trace(console, result, cfg.compare.show)
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK if result.verdict.passed else EXIT_GATE


def _cmd_compare(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.compare import compare
    from ditmeter.config import load
    from ditmeter.reports import console as show

    cfg = load(overrides, "compare")
    result = compare(cfg.output_root, cfg.run_id, cfg.compare.tolerance)
    show.print_compare(console, result, cfg.compare.show)
    return EXIT_OK if result.verdict.passed else EXIT_GATE


def _cmd_diff(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.diff import diff
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    runs = [a for a in overrides if "=" not in a]
    if len(runs) != 2:
        raise ConfigError(
            "arguments", f"diff takes two runs, RUN_A RUN_B; got {len(runs)} (see ditmeter diff --help)"
        )
    cfg = load([a for a in overrides if "=" in a], "diff")
    result = diff(cfg.output_root, runs[0], runs[1], cfg.run_id)
    show.print_diff(console, result)
    assert result.analysis_dir is not None  # written
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_validate(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.validate import validate
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    data = [a.partition("=")[2] for a in overrides if a.startswith("validate.data=")]
    rest = [a for a in overrides if not a.startswith("validate.data=")]
    stray = [a for a in rest if "=" not in a]
    if stray:
        raise ConfigError("arguments", f"validate takes KEY=VALUE overrides only; got {stray[0]!r}")
    if data and not data[-1]:
        raise ConfigError("validate.data", "must name a folder of measurement YAML files")
    cfg = load(rest, "validate")
    folder = Path(data[-1]) if data else None
    t = cfg.time
    result = validate(cfg.output_root, folder, cfg.run_id, t.execution, fp32_matmul=t.fp32_matmul)
    show.print_validate(console, result)
    assert result.analysis_dir is not None  # written
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_report(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.report import report
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    result = report(load(overrides, "report"))
    show.print_report(console, result)
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_profile(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.profile import profile
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    cfg = load(overrides, "profile")
    p = cfg.profile
    layers = min(p.num_layers, cfg.model.num_layers)
    what = f"re-reading {p.trace}" if p.trace else f"on {p.device_kind}, random weights"
    name = f"{cfg.model.name} × {cfg.workload.name}"
    console.print(f"profiling {name} with {layers} of {cfg.model.num_layers} blocks ({what})")
    result = profile(cfg, progress=show.StepPrinter(console))
    show.print_profile(console, result)
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_ingest(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.ingest import ingest
    from ditmeter.config import load
    from ditmeter.reports import console as show

    start = time.perf_counter()
    cfg = load(overrides, "ingest")
    console.print(
        f"ingesting {cfg.ingest_trace} as {cfg.model.name} × {cfg.workload.name} ({cfg.workload.pipeline})"
    )
    show.print_adjustments(console, cfg.geometry)
    result = ingest(cfg, progress=show.StepPrinter(console))
    show.print_ingest(console, result)
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_calibrate(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.calibrate import calibrate
    from ditmeter.config import load
    from ditmeter.reports import console as show

    cfg = load(overrides, "calibrate")
    where = cfg.calibrate.device_kind + (f" ({cfg.device.name})" if cfg.device is not None else "")
    console.print(
        f"calibrating {cfg.model.name} × {cfg.workload.name} on {where}, stages: {', '.join(cfg.stages)}"
    )
    result = calibrate(cfg, progress=show.StepPrinter(console))
    show.print_calibration(console, result)
    return EXIT_OK


def _cmd_sweep(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.sweep import run_sweep
    from ditmeter.reports import console as show

    return run_sweep(overrides, console, progress=show.StepPrinter(console))


def _cmd_plan(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.plan import run_plan

    return run_plan(overrides, console)


def _cmd_whatif(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.whatif import run_whatif

    return run_whatif(overrides, console)


class _Stdout(io.TextIOBase):
    """stdout that never breaks a run: a closed stdout or a reader that went away (``| head``) only
    loses the text; a stdout that cannot be written (``> /dev/full``) is remembered and reported;
    characters the encoding lacks (``PYTHONIOENCODING=ascii``) are replaced."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.failed: OSError | None = None
        self.gone = stream is None

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "ascii"
                self._write(text.encode(encoding, errors="replace").decode(encoding))
            except OSError as exc:
                self._lost(exc)
        return len(text)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except OSError as exc:
            self._lost(exc)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except OSError as exc:
                self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        self.gone = True
        if not isinstance(exc, BrokenPipeError):
            self.failed = exc
        with contextlib.suppress(OSError, ValueError):  # nothing more reaches fd 1, not even at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())

    def isatty(self) -> bool:
        return not self.gone and bool(getattr(self.stream, "isatty", lambda: False)())


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is the contract's one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError("arguments", f"{message} (see ditmeter --help)")


def _output_root(argv: list[str]) -> Path:
    """Where a crash log goes: the output_root the command line names, else the default."""
    given = [a.partition("=")[2] for a in argv if a.partition("=")[0].lstrip("+") == "output_root"]
    return Path(given[-1] if given and given[-1] else "tmp/profile-output")


def _crash_log(argv: list[str]) -> str:
    """Write the traceback of an internal error to a log in the output root (or, where that cannot
    be written, the temp dir); where it went, said so."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    text = f"ditmeter {__version__} {' '.join(argv)}\n{traceback.format_exc()}"
    root = _output_root(argv)
    for folder in (root, Path(tempfile.gettempdir())):
        path = folder / f"ditmeter-error-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
            continue
        return str(path) if folder == root else f"{path} (output_root {str(root)[:200]} is unusable)"
    return f"no file: neither output_root {str(root)[:200]} nor {tempfile.gettempdir()} can be written"


class _Terminated(BaseException):
    """SIGTERM (``timeout``, job schedulers), raised where the run is, so it unwinds as Ctrl-C does."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not break the clean-up
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`_Terminated` (only the main thread can set a
    handler; elsewhere, as under a thread pool, the default stays)."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_COMMANDS = {
    "report": _cmd_report,
    "trace": _cmd_trace,
    "compare": _cmd_compare,
    "diff": _cmd_diff,
    "validate": _cmd_validate,
    "profile": _cmd_profile,
    "ingest": _cmd_ingest,
    "calibrate": _cmd_calibrate,
    "sweep": _cmd_sweep,
    "plan": _cmd_plan,
    "whatif": _cmd_whatif,
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status: 0 ok, 1 gate failed, 2 bad input or unusable
    environment (one line on stderr naming the field or path, nothing written), 3 internal error
    (one line on stderr saying where the traceback was logged); Ctrl-C 130 and SIGTERM 143, one
    line, the run's staging folder removed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _Stdout(sys.stdout)
    # markup=False: names and paths from the user print as written ("w001-tiny[batch_size=2]").
    # A terminal's width, or COLUMNS where it is set (rich reads it); logs and pipes without it get
    # 120 columns (rich's default is 80), so tables keep whole numbers.
    console = Console(
        file=cast(IO[str], out),
        markup=False,
        highlight=False,
        soft_wrap=True,
        width=None if out.isatty() or os.environ.get("COLUMNS", "").isdigit() else 120,
    )
    err = Console(
        file=cast(IO[str], _Stdout(sys.stderr)), markup=False, highlight=False, soft_wrap=True, width=10_000
    )
    try:
        with _sigterm_unwinds():
            args = _parser().parse_args(argv)
            status = _COMMANDS[args.command](args.overrides, console)
    except ConfigError as exc:
        err.print(f"ditmeter: error: {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err.print("ditmeter: interrupted; nothing was published")
        return 130
    except _Terminated:
        err.print("ditmeter: terminated (SIGTERM); nothing was published")
        return EXIT_TERMINATED
    except Exception as exc:  # the contract: a crash is exit 3 with its traceback in a log, never a dump
        log = _crash_log(argv)
        what = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        err.print(f"ditmeter: internal error: {what}; traceback in {log}")
        return EXIT_INTERNAL
    out.flush()
    if out.failed is not None:
        why = out.failed.strerror or out.failed
        err.print(f"ditmeter: error: stdout: cannot write the output ({why}); the run itself completed")
        return EXIT_BAD_INPUT
    return status


if __name__ == "__main__":
    sys.exit(main())
