"""``ditmeter diff RUN_A RUN_B``: two runs side by side (:mod:`ditmeter.reports.diff`).

A run is named by its id under ``output_root`` or by a path to its folder (or to its artifact
folder, ``…/static_analysis/<family>/``). Both are read from what they wrote (``report.json``,
``modules.parquet``, checked against its schema and number by number), so any two runs compare:
two workloads, two devices, two plans, predicted against profiled. ``compare`` keeps its meaning
(the gate of one traced run); ``diff`` gates nothing and exits 0, or 2 for a run that is corrupt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

from ditmeter.compare.run_checks import check_numbers
from ditmeter.errors import ConfigError
from ditmeter.files import load_json
from ditmeter.reports.diff import DIFF_SCHEMA, RunTables, check_report, diff_frame, diff_markdown
from ditmeter.reports.run_dir import (
    STATIC,
    analysis_dir,
    artifact_dirs,
    list_runs,
    new_run_id,
    read_manifest,
    staged_run,
)
from ditmeter.reports.tables import MODULES_SCHEMA, read_table, write_parquet

#: The files a diff run folder holds.
DIFF_FILES = ("diff.parquet", "diff.md")


@attrs.frozen
class DiffResult:
    a: RunTables
    b: RunTables
    frame: pd.DataFrame
    analysis_dir: Path | None  # None when nothing was written
    files: tuple[str, ...]


def _report_dir(where: Path) -> Path | None:
    """``where`` or its artifact folder, whichever holds ``report.json`` (of any kind: one that is no
    regular file is refused when read, saying what it is); None: neither."""
    if os.path.lexists(where / "report.json"):
        return where
    return next((d for d in artifact_dirs(where) if os.path.lexists(d / "report.json")), None)


def _run_kind(where: Path) -> str | None:
    """The command that wrote the run folder (or artifact folder) ``where``: its manifest's, else
    its artifact folder's name (``sweep``, ``diff``); None: no run."""
    command = read_manifest(where).get("command")
    if isinstance(command, str):
        return command
    if where.parent.name == STATIC:
        return where.name
    return next((d.name for d in artifact_dirs(where)), None)


def find_artifacts(output_root: Path, ref: str, field: str) -> Path:
    """The artifact folder (holding ``report.json``) of the run ``ref`` names: a run id under
    ``output_root``, a run folder or an artifact folder."""
    try:
        places = [w for w in (Path(ref), output_root / ref) if w.is_dir()]
    except OSError as exc:  # a path longer than the OS allows
        raise ConfigError(field, f"cannot read {ref[:200]!r}: {exc.strerror or exc}") from None
    for where in places:
        found = _report_dir(where)
        if found is not None:
            return found
    for where in places:
        kind = _run_kind(where)
        if kind is not None:
            raise ConfigError(
                field,
                f"{ref!r} is a {kind} run ({where}) and has no report.json; diff compares runs that "
                "wrote one (report, trace, profile, ingest)",
            )
    readable = [r.name for r in list_runs(output_root) if _report_dir(r) is not None][-3:]
    hint = f"; newest runs with a report.json: {', '.join(readable)}" if readable else ""
    raise ConfigError(field, f"{ref!r} is no run under {output_root} nor a run folder{hint}")


def read_run(folder: Path, field: str) -> RunTables:
    """A run's ``report.json`` and ``modules.parquet``; a missing or corrupt file, or a number that
    is not finite or not >= 0, names ``field`` and the file."""
    report: Any = load_json(folder / "report.json", field)
    needed = ("run_id", "model", "workload", "pipeline", "totals", "stages", "categories")
    if not isinstance(report, dict) or any(k not in report for k in needed):
        raise ConfigError(
            field, f"{folder / 'report.json'} is not a ditmeter report (needs {', '.join(needed)})"
        )
    modules, _ = read_table(folder / "modules.parquet", MODULES_SCHEMA, field)
    check_numbers(folder / "modules.parquet", MODULES_SCHEMA, field)
    run = RunTables(str(report["run_id"]), report, modules)
    try:
        check_report(run)
    except ValueError as exc:
        raise ConfigError(field, f"{folder / 'report.json'}: {exc}") from None
    return run


def diff(
    output_root: Path, run_a: str, run_b: str, run_id: str | None = None, write: bool = True
) -> DiffResult:
    """Read both runs, build the diff frame and (``write``) publish ``diff.parquet`` and ``diff.md``
    as a run folder ``<output_root>/<run_id>/static_analysis/diff/``."""
    a = read_run(find_artifacts(output_root, run_a, "RUN_A"), "RUN_A")
    b = read_run(find_artifacts(output_root, run_b, "RUN_B"), "RUN_B")
    frame = diff_frame(a, b)
    if not write:
        return DiffResult(a, b, frame, None, ())
    rid = run_id or new_run_id("diff", f"{a.run_id}_vs_{b.run_id}")
    manifest = {"command": "diff", "runs": [a.run_id, b.run_id]}
    meta = {"ditmeter.table": "diff", "ditmeter.runs": json.dumps({"a": a.label, "b": b.label})}
    with staged_run(output_root, rid, "diff", manifest) as out:
        write_parquet(frame, DIFF_SCHEMA, out / "diff.parquet", meta)
        (out / "diff.md").write_text(diff_markdown(frame, a, b), encoding="utf-8")
    return DiffResult(a, b, frame, analysis_dir(output_root / rid, "diff"), DIFF_FILES)
