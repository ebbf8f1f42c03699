"""Docs that cannot drift: docs/artifacts.md, the README and ``--help`` against the real schemas,
the files real runs write, and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ingest_runs import CUDA_ARGS, hand_cuda_trace

from ditmeter.analytic.categories import CATEGORIES
from ditmeter.cli import _parser, main
from ditmeter.compare.join import NODES_SCHEMA
from ditmeter.models import families
from ditmeter.reports.run_files import DEVICE_FILES, PLAN_FILES, PROFILE_FILES, REPORT_FILES, TRACE_FILES
from ditmeter.reports.tables import MODULES_SCHEMA

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = (REPO / "docs" / "artifacts.md").read_text()
README = (REPO / "README.md").read_text()
SMALL = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm", "measured_video_s=100"]
#: Maps whose keys are data (names of stages, libraries, steps, config fields), not documented one by one.
OPEN_MAPS = (
    "model.",
    "device.sources.",
    "time.attention.",
    "tool.versions.",
    "compare.timings_s.",
    "profile.timings_s.",
    "memory.components.",
    "compare.coverage.nodes.",
    "compare.coverage.measured_flops.",
    "compare.reference.stages.",
    "memory.components[",
    "parallel.per_gpu.stage_video_s.",
)


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _first_column(section: str) -> list[str]:
    """The backticked names in the first cell of every table row (``| `a`, `b` |`` → a, b)."""
    out = []
    for line in section.splitlines():
        if line.startswith("| `"):
            out += re.findall(r"`([^`]+)`", line.split(" | ")[0])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run of each command that writes a folder, with a device, on the small model."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for command in ("report", "trace", "profile"):
        plan = ["parallel.ulysses=2"] if command == "trace" else []  # its keys and metadata documented too
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([command, *SMALL, *plan, f"output_root={root / command}"]) == 0
        (out[command],) = (root / command).glob("*/static_analysis/*")
    trace = hand_cuda_trace(root / "cuda.json")
    argv = ["ingest", f"trace={trace}", *CUDA_ARGS, "device=h100-sxm", f"output_root={root / 'ingest'}"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    (out["ingest"],) = (root / "ingest").glob("*/static_analysis/*")
    return out


def test_modules_parquet_columns_are_documented_in_order() -> None:
    assert _first_column(_section(ARTIFACTS, "`modules.parquet`")) == MODULES_SCHEMA.names


def test_nodes_parquet_columns_are_documented_in_order() -> None:
    assert _first_column(_section(ARTIFACTS, "`nodes.parquet`")) == NODES_SCHEMA.names


def test_every_category_is_documented() -> None:
    rows = {
        line.split(" | ")[0].strip("| `"): line.split(" | ")[1]
        for line in _section(ARTIFACTS, "Categories").splitlines()
        if line.startswith("| `")
    }
    assert rows == {name: f"{text} |" for name, text in CATEGORIES.items()}


@pytest.fixture(scope="module")
def one_gpu_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A traced run on one GPU (the fixture's trace runs a plan): the eager-kernel gate's metadata."""
    root = tmp_path_factory.mktemp("one-gpu")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["trace", *SMALL, "stages=[dit]", f"output_root={root}"]) == 0
    (folder,) = root.glob("*/static_analysis/*")
    return folder


def test_parquet_metadata_keys_are_documented(runs: dict[str, Path], one_gpu_trace: Path) -> None:
    real = {
        k.decode()
        for folder in (*runs.values(), one_gpu_trace)
        for table in folder.glob("*.parquet")
        for k in pq.read_schema(table).metadata
        if k.startswith(b"ditmeter.")
    }
    documented = {k for k in _first_column(ARTIFACTS.split("## Stages")[0]) if k.startswith("ditmeter.")}
    assert documented == real


