"""``ditmeter plan``'s table: its Parquet schema and metadata, the ranked table (terminal and
``plan.md``) and the lines under it (the best plans, the warnings, the plans that cannot run)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from ditmeter.reports.format import batch_note, binary_bytes, seconds
from ditmeter.reports.table_model import Column, Table, table, to_markdown
from ditmeter.reports.tables import CONVENTION, library_versions

if TYPE_CHECKING:
    from ditmeter.commands.plan_result import PlanResult


def plan_schema() -> pa.Schema:
    """One row per plan; times and money null where the plan cannot run (``reason`` says why)."""
    f = pa.field
    return pa.schema(
        [
            f("rank", pa.int64()),  # 1: the fastest; null: cannot run
            f("plan", pa.string()),
            f("gpus", pa.int64()),
            f("ulysses", pa.int64()),
            f("ring", pa.int64()),
            f("cfg", pa.int64()),
            f("dit_fsdp", pa.bool_()),
            f("t5_fsdp", pa.bool_()),
            f("runs", pa.bool_()),
            f("reason", pa.string()),  # the family's refusal, as `report` gives it
            f("per_video_s", pa.float64()),
            f("speedup", pa.float64()),  # over the same video on one GPU
            f("parallel_efficiency", pa.float64()),  # speedup / gpus
            f("comm_exposed_per_video_s", pa.float64()),
            f("peak_per_gpu_bytes", pa.int64()),
            f("device_memory_bytes", pa.int64()),
            f("fits", pa.bool_()),  # peak_per_gpu_bytes <= device_memory_bytes
            f("under_limit", pa.bool_()),  # under plan.memory_limit_gib (true without one)
            f("videos_per_gpu_hour", pa.float64()),
            f("cost_per_video", pa.float64()),  # per_video_s × gpus / 3600 × plan.price_per_gpu_hour
            f("slower_than_fewer_gpus", pa.bool_()),  # slower than the best plan on N/2 GPUs (or one)
        ]
    )


def plan_metadata(result: PlanResult) -> dict[str, str]:
    cfg, o = result.cfg, result.options
    assert cfg.device is not None
    return {
        "ditmeter.table": "plan",
        "ditmeter.model": cfg.model.name,
        "ditmeter.workload": cfg.workload.name,
        "ditmeter.device": cfg.device.name,
        "ditmeter.gpus": str(o.gpus),
        "ditmeter.single_video_s": repr(result.single_video_s),
        "ditmeter.options": json.dumps(
            {"memory_limit_gib": o.memory_limit_gib, "price_per_gpu_hour": o.price_per_gpu_hour}
        ),
        "ditmeter.overrides": json.dumps(list(result.overrides)),
        "ditmeter.versions": json.dumps(library_versions()),
        "ditmeter.convention": CONVENTION,
    }


def plan_table(result: PlanResult) -> Table:
    """The plans that run, fastest first."""
    priced = result.options.price_per_gpu_hour is not None
    columns = [
        Column("#"),
        Column("plan", "left"),
        *(Column(n) for n in ("per video", "speedup", "efficiency", "comm exposed", "peak per GPU")),
        Column("fits", "left"),
        Column("videos/GPU·h"),
        # the price's own currency: plan.price_per_gpu_hour names none
        *((Column(f"cost/video at {result.options.price_per_gpu_hour:g}/GPU·h"),) if priced else ()),
    ]
    rows = [
        (
            str(row["rank"]),
            str(row["plan"]) + (" (slower)" if row["slower_than_fewer_gpus"] else ""),
            seconds(float(row["per_video_s"])),
            f"{row['speedup']:.2f}×",
            f"{100 * row['parallel_efficiency']:.0f}%",
            seconds(float(row["comm_exposed_per_video_s"])),
            binary_bytes(int(row["peak_per_gpu_bytes"])),
            "yes" if row["fits"] else "NO",
            f"{row['videos_per_gpu_hour']:.2f}",
            *((f"{row['cost_per_video']:.3f}",) if priced else ()),
        )
        for _, row in result.runnable.iterrows()
    ]
    cfg = result.cfg
    assert cfg.device is not None
    methods = [o for o in result.overrides if o.partition("=")[0].startswith("methods.")]
    under = f" with {' '.join(methods)}" if methods else ""  # every plan and the one GPU run them
    title = (
        f"plans on {result.options.gpus} × {cfg.device.name}, {cfg.model.name} × {cfg.workload.name}"
        f"{under} (predicted seconds per video; one GPU {seconds(result.single_video_s)})"
    )
    return table(title, columns, rows)


def _best(label: str, row: pd.Series | None) -> str:
    if row is None:
        return f"{label}: none"
    return (
        f"{label}: {row['plan']}, {seconds(float(row['per_video_s']))} per video, "
        + binary_bytes(int(row["peak_per_gpu_bytes"]))
        + " per GPU"
    )


def plan_lines(result: PlanResult) -> list[str]:
    """The best plan, the best that fits, a warning per plan slower than fewer GPUs, the refusals."""
    cfg, o = result.cfg, result.options
    assert cfg.device is not None
    fit = f"fits {binary_bytes(cfg.device.memory_bytes)}"
    if o.memory_limit_gib is not None:
        fit += f" and plan.memory_limit_gib={o.memory_limit_gib:g}"
    lines = [_best("best", result.best()), _best(f"best that {fit}", result.best(fits_only=True))]
    fewer = "one GPU" if result.fewer_gpus == 1 else f"the best plan on {result.fewer_gpus} GPUs"
    for _, row in result.runnable[result.runnable["slower_than_fewer_gpus"]].iterrows():
        assert result.fewer_best_s is not None
        lines.append(
            f"warning: {row['plan']} ({seconds(float(row['per_video_s']))}) is slower than {fewer} "
            f"({seconds(result.fewer_best_s)})"
        )
    over = result.runnable[result.runnable["speedup"] > result.runnable["gpus"]]
    if not over.empty:
        lines.append(
            f"note: {len(over)} plan(s) gain more than their GPU count over one GPU: the one GPU moves "
            "weights between host and GPU that the plans do not (offload.model, which generate.py turns on "
            "for one GPU only; `report` under the same keys shows its offload seconds)"
        )
    if cfg.workload.batch_size > 1:
        n = cfg.workload.batch_size
        lines.append(f"{batch_note(n)}; videos/GPU·h and cost/video count all {n}")
    lines.extend(throughput_lines(result))
    for _, row in result.frame[~result.frame["runs"].astype(bool)].iterrows():
        lines.append(f"cannot run: {row['plan']}: {row['reason']}")
    return lines


def throughput_lines(result: PlanResult) -> list[str]:
    """The data-parallel split with the most videos per hour, beside one plan over every GPU."""
    reps, gpus = result.replicas, result.options.gpus
    if gpus == 1 or reps.empty:
        return []
    top = reps.iloc[0]
    whole = reps[reps["gpus_per_replica"] == gpus]
    split = (
        f"{int(top['replicas'])} replica{'s' if int(top['replicas']) > 1 else ''} of "
        f"{int(top['gpus_per_replica'])} GPU"
        + ("s" if int(top["gpus_per_replica"]) > 1 else "")
        + (f" ({top['plan']})" if int(top["gpus_per_replica"]) > 1 else "")
    )
    line = (
        f"most videos per hour on {gpus} GPUs: {split}, data parallel: "
        f"{float(top['videos_per_hour']):.1f} videos/h at {seconds(float(top['per_video_s']))} each"
    )
    if not whole.empty and int(top["gpus_per_replica"]) != gpus:
        w = whole.iloc[0]
        line += f"; the fastest plan over all {gpus}: {float(w['videos_per_hour']):.1f} videos/h"
    return [line]


def replicas_table(result: PlanResult) -> Table:
    """Data parallel: each split of the GPUs into replicas, most videos per hour first."""
    columns = (
        Column("GPUs per replica"),
        Column("replicas"),
        Column("plan of each", "left"),
        Column("per video"),
        Column("videos/h"),
    )
    rows = [
        (
            str(int(r["gpus_per_replica"])),
            str(int(r["replicas"])),
            str(r["plan"]),
            seconds(float(r["per_video_s"])),
            f"{float(r['videos_per_hour']):.1f}",
        )
        for _, r in result.replicas.iterrows()
    ]
    title = f"data parallel on {result.options.gpus} GPUs (the fastest plan that fits per replica)"
    return table(title, columns, rows)


def plan_markdown(result: PlanResult) -> str:
    t = plan_table(result)
    body = [f"# {t.title}", "", *to_markdown(t), "", *(f"- {line}" for line in plan_lines(result))]
    if result.options.gpus > 1 and not result.replicas.empty:
        r = replicas_table(result)
        body += ["", f"## {r.title}", "", *to_markdown(r)]
    return "\n".join(body) + "\n"
