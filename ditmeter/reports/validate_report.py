"""``ditmeter validate``'s tables, Markdown and plot (formatting only: the errors are computed in
:mod:`ditmeter.compare.measurements`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from ditmeter.compare.measurements import error_summary
from ditmeter.reports.table_model import Column, Table, table, to_markdown

VALIDATE_SCHEMA = pa.schema(
    [
        pa.field("point_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("pipeline", pa.string(), nullable=False),
        pa.field("framework", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("published_gpu", pa.string(), nullable=False),
        pa.field("gpus", pa.int64(), nullable=False),
        pa.field("settings", pa.string(), nullable=False),
        pa.field("inferred", pa.string(), nullable=False),
        pa.field("plan", pa.string(), nullable=False),
        pa.field("method", pa.string()),
        pa.field("timed", pa.string(), nullable=False),
        pa.field("measured_s", pa.float64(), nullable=False),
        pa.field("predicted_s", pa.float64(), nullable=False),
        pa.field("rel_error", pa.float64(), nullable=False),
        pa.field("abs_rel_error", pa.float64(), nullable=False),
        pa.field("roofline_s", pa.float64(), nullable=False),
        pa.field("measured_over_roofline", pa.float64(), nullable=False),
        pa.field("measured_speedup", pa.float64()),
        pa.field("predicted_speedup", pa.float64()),
        pa.field("speedup_rel_error", pa.float64()),
        pa.field("measured_peak_gb", pa.float64()),
        pa.field("predicted_peak_gb", pa.float64()),
        pa.field("peak_rel_error", pa.float64()),
        pa.field("fp32_matmul", pa.string(), nullable=False),
        pa.field("assumed", pa.string(), nullable=False),
        pa.field("where", pa.string(), nullable=False),
        pa.field("quote", pa.string(), nullable=False),
    ]
)
#: The files a validate run folder holds.
VALIDATE_FILES = ("validate.parquet", "validate.md", "validate.png")


def _signed(x: float) -> str:
    return f"{x:+.1%}"


def _seconds(s: float) -> str:
    """A point's seconds: one decimal from 10 s up, three significant digits below (a 0.481 s step)."""
    return f"{s:,.1f} s" if s >= 10 else f"{s:.3g} s"


def point_table(frame: pd.DataFrame) -> Table:
    rows = [
        (
            r.point_id,
            r.device,
            str(r.gpus),
            r.timed,
            _seconds(r.measured_s),
            _seconds(r.predicted_s),
            _signed(r.rel_error),
        )
        for r in frame.itertuples()
    ]
    cols = [
        Column("point", "left", code=True),
        Column("device", "left"),
        Column("GPUs"),
        Column("timed", "left"),
        Column("measured"),
        Column("predicted"),
        Column("error"),
    ]
    return table("every point: predicted vs measured", cols, rows)


def summary_tables(frame: pd.DataFrame) -> list[Table]:
    cols = [
        Column("group", "left"),
        Column("points"),
        Column("median |error|"),
        Column("max |error|"),
        Column("median error"),
    ]
    out = []
    plans = frame[frame["method"].isna()]
    methods = frame[frame["method"].notna()].assign(
        method=lambda f: f["method"].str.split(" (", n=1, regex=False).str[0]
    )
    for by, title, error, rows_of in (
        (None, "the whole dataset", "rel_error", frame),
        ("device", "per GPU", "rel_error", frame),
        ("framework", FRAMEWORK_TITLE, "rel_error", frame),
        ("source", "per source (each file of the dataset)", "rel_error", frame),
        ("gpus", "per GPU count", "rel_error", frame),
        ("plan", "per plan family", "rel_error", frame),
        ("plan", "speed-up over the same table's one-GPU point, per plan family", "speedup_rel_error", plans),
        ("method", "speed-up of a method over its own baseline, per method", "speedup_rel_error", methods),
        ("source", PEAK_TITLE, "peak_rel_error", frame),
    ):
        s = error_summary(rows_of, by, error)
        rows = [
            (
                r.group,
                str(r.points),
                f"{r.median_abs_rel_error:.1%}",
                f"{r.max_abs_rel_error:.1%}",
                _signed(r.median_rel_error),
            )
            for r in s.itertuples()
        ]
        out.append(table(title, cols, rows))
    return out


#: The framework table's title: it groups by what ran, not by the pipeline a runtime is costed as.
FRAMEWORK_TITLE = "per framework (what ran; another runtime costed as the pipeline its point names)"
#: The peak-memory table's title: what is compared, and the unit as the sources print it.
PEAK_TITLE = (
    "peak memory per GPU against the published peak, per source (the sources' GB taken as 10^9 bytes; "
    "none says what measured it)"
)


def _points(n: int) -> str:
    return f"{n} point" if n == 1 else f"{n} points"


def fp32_reading(fp32_matmul: str | None) -> str:
    """The run's ``time.fp32_matmul`` as the header states it (None: each point's own)."""
    return fp32_matmul or "each point's (ieee unless its source states or implies tf32)"


