"""Corrupt copies of a real traced run: ``compare`` and ``diff`` refuse each with one line naming
the file and the column or key (exit 2), write nothing, and never reach a verdict (exit 0 or 1)."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_diff import _run  # the CLI in process: (exit status, stdout, stderr)

ARTIFACTS = Path("static_analysis") / "wan2_1"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One traced run of the smallest model and workload (the run folder), copied by each test."""
    root = tmp_path_factory.mktemp("traced")
    argv = ["trace", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={root}", "run_id=base"]
    assert _run(*argv)[0] == 0
    return root / "base"


def _copy(traced: Path, root: Path, name: str) -> Path:
    """A copy of the traced run as ``root/name``; its artifact folder."""
    shutil.copytree(traced, root / name)
    return root / name / ARTIFACTS


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(root: Path, argv: list[str], field: str, *named: str) -> str:
    """Run ``argv``: exit 2, one line on stderr naming ``field`` and every one of ``named``, and
    nothing written under ``root``. The error line."""
    before = _files(root)
    status, out, err = _run(*argv)
    assert status == 2, (status, out[-500:], err)
    assert err.startswith(f"ditmeter: error: {field}: ") and err.count("\n") == 1, err
    assert all(n in err for n in named), (named, err)
    assert "gate" not in out
    assert _files(root) == before
    return err


def _rewrite(path: Path, change: Callable[[pa.Field, pa.ChunkedArray], pa.Array | pa.ChunkedArray]) -> None:
    """``path`` rewritten with the same schema (metadata included), each column through ``change``."""
    table = pq.read_table(path)
    columns = [change(f, table.column(f.name)) for f in table.schema]
    pq.write_table(pa.Table.from_arrays(columns, schema=table.schema), path)


def _every_int(value: int) -> Callable[[pa.Field, pa.ChunkedArray], pa.Array | pa.ChunkedArray]:
    def change(f: pa.Field, c: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        return pa.array([value] * len(c), f.type) if pa.types.is_integer(f.type) else c

    return change


def _every_float(value: float) -> Callable[[pa.Field, pa.ChunkedArray], pa.Array | pa.ChunkedArray]:
    def change(f: pa.Field, c: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        return pa.array([value] * len(c), f.type) if pa.types.is_floating(f.type) else c

    return change


def test_the_uncorrupted_copy_passes(traced: Path, tmp_path: Path) -> None:
    _copy(traced, tmp_path, "copy")
    status, out, _ = _run("compare", f"output_root={tmp_path}", "run_id=copy")
    assert status == 0 and "gate: PASS" in out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_every_int(-1), ("modules.parquet", "column 'depth'", "-1", ">= 0")),
        (_every_float(math.nan), ("modules.parquet", "column 'arithmetic_intensity'", "NaN or infinity")),
        (_every_float(math.inf), ("modules.parquet", "column 'arithmetic_intensity'", "NaN or infinity")),
        (_every_int(0), ("modules.parquet", "tensor_flops and measured_flops are 0 in every row")),
    ],
    ids=["ints-negative", "floats-nan", "floats-inf", "ints-zero"],
)
def test_compare_refuses_a_corrupt_modules_table(
    traced: Path, tmp_path: Path, change: Any, named: tuple[str, ...]
) -> None:
    _rewrite(_copy(traced, tmp_path, "bad") / "modules.parquet", change)
    _refused(tmp_path, ["compare", f"output_root={tmp_path}", "run_id=bad"], "run_id", *named)


def test_compare_refuses_one_negative_count_and_a_null_where_the_schema_has_a_value(
    traced: Path, tmp_path: Path
) -> None:
    folder = _copy(traced, tmp_path, "bad")
    frame = pd.read_parquet(folder / "nodes.parquet")
    table = pq.read_table(folder / "nodes.parquet")
    flops = frame["measured_flops"].to_list()
    flops[3] = -5
    _rewrite(
        folder / "nodes.parquet", lambda f, c: pa.array(flops, f.type) if f.name == "measured_flops" else c
    )
    argv = ["compare", f"output_root={tmp_path}", "run_id=bad"]
    _refused(tmp_path, argv, "run_id", "nodes.parquet", "column 'measured_flops'", "-5")
    # a null in a column the schema marks not null (the file's own schema allows it)
    loose = pa.schema([f.with_nullable(True) for f in table.schema], metadata=table.schema.metadata)
    bytes_in = [None, *frame["bytes_in"].to_list()[1:]]
    columns = [
        pa.array(bytes_in, pa.int64()) if f.name == "bytes_in" else table.column(f.name) for f in loose
    ]
    pq.write_table(pa.Table.from_arrays(columns, schema=loose), folder / "nodes.parquet")
    _refused(tmp_path, argv, "run_id", "nodes.parquet", "column 'bytes_in'", "null in 1 of")


