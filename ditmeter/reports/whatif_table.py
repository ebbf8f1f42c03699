"""``ditmeter whatif``'s table: its Parquet schema and metadata, the table (terminal and ``whatif.md``),
the lines under it and the stacked bar chart ``whatif.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from ditmeter.reports.format import binary_bytes, seconds
from ditmeter.reports.table_model import Column, Table, table, to_markdown
from ditmeter.reports.tables import CONVENTION, library_versions

if TYPE_CHECKING:
    from ditmeter.commands.whatif_result import WhatifResult

#: Said under every what-if table: what the tool does not predict.
QUALITY = (
    "Quality is not modelled: each method's effect on the video (caching, few steps, FP8, sparse "
    "attention) is for its authors' evaluations; these are times and memory only."
)
#: The parts of a video's time the chart stacks, with their labels and colours.
PARTS = (
    ("dit_compute_bound_s", "DiT compute-bound", "#6baed6"),
    ("dit_memory_bound_s", "DiT memory-bound", "#fd8d3c"),
    ("dit_launch_bound_s", "DiT launch-bound", "#bdbdbd"),
    ("comm_exposed_s", "exposed communication", "#de2d26"),
    ("other_stages_s", "other stages", "#74c476"),
    ("offload_s", "offload transfers", "#9e9ac8"),
)


def whatif_schema() -> pa.Schema:
    """One row per what-if; times null where it cannot run (``reason`` says why)."""
    f = pa.field
    return pa.schema(
        [
            f("whatif", pa.string()),  # baseline, a method's name, "all together" or "all together but …"
            f("overrides", pa.string()),  # the config overrides that turn it on
            f("runs", pa.bool_()),
            f("reason", pa.string()),  # why it cannot run on this device or model
            f("per_video_s", pa.float64()),
            f("speedup", pa.float64()),  # baseline per_video_s / this row's
            f("dit_s", pa.float64()),  # the denoiser's seconds per video
            f("dit_compute_bound_s", pa.float64()),  # of dit_s: kernels limited by compute
            f("dit_memory_bound_s", pa.float64()),  # by memory traffic
            f("dit_launch_bound_s", pa.float64()),  # by the host's kernel launches
            f("comm_exposed_s", pa.float64()),  # a plan's collectives nothing hides (0 on one GPU)
            f("other_stages_s", pa.float64()),  # text encoder, image encoder, VAE
            f("offload_s", pa.float64()),  # weights moved between host and GPU
            f("steps", pa.int64()),
            f("forwards_per_video", pa.int64()),
            f("forwards_computed", pa.int64()),  # that run the transformer blocks (step caching)
            f("peak_per_gpu_bytes", pa.int64()),
            f("fits", pa.bool_()),
        ]
    )


def whatif_metadata(result: WhatifResult) -> dict[str, str]:
    cfg = result.cfg
    assert cfg.device is not None
    return {
        "ditmeter.table": "whatif",
        "ditmeter.model": cfg.model.name,
        "ditmeter.workload": cfg.workload.name,
        "ditmeter.device": cfg.device.name,
        "ditmeter.pipeline": cfg.workload.pipeline,
        "ditmeter.plan": cfg.parallel.name,
        "ditmeter.overrides": json.dumps(list(result.overrides)),
        "ditmeter.quality": QUALITY,
        "ditmeter.versions": json.dumps(library_versions()),
        "ditmeter.convention": CONVENTION,
    }


def whatif_table(result: WhatifResult) -> Table:
    """The rows that run, in the order asked (the baseline first); under a plan one GPU's, with the
    seconds of communication nothing hides (the DiT's, the steps' and the video's collectives)."""
    cfg = result.cfg
    plan = not cfg.parallel.single
    columns = [
        Column("what-if", "left"),
        *(Column(n) for n in ("per video", "speedup", "DiT", "of it compute", "memory", "launch")),
        *([Column("comm exposed")] if plan else []),
        Column("other stages"),
        Column("forwards run"),
        Column("peak", "right"),
        Column("fits", "left"),
    ]
    rows = []
    for _, r in result.frame[result.frame["runs"].astype(bool)].iterrows():
        dit = float(r["dit_s"]) or 1.0
        rows.append(
            (
                str(r["whatif"]),
                seconds(float(r["per_video_s"])),
                f"{r['speedup']:.2f}×",
                seconds(float(r["dit_s"])),
                f"{100 * r['dit_compute_bound_s'] / dit:.0f}%",
                f"{100 * r['dit_memory_bound_s'] / dit:.0f}%",
                f"{100 * r['dit_launch_bound_s'] / dit:.0f}%",
                *([seconds(float(r["comm_exposed_s"]))] if plan else []),
                seconds(float(r["other_stages_s"]) + float(r["offload_s"])),
                f"{int(r['forwards_computed'])}/{int(r['forwards_per_video'])}",
                binary_bytes(int(r["peak_per_gpu_bytes"])),
                "yes" if r["fits"] else "NO",
            )
        )
    assert cfg.device is not None
    where = f"one {cfg.device.name}"
    if plan:
        where = f"one GPU of {cfg.parallel.gpus} × {cfg.device.name} ({cfg.parallel.name.partition(': ')[2]})"
    title = (
        f"what-ifs on {where}, {cfg.model.name} × {cfg.workload.name}, "
        f"pipeline={cfg.workload.pipeline} (predicted seconds per video)"
    )
    return table(title, columns, rows)


def whatif_lines(result: WhatifResult) -> list[str]:
    """The fastest row (and the fastest that fits, where that is another), the rows that cannot run
    with the reason, and the quality disclaimer."""
    runs = result.frame[result.frame["runs"].astype(bool)]
    best = runs.loc[runs["per_video_s"].idxmin()]
    lines = [f"fastest: {best['whatif']}, {seconds(float(best['per_video_s']))} ({best['speedup']:.2f}×)"]
    fitting = runs[runs["fits"].astype(bool)]
    if not bool(best["fits"]):
        if fitting.empty:
            lines.append("fastest that fits: none")
        else:
            fit = fitting.loc[fitting["per_video_s"].idxmin()]
            took = seconds(float(fit["per_video_s"]))
            lines.append(f"fastest that fits: {fit['whatif']}, {took} ({fit['speedup']:.2f}×)")
    for _, r in result.frame[~result.frame["runs"].astype(bool)].iterrows():
        lines.append(f"cannot run: {r['whatif']}: {r['reason']}")
    return [*lines, *result.replaced, *(f"rounded: {r}" for r in result.rounded), QUALITY]


def whatif_markdown(result: WhatifResult) -> str:
    t = whatif_table(result)
    overrides = "\n".join(
        f"- {r['whatif']}: `{r['overrides'] or '(none)'}`" for _, r in result.frame.iterrows()
    )
    body = [
        f"# {t.title}",
        "",
        *to_markdown(t),
        "",
        *(f"- {line}" for line in whatif_lines(result)),
        "",
        "## What each row sets",
        "",
        overrides,
    ]
    return "\n".join(body) + "\n"


def whatif_png(result: WhatifResult, path: Path) -> None:
    """Seconds per video of each row that runs, stacked by where the time goes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ditmeter.reports.plots import _save

    runs = result.frame[result.frame["runs"].astype(bool)].iloc[::-1]
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(runs) + 2.0), layout="tight")
    left = [0.0] * len(runs)
    labels = [str(w) for w in runs["whatif"]]
    for column, label, colour in PARTS:
        values = [float(v) for v in runs[column]]
        ax.barh(labels, values, left=left, color=colour, edgecolor="black", lw=0.4, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, (total, speedup) in enumerate(zip(runs["per_video_s"], runs["speedup"], strict=True)):
        ax.text(
            float(total), y, f"  {seconds(float(total))} ({float(speedup):.2f}×)", va="center", fontsize=8
        )
    cfg = result.cfg
    assert cfg.device is not None
    on = f"one GPU of {cfg.parallel.gpus} × " if not cfg.parallel.single else ""
    ax.set_xlabel(f"predicted seconds per video on {on}{cfg.device.display_name} (quality not modelled)")
    if not cfg.parallel.single:
        ax.set_title(f"{cfg.model.name} × {cfg.workload.name} on {cfg.parallel.name}: what-ifs", fontsize=11)
    else:
        ax.set_title(f"{cfg.model.name} × {cfg.workload.name}: what-ifs", fontsize=11)
    ax.set_xlim(0, max(left) * 1.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # clear of the labels
    ax.grid(True, axis="x", lw=0.3, alpha=0.5)
    _save(fig, path)