def fp32_notes(frame: pd.DataFrame, fp32_matmul: str | None) -> str | None:
    """The line that says which points read their fp32 matmuls otherwise than PyTorch's default or
    the run's ``time.fp32_matmul``: those whose source states it (their settings carry the key),
    those whose source's measurements imply it (``inferred``, when the run gives no reading), and
    those a TF32 reading is not applied to (their devices have no TF32 curve); or None."""
    key = "time.fp32_matmul="
    stated = frame["settings"].str.contains(key, regex=False)
    implied = frame["inferred"].str.extract(r"time\.fp32_matmul=(\S+)", expand=False)
    asked = implied.fillna("ieee") if fp32_matmul is None else pd.Series(fp32_matmul, index=frame.index)
    asked = asked.where(~stated, frame["fp32_matmul"])
    parts = []
    own = frame[stated & (frame["fp32_matmul"] != (fp32_matmul or "ieee"))]
    if not own.empty:
        one = len(own) == 1
        verb, says = ("states its", "its source says") if one else ("state their", "their sources say")
        readings = ", ".join(sorted(set(own["fp32_matmul"])))
        parts.append(f"{_points(len(own))} {verb} own time.fp32_matmul ({readings}, as {says})")
    inferred = frame[~stated & implied.notna() & (frame["fp32_matmul"] == implied)]
    if fp32_matmul is None and not inferred.empty:
        readings = ", ".join(sorted(set(inferred["fp32_matmul"])))
        sources = "; ".join(sorted(set(inferred["source"])))
        parts.append(
            f"{_points(len(inferred))} read time.fp32_matmul as {readings}, which their source does not "
            f"state but its measurements imply ({sources}: see their assumed; time.fp32_matmul=ieee "
            "reads them as PyTorch's default)"
        )
    kept = frame[~stated & (frame["fp32_matmul"] != asked)]
    if not kept.empty:
        devices = ", ".join(sorted(set(kept["device"])))
        parts.append(
            f"time.fp32_matmul={', '.join(sorted(set(asked[kept.index])))} is not applied to "
            f"{_points(len(kept))} ({devices}: no TF32 GEMM curve in their kernel tables); they keep "
            f"{', '.join(sorted(set(kept['fp32_matmul'])))}"
        )
    return "; ".join(parts) or None


def below_roofline(frame: pd.DataFrame) -> str | None:
    """The line naming the points measured faster than the tool's roofline of their stated settings
    (every kernel as ``time.execution`` runs it at its compute or memory peak, no communication):
    no kernel efficiency can reach them, so what ran differs from what is stated, or the model
    counts work that did not run; or None."""
    fast = frame[frame["measured_over_roofline"] < 1.0]
    if fast.empty:
        return None
    named = ", ".join(
        f"{r.point_id} ({_seconds(r.measured_s)} measured, roofline {_seconds(r.roofline_s)})"
        for r in fast.itertuples()
    )
    verb = "was" if len(fast) == 1 else "were"
    return (
        f"{_points(len(fast))} {verb} measured faster than the roofline of the settings stated for "
        f"{'it' if len(fast) == 1 else 'them'} (every kernel at its peak, no communication): what ran "
        f"differs from what is stated, or the model counts work that did not run: {named}"
    )


def validate_markdown(frame: pd.DataFrame, execution: str, fp32_matmul: str | None = None) -> str:
    note = "".join(f" {n}." for n in (fp32_notes(frame, fp32_matmul), below_roofline(frame)) if n)
    lines = [
        "# ditmeter validate: predicted against public measurements of real Wan runs",
        "",
        f"{len(frame)} points; time.execution={execution}, time.fp32_matmul={fp32_reading(fp32_matmul)}. "
        "Error = predicted / measured − 1. "
        "No constant of the time model is fitted to these measurements." + note,
        "",
    ]
    for t in [*summary_tables(frame), point_table(frame)]:
        lines += [f"## {t.title}", "", *to_markdown(t), ""]
    lines += ["## Sources and assumptions", ""]
    for r in frame.itertuples():
        lines.append(
            f"- `{r.point_id}`: {r.where} — “{r.quote}”" + (f" Assumed: {r.assumed}." if r.assumed else "")
        )
    return "\n".join(lines) + "\n"


def validate_plot(frame: pd.DataFrame, path: Path) -> None:
    """Predicted against measured seconds on log axes: y = x, a ±10% band, colour by GPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    lo = float(min(frame["measured_s"].min(), frame["predicted_s"].min())) / 1.5
    hi = float(max(frame["measured_s"].max(), frame["predicted_s"].max())) * 1.5
    xs = [lo, hi]
    ax.fill_between(xs, [x * 0.9 for x in xs], [x * 1.1 for x in xs], color="0.85", label="±10%")
    ax.plot(xs, xs, color="0.3", lw=1, label="y = x")
    for device, g in frame.groupby("device", sort=True):
        ax.scatter(g["measured_s"], g["predicted_s"], s=28, label=str(device), alpha=0.85)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured seconds (published)")
    ax.set_ylabel("predicted seconds")
    med = float(frame["abs_rel_error"].median())
    ax.set_title(f"ditmeter validate: {len(frame)} points, median |error| {med:.1%}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