def test_compare_refuses_a_table_without_rows(traced: Path, tmp_path: Path) -> None:
    """An empty run is bad input (a trace always writes rows), not a failed gate (exit 1)."""
    path = _copy(traced, tmp_path, "bad") / "modules.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 0), path)
    _refused(
        tmp_path,
        ["compare", f"output_root={tmp_path}", "run_id=bad"],
        "run_id",
        "modules.parquet has no rows",
    )


@pytest.mark.parametrize(
    ("name", "make", "named"),
    [
        ("graph.json", lambda p: p.write_text("{"), "cannot read"),
        ("graph.json", lambda p: p.write_text('{"nodes": 3}'), "is not a graph"),
        ("graph.json", lambda p: p.symlink_to("/dev/zero"), "is a character device, not a regular file"),
        ("graph.json", lambda p: os.mkfifo(p), "is a FIFO, not a regular file"),
        ("graph.json", lambda p: p.symlink_to(p.parent / "nothing"), "a symbolic link to nothing"),
        ("../../run.json", lambda p: None, "has no run.json"),
        ("../../run.json", lambda p: p.write_text("{"), "cannot read"),
        ("../../run.json", lambda p: p.write_text("[]"), "is not a run manifest"),
        ("../../run.json", lambda p: p.symlink_to("/dev/zero"), "is a character device"),
        ("../../run.json", lambda p: os.mkfifo(p), "is a FIFO"),
        ("../../run.json", lambda p: p.write_text('{"command": "trace"}'), "created_utc is None"),
    ],
    ids=[
        "graph-truncated",
        "graph-no-graph",
        "graph-dev-zero",
        "graph-fifo",
        "graph-dangling",
        "manifest-missing",
        "manifest-truncated",
        "manifest-list",
        "manifest-dev-zero",
        "manifest-fifo",
        "manifest-no-time",
    ],
)
def test_compare_refuses_a_corrupt_graph_or_manifest(
    traced: Path, tmp_path: Path, name: str, make: Callable[[Path], None], named: str
) -> None:
    path = (_copy(traced, tmp_path, "bad") / name).resolve()
    path.unlink()
    make(path)
    which = "graph.json" if name == "graph.json" else "run.json"
    for argv in (["run_id=bad"], []):  # named, and picked as the newest traced run
        _refused(tmp_path, ["compare", f"output_root={tmp_path}", *argv], "run_id", which, named)


def test_a_tolerance_above_100_percent_is_refused(traced: Path, tmp_path: Path) -> None:
    _copy(traced, tmp_path, "copy")
    for value in ("1e308", "1.5", "inf", "-0.1"):
        argv = ["compare", f"output_root={tmp_path}", "run_id=copy", f"compare.tolerance={value}"]
        _refused(tmp_path, argv, "compare.tolerance", ">= 0 and <= 1", "100%")
    status, out, _ = _run("compare", f"output_root={tmp_path}", "run_id=copy", "compare.tolerance=1")
    assert status == 0 and "gate: PASS at tolerance 100%" in out


def _report(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    report = json.loads((folder / "report.json").read_text())
    change(report)
    (folder / "report.json").write_text(json.dumps(report))


def _negative_everywhere(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _negative_everywhere(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_negative_everywhere(v) for v in value]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return -1e308 if is_number else value


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda r: r.update(_negative_everywhere(r)), "totals.whole_video.tensor_flops is -1e+308"),
        (
            lambda r: r["totals"]["per_forward"].update(tensor_flops=math.nan),
            "totals.per_forward.tensor_flops is nan",
        ),
        (lambda r: r["stages"][1]["per_video"].update(bytes_read=-1), "stages[1].per_video.bytes_read is -1"),
        (lambda r: r["categories"][0].update(tensor_flops=math.inf), "categories[0].tensor_flops is inf"),
        (lambda r: r["memory"].update(peak_per_gpu_bytes="big"), "memory.peak_per_gpu_bytes is 'big'"),
        (lambda r: r["categories"][2].update(bytes_written=10**400), "categories[2].bytes_written is 1000"),
        (lambda r: r.update(totals=[]), "not a ditmeter report"),
    ],
    ids=["all-negative", "nan", "negative-bytes", "inf", "string", "past-float", "shape"],
)
def test_diff_refuses_a_report_with_numbers_out_of_their_domain(
    traced: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], named: str
) -> None:
    _copy(traced, tmp_path, "good")
    _report(_copy(traced, tmp_path, "bad"), change)
    for argv, field in ((["good", "bad"], "RUN_B"), (["bad", "good"], "RUN_A")):
        _refused(tmp_path, ["diff", *argv, f"output_root={tmp_path}"], field, "bad", "report.json", named)


