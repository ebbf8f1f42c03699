"""Tidy tables with explicit pyarrow schemas; raw base units, never strings like "1.2G".

``modules.parquet``: one row per module of the expanded analytic tree;
``nodes.parquet`` (traced runs): one row per fx node (see docs/artifacts.md for
every column). Parquet key-value metadata records the model config, the
workload, library versions and the counting convention.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ditmeter import __version__
from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.cost import COST_FIELDS
from ditmeter.analytic.timing import KERNEL_CLASS, ZERO, Prediction, Timing
from ditmeter.analytic.tree import ModuleRow
from ditmeter.errors import ConfigError
from ditmeter.files import TABLE_LIMIT_BYTES, regular_file

CONVENTION = (
    "FLOPs: 2 per multiply-add. tensor_flops = matmul/conv/attention-core FLOPs without bias "
    "adds (torch.utils.flop_counter convention); cuda_flops = element-wise FLOPs. Bytes: fused "
    "ideal (inputs and weights read once, outputs written once), flash-style attention. "
    "Counts are per DiT forward."
)

MODULES_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("module_id", pa.string(), nullable=False),
        pa.field("parent_id", pa.string()),
        pa.field("depth", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("rule", pa.string()),
        *(pa.field(f, pa.int64(), nullable=False) for f in COST_FIELDS),
        pa.field("arithmetic_intensity", pa.float64()),
        pa.field("activation_bytes_read", pa.int64(), nullable=False),
        pa.field("measured_flops", pa.int64()),
        pa.field("rel_error", pa.float64()),
        pa.field("unfused_bytes", pa.int64()),
        pa.field("unfused_arithmetic_intensity", pa.float64()),
        pa.field("kernel", pa.string()),
        pa.field("compute_s", pa.float64()),
        pa.field("memory_s", pa.float64()),
        pa.field("overhead_s", pa.float64()),
        pa.field("predicted_s", pa.float64()),
        pa.field("roofline_s", pa.float64()),
        pa.field("peak_fraction", pa.float64()),
        pa.field("predicted_flop_per_s", pa.float64()),
        pa.field("bound", pa.string()),
        pa.field("measured_time_s", pa.float64()),
        pa.field("achieved_flop_per_s", pa.float64()),
        pa.field("achieved_bytes_per_s", pa.float64()),
        pa.field("roofline_fraction", pa.float64()),
        pa.field("predicted_ratio", pa.float64()),
    ]
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour the numbers depend on (a copy: callers may add)."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    """Read once a process: each package's metadata is a file parsed (tens of ms for the six)."""
    out = {"ditmeter": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "pandas", "pyarrow", "networkx"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _intensity(flops: int, moved: int) -> float | None:
    return flops / moved if moved else None


def _times(r: Timing | None, flops: int) -> dict[str, Any]:
    if r is None:
        return _NO_TIMES
    return {
        "compute_s": r.compute_s,
        "memory_s": r.memory_s,
        "overhead_s": r.overhead_s,
        "predicted_s": r.predicted_s,
        "roofline_s": r.roofline_s,
        "peak_fraction": r.peak_fraction,
        "predicted_flop_per_s": flops / r.predicted_s if r.predicted_s > 0 else None,
        "bound": r.bound,
    }


#: The time columns, null: a module without a device.
_NO_TIMES = dict.fromkeys(_times(ZERO, 0))


def kernel_name(rule: str | None, stage: str, prediction: Prediction | None) -> str | None:
    """A leaf's kernel class: ``gemm``, ``conv``, ``elementwise``, or ``attention:<backend>``."""
    if rule is None:
        return None
    kind = KERNEL_CLASS.get(rule, "elementwise")
    if kind == "attention" and prediction is not None and stage in prediction.backends:
        return f"attention:{prediction.backends[stage]}"
    return kind


def modules_frame(
    analysis: Analysis,
    prediction: Prediction | None = None,
    rows: Sequence[tuple[str, ModuleRow]] | None = None,
) -> pd.DataFrame:
    """One row per module of every stage, costs (and times on a device) of one run of its stage.

    ``rows``: the analysis's (stage, row) pairs when the caller has walked them already.
    """
    times = prediction.modules if prediction else {}
    out: list[dict[str, Any]] = []
    for stage, r in analysis.rows() if rows is None else rows:
        c = r.cost
        out.append(
            {
                "stage": stage,
                "module_id": r.module_id,
                "parent_id": r.parent_id,
                "depth": r.depth,
                "kind": r.kind,
                "category": r.category,
                "rule": r.rule,
                **c.as_dict(),
                "arithmetic_intensity": _intensity(c.flops, c.moved_bytes),
                # fused ideal: weights are read once (a gather reads only its rows, a module
                # that never ran reads none), so bytes_read = min(weight_bytes, bytes_read) + this
                "activation_bytes_read": c.bytes_read - min(c.weight_bytes, c.bytes_read),
                # filled by a traced run (ditmeter.compare.join)
                "measured_flops": None,
                "rel_error": None,
                "unfused_bytes": None,
                "unfused_arithmetic_intensity": None,
                "kernel": kernel_name(r.rule, stage, prediction),
                **_times(times.get(r.module_id), c.flops),
                # filled by a profiled run (ditmeter.compare.join.with_times)
                "measured_time_s": None,
                "achieved_flop_per_s": None,
                "achieved_bytes_per_s": None,
                "roofline_fraction": None,
                "predicted_ratio": None,
            }
        )
    table = pa.Table.from_pylist(out, schema=MODULES_SCHEMA)
    return table.to_pandas()


def table_metadata(analysis: Analysis, table: str, **extra: str) -> dict[str, str]:
    """Key-value metadata written into every Parquet file (``extra`` as ``ditmeter.<key>``)."""
    import attrs

    return {
        **{f"ditmeter.{k}": v for k, v in extra.items()},
        "ditmeter.table": table,
        "ditmeter.model": json.dumps(attrs.asdict(analysis.model)),
        "ditmeter.workload": json.dumps(attrs.asdict(analysis.workload)),
        "ditmeter.geometry": json.dumps(attrs.asdict(analysis.geometry)),
        "ditmeter.family": analysis.family,
        "ditmeter.pipeline": analysis.workload.pipeline,
        "ditmeter.stages": json.dumps(
            [{"stage": s.name, "runs_per_video": s.runs_per_video, "prefix": s.name} for s in analysis.stages]
        ),
        "ditmeter.versions": json.dumps(library_versions()),
        "ditmeter.convention": CONVENTION,
    }


def write_parquet(frame: pd.DataFrame, schema: pa.Schema, path: Path, meta: dict[str, str]) -> None:
    """Write ``frame`` with exactly ``schema`` plus ``meta`` (inside a staged run folder)."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in meta.items()})
    pq.write_table(table.replace_schema_metadata(merged), path)


#: Parquet metadata values that hold JSON.
JSON_METADATA = (
    "model",
    "workload",
    "geometry",
    "stages",
    "versions",
    "time",
    "profile",
    "memory",
    "collectives",
)


def read_table(path: Path, schema: pa.Schema, field: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a table a run wrote and check it against its documented ``schema``: the file, every
    column with its type, and the JSON metadata. A problem is a one-line error naming ``field``
    (the key that pointed at the run) and the file."""
    if not path.is_file():
        raise ConfigError(field, f"{path} is not a file")
    regular_file(path, field, TABLE_LIMIT_BYTES)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ConfigError(field, f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    for column in schema:
        if column.name not in table.schema.names:
            raise ConfigError(field, f"{path} has no column {column.name!r}")
        found = table.schema.field(column.name).type
        if found != column.type:
            raise ConfigError(field, f"{path}: column {column.name!r} is {found}, not {column.type}")
    meta = {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in (table.schema.metadata or {}).items()
    }
    for key in JSON_METADATA:
        name = f"ditmeter.{key}"
        if name in meta:
            try:
                json.loads(meta[name])
            except ValueError:
                raise ConfigError(field, f"{path}: metadata {name!r} is not JSON") from None
    return table.to_pandas(), meta
