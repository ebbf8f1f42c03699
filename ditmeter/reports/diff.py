"""Two runs side by side (``ditmeter diff``): per video, stage, category and module, what each run
says (FLOPs, bytes, predicted and measured time, memory), with the difference and the ratio.

Any two run folders work (two workloads, devices, plans, pipelines, predicted against profiled):
each side is read from what the run wrote, ``report.json`` and ``modules.parquet``, so a metric a
run does not have (no ``device=``: no time; not profiled: no measured time) is missing on that
side, never zero. The frame is long: one row per (level, key, metric). A number of
``report.json`` that is not finite or below 0 is refused (:func:`check_report`, naming its key), and
no value, difference or ratio is NaN or infinite: one that would be is missing (a ratio over 0, too).

Levels and their scopes (the same as the run's own artifacts):

- ``video``: the whole video (``per_video`` metrics), the forward (``per_forward``) and the peak
  memory per GPU;
- ``stage``: per video (``per_video``), and the memory on the GPU while the stage runs;
- ``category``: per forward of the forward stage (``report.json`` ``categories``, ``time.by_category``);
- ``module``: every row of ``modules.parquet`` (containers and leaves, each block's own), per
  run of its stage;
- ``layer``: the leaves summed across the copies of a repeated block (``dit.blocks.*.ffn.0``:
  every block's ``ffn.0``), per run of its stage, so runs with different block counts line up.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Any

import attrs
import pandas as pd
import pyarrow as pa

from ditmeter.analytic.tree import layer_pattern
from ditmeter.reports.format import binary_bytes, seconds, si
from ditmeter.reports.table_model import Column, Table, table, to_markdown

#: diff.parquet: one row per level, key and metric.
DIFF_SCHEMA = pa.schema(
    [
        pa.field("level", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("a", pa.float64()),
        pa.field("b", pa.float64()),
        pa.field("delta", pa.float64()),
        pa.field("ratio", pa.float64()),
    ]
)


@attrs.frozen
class RunTables:
    """What one run wrote: its id, ``report.json`` and ``modules.parquet``."""

    run_id: str
    report: dict[str, Any]
    modules: pd.DataFrame

    @property
    def label(self) -> str:
        """``model × workload`` with the device and the plan (its counts one GPU's share), as the run's
        report names them, and a profile's blocks where it ran fewer than the model has."""
        r = self.report
        workload = (r.get("workload") or {}).get("requested") or {}
        parts = [f"{r['model'].get('name', '?')} × {workload.get('name', '?')}", str(r["pipeline"])]
        time = r.get("time") or {}
        if time.get("device"):
            parts.append(str(time["device"]))
        plan = r.get("parallel")
        if plan:
            parts.append(f"{plan['name']} (one GPU's share)")
        profiled = r.get("profile")
        if isinstance(profiled, dict) and profiled.get("num_layers") != profiled.get("model_layers"):
            parts.append(f"profiled {profiled.get('num_layers')} of {profiled.get('model_layers')} blocks")
        return ", ".join(parts)


Row = tuple[str, str, str, float | None]  # level, key, metric, value


def _finite(value: float | None) -> float | None:
    """``value`` where it is a finite number, else None (missing): never NaN or infinity."""
    return value if value is not None and math.isfinite(value) else None


def _num(value: Any, where: str | None = None) -> float | None:
    """A count, size or time, None where missing. ``where``: the key of a value read from
    ``report.json``, which must be null or a finite number >= 0 (ValueError naming the key)."""
    if value is None:
        return None
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    try:
        out = float(value) if number else math.nan
    except OverflowError:  # an integer past float's range
        out = math.inf
    if math.isfinite(out) and out >= 0:
        return out
    if where is None:
        return None
    raise ValueError(f"{where} is {repr(value)[:40]}; allowed: a finite number >= 0, or null")


def _bytes(metrics: dict[str, Any], where: str) -> float | None:
    read = _num(metrics.get("bytes_read"), f"{where}.bytes_read")
    written = _num(metrics.get("bytes_written"), f"{where}.bytes_written")
    if read is None or written is None:
        return None
    if not math.isfinite(total := read + written):
        raise ValueError(f"{where}.bytes_read + bytes_written is past a float's range")
    return total


def _by(items: Any, key: str, where: str) -> dict[Any, tuple[str, dict[str, Any]]]:
    """``{item[key]: (its key path, item)}`` of a list of objects of ``report.json`` at ``where``."""
    return {item[key]: (f"{where}[{i}]", item) for i, item in enumerate(items or [])}


def _field(found: dict[Any, tuple[str, dict[str, Any]]], name: Any, key: str) -> float | None:
    where, item = found.get(name, ("", {}))
    return _num(item.get(key), f"{where}.{key}")


def _video(r: dict[str, Any]) -> Iterator[Row]:
    totals, time, memory = r["totals"], r.get("time") or {}, r.get("memory") or {}
    video, forward = totals["whole_video"], totals["per_forward"]
    flops = _num(video["tensor_flops"], "totals.whole_video.tensor_flops")
    yield "video", "video", "tensor_flops_per_video", flops
    yield "video", "video", "bytes_per_video", _bytes(video, "totals.whole_video")
    flops = _num(forward["tensor_flops"], "totals.per_forward.tensor_flops")
    yield "video", "video", "tensor_flops_per_forward", flops
    peak = _num(memory.get("peak_per_gpu_bytes"), "memory.peak_per_gpu_bytes")
    yield "video", "video", "peak_per_gpu_bytes", peak
    for key in ("per_video_s", "per_forward_s", "measured_video_s"):
        yield "video", "video", key, _num(time.get(key), f"time.{key}")


def _stages(r: dict[str, Any], modules: pd.DataFrame) -> Iterator[Row]:
    seconds = _by((r.get("time") or {}).get("stages"), "stage", "time.stages")
    on_gpu = _by((r.get("memory") or {}).get("timeline"), "stage", "memory.timeline")
    # a stage's measured time per run is its root module's (null where the run did not measure it)
    roots = modules[modules["depth"] == 0].groupby("stage")["measured_time_s"].sum(min_count=1)
    for i, s in enumerate(r["stages"]):
        name, video = s["stage"], s["per_video"]
        yield "stage", name, "runs_per_video", _num(s["runs_per_video"], f"stages[{i}].runs_per_video")
        flops = _num(video["tensor_flops"], f"stages[{i}].per_video.tensor_flops")
        yield "stage", name, "tensor_flops_per_video", flops
        yield "stage", name, "bytes_per_video", _bytes(video, f"stages[{i}].per_video")
        yield "stage", name, "per_video_s", _field(seconds, name, "per_video_s")
        yield "stage", name, "predicted_s_per_run", _field(seconds, name, "per_run_s")
        yield "stage", name, "measured_s_per_run", _num(roots.get(name))
        yield "stage", name, "gpu_bytes", _field(on_gpu, name, "total_bytes")


def _categories(r: dict[str, Any]) -> Iterator[Row]:
    seconds = _by((r.get("time") or {}).get("by_category"), "category", "time.by_category")
    section = "ingest" if r.get("ingest") else "profile"
    measured = _by((r.get(section) or {}).get("by_category"), "category", f"{section}.by_category")
    for i, c in enumerate(r["categories"]):
        name = c["category"]
        flops = _num(c["tensor_flops"], f"categories[{i}].tensor_flops")
        yield "category", name, "tensor_flops_per_forward", flops
        yield "category", name, "bytes_per_forward", _bytes(c, f"categories[{i}]")
        yield "category", name, "predicted_s_per_forward", _field(seconds, name, "predicted_s")
        yield "category", name, "measured_s_per_forward", _field(measured, name, "measured_time_s")


def check_report(run: RunTables) -> None:
    """Read every value the diff takes from the run's ``report.json`` (and its label): ValueError
    naming the key of one that is not null or a finite number >= 0, or of a section that is not the
    shape a report has."""
    try:
        _rows(run)
        _ = run.label
    except KeyError as exc:
        raise ValueError(f"not a ditmeter report: a section has no key {exc}") from None
    except (TypeError, AttributeError):
        raise ValueError("not a ditmeter report: a section is not the object or list a report has") from None


#: modules.parquet columns compared per module (per run of its stage); bytes = read + written.
MODULE_METRICS = ("tensor_flops", "bytes", "predicted_s", "measured_time_s", "measured_flops")


def _modules(frame: pd.DataFrame) -> Iterator[Row]:
    m = frame.assign(bytes=frame["bytes_read"] + frame["bytes_written"])
    metrics = list(MODULE_METRICS)  # every one a modules.parquet column (bytes: read + written)
    for metric in metrics:
        for key, value in zip(m["module_id"], m[metric], strict=True):
            yield "module", str(key), metric, _num(value)
    repeated = list(m.loc[m["kind"] == "repeated", "module_id"])
    leaves = m[m["kind"] == "leaf"]
    pattern = [layer_pattern(str(i), repeated) for i in leaves["module_id"]]
    layers = leaves[metrics].groupby(pattern, sort=False).sum(min_count=1)
    for metric in metrics:
        for key, value in layers[metric].items():
            yield "layer", str(key), metric, _num(value)


def _rows(run: RunTables) -> dict[tuple[str, str, str], float | None]:
    r = run.report
    rows = [*_video(r), *_stages(r, run.modules), *_categories(r), *_modules(run.modules)]
    return {(level, key, metric): value for level, key, metric, value in rows}


def diff_frame(a: RunTables, b: RunTables) -> pd.DataFrame:
    """Every (level, key, metric) either run has, with ``a``, ``b``, ``delta`` = b − a and ``ratio``
    = b / a (missing where a side lacks the metric; the ratio also where a is 0 or the quotient
    overflows). Rows where neither side has a value are left out."""
    left, right = _rows(a), _rows(b)
    keys = list(dict.fromkeys([*left, *right]))
    out = []
    for level, key, metric in keys:
        x, y = left.get((level, key, metric)), right.get((level, key, metric))
        if x is None and y is None:
            continue
        # every value is finite and >= 0 (_num), so the difference is finite; a quotient may overflow
        delta = y - x if x is not None and y is not None else None
        ratio = _finite(y / x) if x and y is not None else None
        out.append(
            {"level": level, "key": key, "metric": metric, "a": x, "b": y, "delta": delta, "ratio": ratio}
        )
    frame = pd.DataFrame(out, columns=[f.name for f in DIFF_SCHEMA])
    return frame.astype({"a": "float64", "b": "float64", "delta": "float64", "ratio": "float64"})


def top_layers(frame: pd.DataFrame, metric: str, n: int) -> pd.DataFrame:
    """The ``n`` layers whose ``metric`` moved most (by |delta|; one-sided rows by their value)."""
    rows = frame[(frame["level"] == "layer") & (frame["metric"] == metric)].copy()
    size = rows["delta"].abs().fillna(rows[["a", "b"]].abs().max(axis=1))
    return rows.assign(_size=size).sort_values("_size", ascending=False).head(n).drop(columns="_size")


def _value(metric: str, value: float | None) -> str:
    """A metric's value for people: seconds, bytes (binary units) or counts (SI); '—' if missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if metric.endswith("_s") or "_s_" in metric:
        return seconds(value)
    if "bytes" in metric:
        return binary_bytes(int(value)) if value >= 0 else f"−{binary_bytes(int(-value))}"
    return si(value, "FLOP" if "flops" in metric else "")


def _ratio(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}×"


def diff_tables(frame: pd.DataFrame, a: RunTables, b: RunTables, top: int = 15) -> list[Table]:
    """The video, stage and category rows, and the ``top`` layers that moved most in predicted
    time (or FLOPs when neither run has a time), as tables for the terminal and diff.md."""
    columns = (
        Column("what", "left", code=True),
        Column("metric", "left"),
        Column(f"A: {a.run_id}"),
        Column(f"B: {b.run_id}"),
        Column("B − A"),
        Column("B / A"),
    )

    def rows(part: pd.DataFrame) -> list[tuple[str, ...]]:
        return [
            (
                str(r.key),
                str(r.metric),
                _value(r.metric, r.a),
                _value(r.metric, r.b),
                _value(r.metric, r.delta),
                _ratio(r.ratio),
            )
            for r in part.itertuples()
        ]

    measured = time_table(frame, a, b, top)
    out = [
        table("the video", columns, rows(frame[frame["level"] == "video"])),
        *([measured] if measured is not None else []),
        table("per stage (per video)", columns, rows(frame[frame["level"] == "stage"])),
        table(
            "per category of the forward stage (per forward)",
            columns,
            rows(frame[frame["level"] == "category"]),
        ),
    ]
    timed = frame[(frame["level"] == "layer") & (frame["metric"] == "predicted_s")]
    metric = "predicted_s" if timed[["a", "b"]].notna().any().any() else "tensor_flops"
    moved = top_layers(frame, metric, top)
    out.append(
        table(f"the {top} layers whose {metric} moved most (per run of the stage)", columns, rows(moved))
    )
    return out


#: (level, the scope of its times, predicted metric, measured metric) of the time table.
_TIMED = (
    ("stage", "per run", "predicted_s_per_run", "measured_s_per_run"),
    ("category", "per forward", "predicted_s_per_forward", "measured_s_per_forward"),
    ("layer", "per run", "predicted_s", "measured_time_s"),
)


def time_table(frame: pd.DataFrame, a: RunTables, b: RunTables, top: int = 15) -> Table | None:
    """Predicted and measured time side by side, per run of each stage, per forward of each
    category and per run of the ``top`` layers by measured time: each run's predicted and measured
    columns (those it has) and, where one run is measured and the other is not, the other's
    prediction / the measurement. None when neither run measured anything."""
    values = frame.set_index(["level", "key", "metric"])[["a", "b"]]
    picked: list[tuple[str, str, str, str, str]] = []  # level, key, scope, predicted, measured metric
    for level, scope, predicted, measured in _TIMED:
        if level == "layer":  # the top layers by measured time
            rows = frame[(frame["level"] == level) & (frame["metric"] == measured)]
            size = rows[["a", "b"]].max(axis=1)
            keys = list(rows.assign(_size=size)[size > 0].nlargest(top, "_size")["key"])
        else:  # every stage and category either run times
            rows = frame[(frame["level"] == level) & frame["metric"].isin([predicted, measured])]
            keys = list(dict.fromkeys(rows["key"]))
        picked += [(level, str(k), scope, predicted, measured) for k in keys]

    def column(side: str, kind: int) -> list[float | None]:
        out = []
        for level, key, _, *metrics in picked:
            at = (level, key, metrics[kind])
            value = values.at[at, side] if at in values.index else None
            out.append(None if value is None or pd.isna(value) else float(value))
        return out

    names = {"a": a.run_id, "b": b.run_id}
    cells = {(side, kind): column(side, kind) for side in names for kind in (0, 1)}
    shown = [c for c, v in cells.items() if any(x is not None for x in v)]
    timed = [side for side, kind in shown if kind == 1]
    if not timed:
        return None
    columns = [Column("what", "left", code=True), Column("time", "left")]
    columns += [Column(f"{s.upper()}: {names[s]} {('predicted', 'measured')[k]}") for s, k in shown]
    pair = None  # (the side predicted only, the side measured)
    other = "b" if timed == ["a"] else "a"
    if len(timed) == 1 and (other, 0) in shown:
        pair = (other, timed[0])
        columns.append(Column(f"{pair[0].upper()} predicted / {pair[1].upper()} measured"))
    body = []
    for i, (_, key, scope, *_) in enumerate(picked):
        row = [key, scope, *(_value("time_s", cells[c][i]) for c in shown)]
        if pair is not None:
            x, y = cells[pair[0], 0][i], cells[pair[1], 1][i]
            row.append(_ratio(_finite(x / y) if x is not None and y else None))
        body.append(row)
    return table("predicted and measured time", columns, body)


def diff_markdown(frame: pd.DataFrame, a: RunTables, b: RunTables, top: int = 15) -> str:
    """diff.md: the two runs, then the tables of :func:`diff_tables`."""
    lines = [
        f"# diff: {a.run_id} → {b.run_id}",
        "",
        f"- A: `{a.run_id}` ({a.label})",
        f"- B: `{b.run_id}` ({b.label})",
        "",
        "B − A and B / A per metric; — where a run lacks the metric (no `device=`: no time; not "
        "profiled: no measured time) or A is 0. Every row is in `diff.parquet` (`level`, `key`, "
        "`metric`, `a`, `b`, `delta`, `ratio`).",
    ]
    for t in diff_tables(frame, a, b, top):
        lines += ["", f"## {t.title[0].upper()}{t.title[1:]}", "", *to_markdown(t)]
    return "\n".join(lines) + "\n"
