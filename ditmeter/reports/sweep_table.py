"""``sweep.parquet``: one row per point of a sweep, its schema and its file metadata.

A row holds the point's axis values, the video's costs and memory peak and its predicted times
(:func:`sweep_schema`), gathered from each analysis timed on every device and plan
(:class:`~ditmeter.analytic.batch_timing.Evaluated`) by :func:`sweep_frame`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import numpy as np
import pandas as pd
import pyarrow as pa

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.batch_timing import DevicePlan, Evaluated
from ditmeter.analytic.categories import CATEGORIES
from ditmeter.reports.table_model import Column, Table, table

ID_COLUMNS = ("model", "workload", "device")
#: The workload as given (``tokens``: video tokens per sample after the pipeline's rounding).
WORKLOAD_COLUMNS = ("batch_size", "num_frames", "height", "width", "num_inference_steps")
SHAPE_COLUMNS = (*WORKLOAD_COLUMNS, "tokens")
COUNT_COLUMNS = (
    "forwards_per_video",
    "tensor_flops_per_video",
    "cuda_flops_per_video",
    "bytes_per_video",
    "peak_per_gpu_bytes",
    "device_memory_bytes",
)
TIME_COLUMNS = (
    "per_video_s",
    "roofline_per_video_s",
    "compute_per_video_s",
    "memory_per_video_s",
    "overhead_per_video_s",
    "offload_per_video_s",
    "per_forward_s",
    "roofline_per_forward_s",
    "per_step_s",
)
#: The multi-GPU plan of a point (``parallel.*``; one GPU: 1, 1.0, 1.0, 0.0).
PLAN_COLUMNS = ("gpus", "speedup", "parallel_efficiency", "comm_exposed_per_video_s")
CONVENTION = (
    "One row per point of the grid. FLOPs: 2 per multiply-add; tensor_flops = matmul/conv/attention-core "
    "FLOPs, cuda_flops = element-wise FLOPs; bytes: fused ideal (bytes_read + bytes_written). *_per_video: "
    "every selected stage × its runs per video, and the weights moved between host and GPU "
    "(offload_per_video_s); per_forward_s and share_<category>: the denoiser (DiT) forward, whether or not "
    "stages= selects it. Times in seconds on the point's device under its time plan. "
    "Under a parallel.* plan per_video_s, per_forward_s, per_step_s, the denoiser's <stage>_per_video_s "
    "and peak_per_gpu_bytes are one GPU's of the plan; the roofline, compute, memory and overhead "
    "columns are null there (one GPU's whole video would read as the plan's)."
)
#: One GPU's whole video only: null on a row that runs a multi-GPU plan (``_plan_times``).
ONE_GPU_COLUMNS = (
    "roofline_per_video_s",
    "compute_per_video_s",
    "memory_per_video_s",
    "overhead_per_video_s",
    "roofline_per_forward_s",
)


def sweep_schema(
    axis_keys: Sequence[str], stages: Sequence[str], categories: Sequence[str], booleans: Sequence[str] = ()
) -> pa.Schema:
    """The columns of ``sweep.parquet``: ids and the swept and fixed keys (strings, as given;
    ``booleans`` bool), the workload's shape, counts (int64, base units), fits, times (float64
    seconds; a stage the point's model does not run is null) and the forward's time share by
    category (fractions summing to 1)."""

    def field(name: str, kind: pa.DataType, nullable: bool = False) -> pa.Field:
        return pa.field(name, kind, nullable=nullable)

    return pa.schema(
        [
            *(field(k, pa.string()) for k in ID_COLUMNS),
            *(
                field(k, pa.bool_() if k in booleans else pa.string())
                for k in axis_keys
                if k not in (*ID_COLUMNS, *PLAN_COLUMNS)
            ),
            field("time_mode", pa.string()),
            field("attention_backend", pa.string(), nullable=True),
            *(field(k, pa.int64()) for k in (*SHAPE_COLUMNS, *COUNT_COLUMNS)),
            field("fits", pa.bool_()),
            field("gpus", pa.int64()),
            field("plan", pa.string()),
            field("adjusted", pa.string(), nullable=True),
            *(field(k, pa.float64(), k in ONE_GPU_COLUMNS) for k in (*TIME_COLUMNS, *PLAN_COLUMNS[1:])),
            *(field(f"{s}_per_video_s", pa.float64(), nullable=True) for s in stages),
            *(field(f"share_{c}", pa.float64()) for c in categories),
        ]
    )


def _merged_order(orders: Sequence[Sequence[str]]) -> list[str]:
    """Names in an order that keeps each list's own order where they agree (stages of models)."""
    out: list[str] = []
    for names in orders:
        for prev, name in zip((None, *names), names, strict=False):
            if name not in out:
                out.insert(out.index(prev) + 1 if prev in out else len(out), name)
    return out


class SweepAxis(Protocol):
    """What the table reads of a swept key (``ditmeter.commands.sweep_grid.Axis``)."""

    @property
    def key(self) -> str: ...

    @property
    def texts(self) -> tuple[str, ...]: ...

    @property
    def device_side(self) -> bool: ...

    @property
    def values(self) -> tuple[Any, ...]: ...

    @property
    def boolean(self) -> bool: ...

    def label(self, i: int) -> str: ...


