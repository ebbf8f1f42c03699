"""``ditmeter compare``: re-read a traced run's tables and evaluate the gate again (at any tolerance).

Without ``run_id=`` it reads the newest traced run under ``output_root`` by the
creation time each run records in its ``run.json`` (a named run does not sort
ahead of automatic ids, and a newer ``report`` or ``profile`` run does not hide
the newest trace). The run is checked before the gate reads it: its ``run.json``, the tables
against their documented schemas and number by number, and ``graph.json`` (see
:mod:`ditmeter.compare.run_checks`); a corrupt run is an error (exit 2), never a verdict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

from ditmeter.analytic.parallel import CollectiveSpec
from ditmeter.compare.gate import Verdict, evaluate
from ditmeter.compare.join import NODES_SCHEMA
from ditmeter.compare.kernels import KernelCheck
from ditmeter.compare.parallel import Measured
from ditmeter.compare.run_checks import check_graph, check_numbers, check_traced_rows, read_trace_manifest
from ditmeter.errors import ConfigError
from ditmeter.reports.run_dir import MANIFEST, artifact_dirs, list_runs, read_manifest
from ditmeter.reports.tables import MODULES_SCHEMA, read_table

#: What only ``trace`` writes together (``profile`` writes nodes.parquet too, but no measured FLOPs).
TRACED_TABLES = ("modules.parquet", "nodes.parquet", "graph.json")


@attrs.frozen
class CompareResult:
    run_id: str
    analysis_dir: Path
    model: str
    workload: str
    created_utc: str
    newest: bool  # picked as the newest traced run (no run_id= given)
    verdict: Verdict


def _traced_dir(run: Path) -> Path | None:
    """The run's artifact folder holding a traced run's tables, if any."""
    if read_manifest(run).get("command", "trace") != "trace":
        return None
    for d in artifact_dirs(run):
        if all(os.path.lexists(d / f) for f in TRACED_TABLES):  # a link to nothing is refused when read
            return d
    return None


def find_run(output_root: Path, run_id: str | None) -> tuple[Path, Path]:
    """The run to compare and its artifact folder: ``run_id``, or the newest traced run."""
    if os.path.exists(output_root) and not os.path.isdir(output_root):  # os.path: a too-long name is False
        raise ConfigError("output_root", f"{output_root} is not a folder; give the folder trace wrote into")
    if run_id is None:
        traced = [(r, d) for r in list_runs(output_root) if (d := _traced_dir(r)) is not None]
        if not traced:
            raise ConfigError("run_id", f"no traced run under {output_root}; run `ditmeter trace` first")
        return traced[-1]
    run = output_root / run_id
    if not run.is_dir():
        known = [r.name for r in list_runs(output_root) if _traced_dir(r) is not None][-5:]
        hint = f"; newest traced runs: {', '.join(known)}" if known else ""
        raise ConfigError("run_id", f"no run {run_id!r} under {output_root}{hint}")
    found = _traced_dir(run)
    if found is None:
        raise ConfigError(
            "run_id",
            f"run {run_id!r} has no {', '.join(TRACED_TABLES)} (written by `ditmeter trace`, "
            "not `report` or `profile`)",
        )
    return run, found


def _name(meta: dict[str, str], key: str) -> str:
    data: Any = json.loads(meta.get(f"ditmeter.{key}", "{}"))
    return str(data.get("name", "?")) if isinstance(data, dict) else "?"


def compare(output_root: Path, run_id: str | None, tolerance: float) -> CompareResult:
    """Re-read a traced run's tables and evaluate the gate at ``tolerance``."""
    run, folder = find_run(output_root, run_id)
    manifest = read_trace_manifest(run / MANIFEST, "run_id")
    tables = {}
    for name, schema in (("modules.parquet", MODULES_SCHEMA), ("nodes.parquet", NODES_SCHEMA)):
        tables[name] = read_table(folder / name, schema, "run_id")
        check_numbers(folder / name, schema, "run_id")
    (modules, meta), (nodes, _) = tables["modules.parquet"], tables["nodes.parquet"]
    check_traced_rows(modules, nodes, folder, "run_id")
    check_graph(folder / "graph.json", "run_id")  # not read by the gate, but part of a whole run
    return CompareResult(
        run.name,
        folder,
        _name(meta, "model"),
        _name(meta, "workload"),
        str(manifest["created_utc"]),
        run_id is None,
        evaluate(modules, nodes, tolerance, _memory(meta), _collectives(meta), _kernels(meta)),
    )


def _count(value: Any) -> int:
    """A count or a size from the metadata: an integer >= 0 (ValueError otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(value)
    return value


def _kernels(meta: dict[str, str]) -> KernelCheck | None:
    """The run's eager-kernel check of one unit of the forward stage (None: not checked)."""
    if "ditmeter.kernels" not in meta:
        return None
    raw: Any = json.loads(meta["ditmeter.kernels"])  # read_table checked it is JSON

    def counts(pairs: Any) -> dict[tuple[str, str, int], int]:
        return {(str(k[0]), str(k[1]), _count(k[2])): _count(n) for k, n in pairs}

    try:
        return KernelCheck(str(raw["unit"]), counts(raw["analytic"]), counts(raw["measured"]))
    except (TypeError, ValueError, IndexError, KeyError):
        raise ConfigError(
            "run_id",
            "modules.parquet: metadata 'kernels' is not {unit, analytic: [...], measured: [...]} "
            "with counts and bytes >= 0",
        ) from None


def _collectives(meta: dict[str, str]) -> tuple[list[CollectiveSpec], list[Measured]] | None:
    """A parallel run's (plan, traced) collectives (None for a one-GPU run)."""
    if "ditmeter.collectives" not in meta:
        return None
    raw: Any = json.loads(meta["ditmeter.collectives"])  # read_table checked it is JSON
    try:
        expected = [CollectiveSpec(str(c[0]), *(_count(v) for v in c[1:5])) for c in raw["expected"]]
        measured = [(str(m[0]), _count(m[1]), _count(m[2]), _count(m[3])) for m in raw["measured"]]
    except (TypeError, ValueError, IndexError, KeyError):
        raise ConfigError(
            "run_id",
            "modules.parquet: metadata 'collectives' is not {expected: [...], measured: [...]} "
            "with sizes and counts >= 0",
        ) from None
    return expected, measured


def _memory(meta: dict[str, str]) -> dict[str, tuple[int, int]]:
    """The run's (analytic, measured) peak live activation bytes per stage (none in older runs)."""
    raw: Any = json.loads(meta.get("ditmeter.memory", "{}"))  # read_table checked it is JSON
    try:
        return {str(k): (_count(v[0]), _count(v[1])) for k, v in raw.items()}
    except (TypeError, ValueError, IndexError, AttributeError):
        raise ConfigError(
            "run_id",
            "modules.parquet: metadata 'memory' is not {stage: [analytic, measured]} with bytes >= 0",
        ) from None