def test_diff_refuses_a_corrupt_modules_table(traced: Path, tmp_path: Path) -> None:
    _copy(traced, tmp_path, "good")
    _rewrite(_copy(traced, tmp_path, "bad") / "modules.parquet", _every_float(-math.inf))
    argv = ["diff", "good", "bad", f"output_root={tmp_path}"]
    _refused(tmp_path, argv, "RUN_B", "bad", "modules.parquet", "NaN or infinity")


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda p: os.mkfifo(p), "report.json is a FIFO, not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "report.json is a character device, not a regular file"),
        (lambda p: p.mkdir(), "report.json is a folder, not a regular file"),
        (lambda p: p.symlink_to(p.parent / "nothing"), "a symbolic link to nothing"),
    ],
    ids=["fifo", "dev-zero", "folder", "dangling"],
)
def test_diff_says_what_a_report_that_is_no_regular_file_is(
    traced: Path, tmp_path: Path, make: Callable[[Path], None], named: str
) -> None:
    _copy(traced, tmp_path, "good")
    path = _copy(traced, tmp_path, "bad") / "report.json"
    path.unlink()
    make(path)
    err = _refused(tmp_path, ["diff", "good", "bad", f"output_root={tmp_path}"], "RUN_B", named)
    assert "has no report.json" not in err


def test_diff_never_writes_or_prints_an_infinite_ratio(traced: Path, tmp_path: Path) -> None:
    """Extreme but finite values: the quotient overflows, so the ratio is missing (a dash, null)."""

    def tiny(r: dict[str, Any]) -> None:
        r["totals"]["whole_video"]["tensor_flops"] = 1e-300

    def huge(r: dict[str, Any]) -> None:
        r["totals"]["whole_video"]["tensor_flops"] = 1e300

    _report(_copy(traced, tmp_path, "tiny"), tiny)
    _report(_copy(traced, tmp_path, "huge"), huge)
    status, out, err = _run("diff", "tiny", "huge", f"output_root={tmp_path}", "run_id=d")
    assert status == 0, err
    assert "inf" not in out.lower() and "nan" not in out.lower()
    frame = pd.read_parquet(tmp_path / "d" / "static_analysis" / "diff" / "diff.parquet")
    values = frame[["a", "b", "delta", "ratio"]].to_numpy(dtype=float)
    assert np.isfinite(values[~np.isnan(values)]).all()
    row = frame[(frame["key"] == "video") & (frame["metric"] == "tensor_flops_per_video")].iloc[0]
    assert (row["a"], row["b"]) == (1e-300, 1e300) and pd.isna(row["ratio"])
    assert "inf" not in (tmp_path / "d" / "static_analysis" / "diff" / "diff.md").read_text().lower()


def test_a_signed_error_below_zero_is_a_verdict_not_a_corrupt_run(traced: Path, tmp_path: Path) -> None:
    """``rel_error`` is analytic / measured − 1: a rule that counts too few FLOPs makes it negative,
    which the gate judges (exit 1 beyond the tolerance), not a corrupt table."""
    folder = _copy(traced, tmp_path, "short")

    def short(f: pa.Field, c: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        if f.name == "tensor_flops":  # the analytic side at half the measured
            return pa.array([v // 2 if v else v for v in c.to_pylist()], f.type)
        if f.name == "rel_error":
            return pa.array([None if v is None else (-0.5 if v == 0 else v) for v in c.to_pylist()], f.type)
        return c

    _rewrite(folder / "modules.parquet", short)
    status, out, err = _run("compare", f"output_root={tmp_path}", "run_id=short")
    assert status == 1 and "gate: FAIL" in out and not err, (status, err)