def test_which_command_writes_which_file(runs: dict[str, Path]) -> None:
    table = ARTIFACTS.split("| file | written by |")[1].split("\n\n")[0]
    for line in table.splitlines()[2:]:
        files_cell, commands_cell = line.strip("|").split(" | ")[:2]
        for name in re.findall(r"`([^`]+)`", files_cell):
            if name in PLAN_FILES:  # only under a parallel.* plan: tests/test_parallel_plan.py
                continue
            writers = set(re.findall(r"`(report|trace|profile|ingest)`", commands_cell))
            assert {c for c, folder in runs.items() if (folder / name).is_file()} == writers, name
    # and the CLI's lists of files are the same files
    assert set(REPORT_FILES) <= {p.name for p in runs["report"].iterdir()}
    assert {*DEVICE_FILES, *TRACE_FILES} <= {p.name for p in runs["trace"].iterdir()}
    assert all((runs["profile"] / f).is_file() for f in PROFILE_FILES)


def _keys(data: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else key
            out |= {path} | _keys(value, path)
    elif isinstance(data, list) and data and isinstance(data[0], dict) and prefix != "modules":
        out |= _keys(data[0], f"{prefix}[]")
    return out


def test_every_report_json_key_is_documented(runs: dict[str, Path]) -> None:
    reports = [json.loads((folder / "report.json").read_text()) for folder in runs.values()]
    section = _section(ARTIFACTS, "`report.json`")
    assert set(_first_column(section)) == {k for r in reports for k in r}  # every top-level key, no other
    named = set(re.findall(r"`([^`]+)`", section))
    paths = {p for r in reports for p in _keys(r)}
    missing = sorted(p for p in paths if not p.startswith(OPEN_MAPS) and p.rsplit(".", 1)[-1] not in named)
    assert missing == []


def test_the_readme_pandas_snippet_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    """The README's "Loading the tables in pandas" code, run as written against a traced run."""
    snippet = README.split("### Loading the tables in pandas")[1].split("```python\n")[1].split("```")[0]
    traced = runs["trace"].parents[2]
    (tmp_path / "tmp").mkdir()
    os.symlink(traced, tmp_path / "tmp" / "profile-output")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            exec(compile(snippet, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "dit.blocks.*.ffn.0" in out.getvalue() and "module:" not in out.getvalue()


def test_the_readme_shows_every_command_with_an_example() -> None:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"ditmeter {command}" in README, command
        assert f"`make {command}" in README or (command == "compare" and "`make compare" in README)


def test_help_names_what_each_command_builds_and_writes(capsys: pytest.CaptureFixture[str]) -> None:
    def helptext(command: str) -> str:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    for command, files in (("report", REPORT_FILES), ("trace", TRACE_FILES), ("profile", PROFILE_FILES)):
        text = helptext(command)
        assert all(f in text for f in files), command
    trace = helptext("trace")
    for fam in families().values():
        assert all(r.source in trace for r in fam.references().values())
    assert "writes nothing" in helptext("compare")


def test_the_per_element_conventions_are_documented_as_the_rules_use_them() -> None:
    from ditmeter.analytic.rules import attention, elementwise, embedding
    from ditmeter.compare.leaf_checks import ELEMENT_OPS

    e = elementwise
    constants = {
        "layer_norm": e.LAYER_NORM_FLOPS_PER_ELEMENT,
        "rms_norm": e.RMS_NORM_FLOPS_PER_ELEMENT,
        "gelu_tanh": e.GELU_TANH_FLOPS_PER_ELEMENT,
        "gelu": e.GELU_ERF_FLOPS_PER_ELEMENT,
        "silu": e.SILU_FLOPS_PER_ELEMENT,
        "attention_core": attention.SOFTMAX_FLOPS_PER_SCORE,
        "rope": e.ROPE_FLOPS_PER_ELEMENT,
        "modulate": e.MODULATE_FLOPS_PER_ELEMENT,
        "gated_residual": e.GATED_RESIDUAL_FLOPS_PER_ELEMENT,
        "sinusoid": e.SINUSOID_FLOPS_PER_ELEMENT,
        "clamp": e.CLAMP_FLOPS_PER_ELEMENT,
        "gaussian_posterior": e.POSTERIOR_FLOPS_PER_ELEMENT,
        "relative_position_bias": embedding.BUCKET_FLOPS_PER_PAIR,
    }
    table = (
        (REPO / "docs" / "architecture.md").read_text().split("| rule | FLOPs per element | elements |")[1]
    )
    documented = {}
    for line in table.split("\n\n")[0].splitlines()[2:]:
        names, per, _ = line.strip("|").split(" | ")
        for name in re.findall(r"`([^`]+)`", names):
            documented[name] = int(per.split()[0])
    assert {k: documented[k] for k in constants} == constants
    assert set(documented) >= set(ELEMENT_OPS)  # every rule the leaf check counts is documented


BENCHMARKS = REPO / "benchmarks"


def _script_module(folder: Path, name: str) -> Any:
    """A module of ``benchmarks/`` or ``scripts/`` (folders on ``sys.path`` only when run as scripts)."""
    import importlib
    import sys

    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def test_a_missed_benchmark_target_prints_fail_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Each benchmark prints PASS or FAIL beside every target and exits 1 on a miss (bench_trace
    printed 3.9× against its ≤ 3× target and exited 0)."""
    targets = _script_module(BENCHMARKS, "timing").Targets()
    assert targets.verdict("fast", True, "<= 3x") == "PASS (target <= 3x)"
    assert targets.verdict("DiT row", False, "<= 3x") == "FAIL (target <= 3x)"
    assert targets.finish() == 1
    assert capsys.readouterr().out == "FAIL: 1 of 2 targets missed: DiT row\n"
    for script in BENCHMARKS.glob("bench_*.py"):
        text = script.read_text()
        assert "targets.verdict(" in text and "return targets.finish()" in text, script.name
        assert "sys.exit(main())" in text and "never asserted" not in text, script.name


def test_the_readme_states_the_sweep_benchmark_grid_it_runs() -> None:
    """bench_sweep's grid is the product of its axes' lengths; the README and the script's own
    target say that many points."""
    bench_sweep = _script_module(BENCHMARKS, "bench_sweep")
    points = 1
    for override in bench_sweep.grid():
        value = override.partition("=")[2]
        points *= len(value.strip("[]").split(",")) if value.startswith("[") else 1
    assert points == bench_sweep.POINTS
    line = next(line for line in README.splitlines() if "benchmarks/bench_sweep.py" in line)
    assert f"{points:,} sweep points" in line


def test_the_readme_outputs_are_what_the_commands_print_now() -> None:
    """Every README block marked ``<!-- output: ditmeter … -->`` of cheap commands (report, validate,
    sweep, diff of reports, compare's errors) is what they print today (``scripts/readme_outputs.py
    --write`` regenerates them; the seconds a run took are normalised). The blocks with a
    calibrate, profile or trace print this machine's timings: regenerated, not compared."""
    readme_outputs = _script_module(REPO / "scripts", "readme_outputs")
    lines = README.splitlines()
    marked = readme_outputs.blocks(lines)
    cheap = ("report", "validate", "sweep", "diff", "compare", "plan", "whatif")
    checked = [b for b in marked if all(c.argv[0] in cheap for c in b.commands)]
    assert len(marked) >= 13 and len(checked) >= 10
    assert any("measured_video_s=1800" in c.shown for b in checked for c in b.commands)
    assert {c.argv[0] for b in checked for c in b.commands} == set(cheap)
    stale = readme_outputs.differing(lines, only=cheap)
    assert not stale, [f"README.md:{b.start}: {b.commands[0].shown}" for b, _ in stale]


def test_the_readme_output_filters_mark_what_they_leave_out() -> None:
    """``…`` after the kept lines when text was left out, in each gap with ``gaps``, never for a
    table's spacing; ``quiet`` shows nothing."""
    command = _script_module(REPO / "scripts", "readme_outputs").Command.parse
    printed = ["title", "", "  a 1", "  b 2", " ───", "  c 3", "end"]
    assert command("x | grep ^  [ac] ").filtered(printed) == ["  a 1", "  c 3", "…"]
    assert command("x | grep ^  [ac] | gaps").filtered(printed) == ["…", "  a 1", "…", "  c 3", "…"]
    assert command("x | grep ^(?![ ─]*$) | head 2").filtered(printed) == ["title", "  a 1", "…"]
    assert command("x | grep ^(title|  .)").filtered(printed) == ["title", "  a 1", "  b 2", "  c 3", "…"]
    assert command("x | grep [a-z] | gaps").filtered(printed) == ["title", "  a 1", "  b 2", "  c 3", "end"]
    assert command("x | quiet").filtered(printed) == []
