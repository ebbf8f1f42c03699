"""``ditmeter compare``: re-read a traced run's tables and evaluate the gate again (at any tolerance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pandas as pd
import pyarrow.parquet as pq

from ditmeter.compare.gate import Verdict, evaluate
from ditmeter.errors import ConfigError
from ditmeter.reports.run_dir import artifact_dirs, list_runs

#: What only ``trace`` writes together (``profile`` writes nodes.parquet too, but no measured FLOPs).
TRACED_TABLES = ("modules.parquet", "nodes.parquet", "graph.json")


@attrs.frozen
class CompareResult:
    run_id: str
    analysis_dir: Path
    model: str
    workload: str
    verdict: Verdict


def _traced_dir(run: Path) -> Path | None:
    """The run's artifact folder holding a traced run's tables, if any."""
    for d in artifact_dirs(run):
        if all((d / f).is_file() for f in TRACED_TABLES):
            return d
    return None


def find_run(output_root: Path, run_id: str | None) -> tuple[Path, Path]:
    """The run to compare and its artifact folder: ``run_id``, or the newest traced run."""
    if run_id is None:
        traced = [(r, d) for r in list_runs(output_root) if (d := _traced_dir(r)) is not None]
        if not traced:
            raise ConfigError("run_id", f"no traced run under {output_root}; run `ditmeter trace` first")
        return traced[-1]
    run = output_root / run_id
    if not run.is_dir():
        known = [r.name for r in list_runs(output_root)][-5:]
        hint = f"; newest runs: {', '.join(known)}" if known else ""
        raise ConfigError("run_id", f"no run {run_id!r} under {output_root}{hint}")
    found = _traced_dir(run)
    if found is None:
        raise ConfigError(
            "run_id",
            f"run {run_id!r} has no {', '.join(TRACED_TABLES)} (written by `ditmeter trace`, "
            "not `report` or `profile`)",
        )
    return run, found


def _read(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ConfigError("run_id", f"cannot read {path}: {exc}") from exc
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.to_pandas(), meta


def compare(output_root: Path, run_id: str | None, tolerance: float) -> CompareResult:
    """Re-read a traced run's tables and evaluate the gate at ``tolerance``."""
    run, folder = find_run(output_root, run_id)
    modules, meta = _read(folder / "modules.parquet")
    nodes, _ = _read(folder / "nodes.parquet")
    if modules["measured_flops"].isna().any():
        raise ConfigError("run_id", f"{folder / 'modules.parquet'} has no measured_flops")
    model: dict[str, Any] = json.loads(meta.get("ditmeter.model", "{}"))
    workload: dict[str, Any] = json.loads(meta.get("ditmeter.workload", "{}"))
    return CompareResult(
        run.name,
        folder,
        str(model.get("name", "?")),
        str(workload.get("name", "?")),
        evaluate(modules, nodes, tolerance),
    )
