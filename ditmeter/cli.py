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
from typing import IO, TYPE_CHECKING, Any, NoReturn, cast

from rich.console import Console

from ditmeter import __version__
from ditmeter.errors import ConfigError

if TYPE_CHECKING:
    from ditmeter.config import RunConfig

EXIT_OK, EXIT_GATE, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a process SIGTERM ended


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
    from ditmeter.commands.help import commands

    for name, summary, description, epilog in commands():
        cmd = sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def _load(console: Console, overrides: list[str], command: str) -> RunConfig:
    """:func:`ditmeter.config.load`, then what it chose for the user (a model's own workload)."""
    from ditmeter.config import load
    from ditmeter.reports.console import print_notes

    cfg = load(overrides, command)
    print_notes(console, cfg.notes)
    return cfg


def _load_run(console: Console, overrides: list[str], command: str) -> RunConfig:
    """:func:`_load` for a command that publishes a run folder after a header and long work
    (``trace``, ``profile``, ``ingest``): a run folder that cannot be published is refused first,
    one line and no header; publishing checks it again."""
    from ditmeter.reports.run_dir import check_run_folder

    cfg = _load(console, overrides, command)
    check_run_folder(cfg.output_root, cfg.run_id)
    return cfg


def _cmd_trace(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.trace import check_traceable, trace
    from ditmeter.reports import console as show

    start = time.perf_counter()
    cfg = _load_run(console, overrides, "trace")
    check_traceable(cfg)
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
    from ditmeter.reports import console as show

    cfg = _load(console, overrides, "compare")
    result = compare(cfg.output_root, cfg.run_id, cfg.compare.tolerance)
    show.print_compare(console, result, cfg.compare.show)
    return EXIT_OK if result.verdict.passed else EXIT_GATE


def _cmd_diff(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.diff import diff
    from ditmeter.reports import console as show

    start = time.perf_counter()
    runs = [a for a in overrides if "=" not in a]
    if len(runs) != 2:
        raise ConfigError(
            "arguments", f"diff takes two runs, RUN_A RUN_B; got {len(runs)} (see ditmeter diff --help)"
        )
    cfg = _load(console, [a for a in overrides if "=" in a], "diff")
    result = diff(cfg.output_root, runs[0], runs[1], cfg.run_id)
    show.print_diff(console, result)
    assert result.analysis_dir is not None  # written
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_validate(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.validate import validate
    from ditmeter.reports import console as show

    start = time.perf_counter()
    data = [a.partition("=")[2] for a in overrides if a.startswith("validate.data=")]
    rest = [a for a in overrides if not a.startswith("validate.data=")]
    stray = [a for a in rest if "=" not in a]
    if stray:
        raise ConfigError("arguments", f"validate takes KEY=VALUE overrides only; got {stray[0]!r}")
    if data and not data[-1]:
        raise ConfigError("validate.data", "must name a folder of measurement YAML files")
    cfg = _load(console, rest, "validate")
    folder = Path(data[-1]) if data else None
    t = cfg.time
    from ditmeter.config import _key

    given = any(_key(a) == "time.fp32_matmul" for a in rest)  # else each point's own
    result = validate(
        cfg.output_root, folder, cfg.run_id, t.execution, fp32_matmul=t.fp32_matmul if given else None
    )
    show.print_validate(console, result)
    assert result.analysis_dir is not None  # written
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_report(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.report import report
    from ditmeter.reports import console as show

    start = time.perf_counter()
    result = report(_load(console, overrides, "report"))
    show.print_report(console, result)
    show.print_wrote(console, result.analysis_dir, result.files, start)
    return EXIT_OK


def _cmd_profile(overrides: list[str], console: Console) -> int:
    from ditmeter.commands.profile import profile
    from ditmeter.reports import console as show

    start = time.perf_counter()
    cfg = _load_run(console, overrides, "profile")
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
    from ditmeter.reports import console as show

    start = time.perf_counter()
    cfg = _load_run(console, overrides, "ingest")
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
    from ditmeter.reports import console as show

    cfg = _load(console, overrides, "calibrate")
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
            if args.command != "sweep":  # the sweep's grid says it for its axes
                from ditmeter.config import check_once

                check_once(args.overrides)
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
