"""A run's files checked as ``compare`` and ``diff`` read them back, so a corrupt copy is refused
(exit 2, one line naming the file and the column or key) instead of passing the gate.

``reports.tables.read_table`` checks a table's file, its columns and their types; the numbers in
them are checked here: every number ditmeter writes into ``modules.parquet`` and
``nodes.parquet`` is a count, a size, a time or a ratio of those, so it is finite and >= 0 (a
signed error, ``rel_error``, finite of either sign), and
a column the schema marks not null has a value in every row. A traced run's ``run.json`` and
``graph.json`` are read as regular files within the JSON size limit and refused when malformed.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ditmeter.errors import ConfigError
from ditmeter.files import load_json

#: Columns that hold a signed error (analytic / measured − 1): finite, of either sign.
SIGNED = frozenset({"rel_error"})


def check_numbers(path: Path, schema: pa.Schema, field: str) -> None:
    """Every column of ``schema`` the table at ``path`` holds (read by ``read_table`` already):
    no null where the schema says a value is present, every number finite and >= 0 (``SIGNED``:
    finite)."""
    try:
        table = pq.read_table(path, columns=schema.names)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ConfigError(field, f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    for column in schema:
        values = table.column(column.name)
        if not column.nullable and values.null_count:
            raise ConfigError(
                field,
                f"{path}: column {column.name!r} is null in {values.null_count:,} of {len(values):,} rows; "
                "the schema gives every row a value",
            )
        floating = pa.types.is_floating(column.type)
        if not (floating or pa.types.is_integer(column.type)):
            continue
        if floating:
            bad = pc.sum(pc.invert(pc.is_finite(values))).as_py() or 0  # NaN, inf; nulls not counted
            if bad:
                raise ConfigError(
                    field,
                    f"{path}: column {column.name!r} holds NaN or infinity in {bad:,} rows; "
                    "allowed: finite numbers >= 0 (or null)",
                )
        lowest = pc.min(values).as_py()
        if lowest is not None and lowest < 0 and column.name not in SIGNED:
            raise ConfigError(
                field,
                f"{path}: column {column.name!r} holds {lowest!r}; allowed: numbers >= 0 (counts, sizes, "
                "seconds and their ratios)",
            )


def check_traced_rows(modules: pd.DataFrame, nodes: pd.DataFrame, folder: Path, field: str) -> None:
    """A traced run's tables hold what every trace writes: rows, measured FLOPs on every module and
    FLOPs somewhere (a model that counts none is no traced run but a corrupt copy)."""
    for name, frame in (("modules.parquet", modules), ("nodes.parquet", nodes)):
        if frame.empty:
            raise ConfigError(field, f"{folder / name} has no rows; a traced run has one per module and node")
    if modules["measured_flops"].isna().any():
        raise ConfigError(field, f"{folder / 'modules.parquet'} has no measured_flops (not a traced run)")
    if not (modules["tensor_flops"].any() or modules["measured_flops"].any()):
        raise ConfigError(
            field,
            f"{folder / 'modules.parquet'}: tensor_flops and measured_flops are 0 in every row; a "
            "traced run counts the FLOPs of every stage",
        )


def check_graph(path: Path, field: str) -> None:
    """``graph.json``: a regular file of at most the JSON limit holding networkx node-link JSON."""
    data: Any = load_json(path, field)
    if not (isinstance(data, dict) and isinstance(data.get("nodes"), list) and data["nodes"]):
        raise ConfigError(field, f"{path} is not a graph (node-link JSON with nodes and edges)")
    if not isinstance(data.get("edges"), list):
        raise ConfigError(field, f"{path} is not a graph (node-link JSON with nodes and edges)")


def read_trace_manifest(path: Path, field: str) -> dict[str, Any]:
    """A traced run's ``run.json``: a regular JSON file with ``command: trace`` and its creation time
    (ISO 8601), both written before the run was published."""
    if not os.path.lexists(path):
        raise ConfigError(field, f"{path.parent} has no {path.name}; every published run has one")
    data: Any = load_json(path, field)
    if not isinstance(data, dict):
        raise ConfigError(field, f"{path} is not a run manifest (a JSON object with command, created_utc)")
    if data.get("command") != "trace":
        raise ConfigError(field, f"{path}: command is {data.get('command')!r}, not 'trace'")
    stamp = data.get("created_utc")
    try:
        datetime.fromisoformat(stamp if isinstance(stamp, str) else "")
    except ValueError:
        raise ConfigError(field, f"{path}: created_utc is {repr(stamp)[:60]}, not an ISO 8601 time") from None
    return data