@attrs.frozen(eq=False)
class _Rows:
    """Each row's analysis (``ai``) and device and plan (``pi``): the gathers of a column."""

    ai: np.ndarray
    pi: np.ndarray

    def per_analysis(self, values: Sequence[object], dtype: Any = object) -> np.ndarray:
        out: np.ndarray = np.array(values, dtype=dtype)[self.ai]
        return out

    def per_plan(self, values: Sequence[object], dtype: Any = object) -> np.ndarray:
        out: np.ndarray = np.array(values, dtype=dtype)[self.pi]
        return out

    def per_point(self, values: Sequence[np.ndarray]) -> np.ndarray:
        out: np.ndarray = np.stack(values)[self.ai, self.pi]
        return out


def _id_columns(
    axes: Sequence[SweepAxis],
    constants: Sequence[SweepAxis],
    idx: Sequence[np.ndarray],
    rows: _Rows,
    evaluated: Sequence[Evaluated],
    plans: Sequence[DevicePlan],
) -> dict[str, np.ndarray]:
    """The strings: model, workload, device, each axis and fixed key as given (booleans as bool),
    the time mode and attention kernel."""
    analyses = [e.analysis for e in evaluated]
    cols: dict[str, np.ndarray] = {
        "model": rows.per_analysis([a.model.name for a in analyses]),
        # load names an edited preset "480p-81f[num_frames=33]": the swept keys have columns
        "workload": rows.per_analysis([a.workload.name.partition("[")[0] for a in analyses]),
        "device": rows.per_plan([dp.device.name for dp in plans]),
    }
    for i, a in enumerate(axes):
        if a.key not in (*ID_COLUMNS, *PLAN_COLUMNS):
            values = a.values if a.boolean else [a.label(j) for j in range(len(a.texts))]
            cols[a.key] = np.array(values, dtype=bool if a.boolean else object)[idx[i]]
    for a in constants:
        if a.key not in (*ID_COLUMNS, *PLAN_COLUMNS):
            value = a.values[0] if a.boolean else a.label(0)
            cols[a.key] = np.full(len(rows.ai), value, dtype=bool if a.boolean else object)
    named = [e.plan_names or ("1 GPU",) * len(plans) for e in evaluated]
    cols["plan"] = rows.per_point([np.array(n, dtype=object) for n in named])
    cols["time_mode"] = rows.per_plan(["predicted" if dp.plan.predicted else "roofline" for dp in plans])
    backends = np.array([e.backend for e in evaluated], dtype=object).reshape(-1, len(plans))
    cols["attention_backend"] = backends[rows.ai, rows.pi]
    return cols


def _peaks(rows: _Rows, evaluated: Sequence[Evaluated], plans: Sequence[DevicePlan]) -> np.ndarray:
    """Each point's peak memory per GPU: its analysis's, or its plan's where they differ (FP8)."""
    if not any(e.peaks is not None for e in evaluated):
        return rows.per_analysis([e.analysis.memory.peak_per_gpu_bytes for e in evaluated], np.int64)
    per_plan = [
        e.peaks if e.peaks is not None else np.full(len(plans), e.analysis.memory.peak_per_gpu_bytes)
        for e in evaluated
    ]
    return rows.per_point(per_plan).astype(np.int64)


def _count_columns(
    rows: _Rows,
    analyses: Sequence[Analysis],
    plans: Sequence[DevicePlan],
    evaluated: Sequence[Evaluated],
) -> dict[str, np.ndarray]:
    """The workload's shape, the video's counts, the memory peak and whether it fits."""
    w = [a.workload for a in analyses]
    cols = {k: rows.per_analysis([getattr(x, k) for x in w], np.int64) for k in WORKLOAD_COLUMNS}
    cols["tokens"] = rows.per_analysis([a.geometry.tokens for a in analyses], np.int64)
    video = [a.whole_video for a in analyses]
    cols |= {
        "forwards_per_video": rows.per_analysis([a.forwards_per_video for a in analyses], np.int64),
        "tensor_flops_per_video": rows.per_analysis([c.tensor_flops for c in video], np.int64),
        "cuda_flops_per_video": rows.per_analysis([c.cuda_flops for c in video], np.int64),
        "bytes_per_video": rows.per_analysis([c.moved_bytes for c in video], np.int64),
        "peak_per_gpu_bytes": _peaks(rows, evaluated, plans),
        "device_memory_bytes": rows.per_plan([dp.device.memory_bytes for dp in plans], np.int64),
    }
    cols["fits"] = cols["peak_per_gpu_bytes"] <= cols["device_memory_bytes"]
    return cols


def adjusted(analysis: Analysis) -> str | None:
    """What the pipeline changed in the point's workload (frames, size), or None: the swept value
    is then what was costed."""
    return "; ".join(a.text for a in analysis.geometry.adjustments) or None


def sweep_frame(
    axes: Sequence[SweepAxis],
    evaluated: Sequence[Evaluated],
    plans: Sequence[DevicePlan],
    gpus: Sequence[int] | None = None,
    constants: Sequence[SweepAxis] = (),
) -> tuple[pd.DataFrame, pa.Schema]:
    """One row per point of the grid ``axes`` span (the last fastest): the analysis of
    ``evaluated`` its analysis-side axes pick, on the one of ``plans`` its device-side axes pick
    (each list in the order of its axes' product); ``gpus`` the GPUs of each analysis's plan
    (its times then hold ``speedup``, ``parallel_efficiency`` and ``comm_exposed_per_video_s``);
    ``constants`` the fixed keys, a column each."""
    sizes = [len(a.texts) for a in axes]
    size = math.prod(sizes)
    idx = np.unravel_index(np.arange(size), sizes) if sizes else ()

    def flat(device_side: bool) -> np.ndarray:
        which = [i for i, a in enumerate(axes) if a.device_side == device_side]
        if not which:
            return np.zeros(size, dtype=np.intp)
        return np.ravel_multi_index([idx[i] for i in which], [sizes[i] for i in which])

    rows = _Rows(flat(False), flat(True))
    analyses = [e.analysis for e in evaluated]
    stages = _merged_order([[s.name for s in a.stages] for a in analyses])
    found = _merged_order([list(e.shares) for e in evaluated])
    categories = [c for c in CATEGORIES if c in found] + [c for c in found if c not in CATEGORIES]
    keyed = [*axes, *(c for c in constants if c.key not in {a.key for a in axes})]
    booleans = [a.key for a in keyed if a.boolean]
    schema = sweep_schema([a.key for a in keyed], stages, categories, booleans)

    cols = _id_columns(axes, keyed[len(axes) :], idx, rows, evaluated, plans) | _count_columns(
        rows, analyses, plans, evaluated
    )
    cols["gpus"] = rows.per_analysis(list(gpus or [1] * len(evaluated)), np.int64)
    cols["adjusted"] = pd.array(rows.per_analysis([adjusted(a) for a in analyses]), dtype="str")
    absent = np.full(len(plans), np.nan)
    single = {"speedup": np.ones(len(plans)), "parallel_efficiency": np.ones(len(plans))}
    for e in evaluated:
        for name in PLAN_COLUMNS[1:]:
            e.times.setdefault(name, single.get(name, np.zeros(len(plans))))
    for name in (*TIME_COLUMNS, *PLAN_COLUMNS[1:], *(f"{s}_per_video_s" for s in stages)):
        cols[name] = rows.per_point([e.times.get(name, absent) for e in evaluated])
    zero = np.zeros(len(plans))
    for c in categories:
        cols[f"share_{c}"] = rows.per_point([e.shares.get(c, zero) for e in evaluated])
    return pd.DataFrame({f.name: cols[f.name] for f in schema}), schema


def sweep_metadata(
    overrides: Sequence[str], axes: Sequence[SweepAxis], fixed: Sequence[str], points: int
) -> dict[str, str]:
    """Key-value metadata of ``sweep.parquet``: how the grid was asked for, library versions."""
    from ditmeter.reports.tables import library_versions

    return {
        "ditmeter.table": "sweep",
        "ditmeter.overrides": json.dumps(list(overrides)),
        "ditmeter.axes": json.dumps({a.key: list(a.texts) for a in axes}),
        "ditmeter.fixed": json.dumps(list(fixed)),
        "ditmeter.points": str(points),
        "ditmeter.versions": json.dumps(library_versions()),
        "ditmeter.convention": CONVENTION,
    }


def as_written(value: object) -> str:
    """A key's value as an override writes it (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool | np.bool_) else str(value)


def ranked_table(frame: pd.DataFrame, axis_keys: Sequence[str], plans: bool, shown: int = 5) -> Table:
    """The ``shown`` fastest and slowest points (every point of a small sweep): the ids and swept
    keys, the predicted seconds per video, with ``plans`` the speedup, the peak memory per GPU and
    whether it fits."""
    from ditmeter.reports.format import binary_bytes, seconds

    keys = [*ID_COLUMNS, *(k for k in axis_keys if k not in ID_COLUMNS)]
    if "gpus" in axis_keys:  # each device's fastest plan: name it
        keys.append("plan")
    ranked = frame.sort_values("per_video_s", kind="stable")
    if len(frame) > 2 * shown:
        ranked = pd.concat([ranked.head(shown), ranked.tail(shown)])
    extra = ("speedup",) if plans else ()
    columns = [
        *(Column(k, "left", code=True) for k in keys),
        *(Column(k) for k in ("per video", *extra, "peak per GPU")),
        Column("fits", "left"),
    ]
    rows = [
        (
            *(as_written(row[k]) for k in keys),
            seconds(float(row["per_video_s"])),
            *((f"{row['speedup']:.2f}×",) if plans else ()),
            binary_bytes(int(row["peak_per_gpu_bytes"])),
            "yes" if row["fits"] else "NO",
        )
        for _, row in ranked.iterrows()
    ]
    n = len(frame)
    return table(f"fastest and slowest of {n:,} points (predicted seconds per video)", columns, rows)
