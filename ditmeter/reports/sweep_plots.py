"""``time_vs_frames.png``, ``time_vs_resolution.png``, ``category_share.png`` and, over plans
on several GPU counts, ``time_vs_gpus.png`` of a sweep.

The two time plots draw the predicted seconds per video of one line per device × model × resolution
(or × frame count) against the frame count (or the pixels of a frame): colour names the device, the
line style the model, the marker the third key. Swept keys a plot does not draw (``time.mode``,
``device.efficiency``…) are held at their first value, said in the title. A plot whose x does not
vary in the sweep shows every point's time instead, each point named by its swept values, so a
sweep of any shape gets three plots. ``time_vs_gpus.png`` draws the time and the peak memory per GPU
of each plan family (Ulysses, Ring, their FSDP flags) against the GPU count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ditmeter.reports.sweep_table import as_written

PLOTS = ("time_vs_frames.png", "time_vs_resolution.png", "category_share.png")
#: Columns that identify a point's model, workload and device (always in a sweep's table).
_DRAWN = ("device", "model", "workload", "workload.num_frames", "workload.height", "workload.width")
_STYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)))
#: Values of the third key drawn at most (first, middle, last when there are more).
_THIRD = 4
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
#: Points named on the x axis of a plot of every point at the most (every n-th beyond).
_NAMED_POINTS = 40
#: A plan's degrees and flags (``parallel.*``), as its family is named.
_DEGREES = {"parallel.ulysses": "Ulysses", "parallel.ring": "Ring", "parallel.cfg": "CFG"}
_FLAGS = {"parallel.dit_fsdp": "DiT FSDP", "parallel.t5_fsdp": "T5 FSDP"}
GPUS_PLOT = "time_vs_gpus.png"


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)


def _held(frame: pd.DataFrame, axis_keys: Sequence[str], drawn: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """The points with every swept key a plot does not draw at its first value, and a note saying so."""
    held = [k for k in axis_keys if k not in drawn and k in frame and frame[k].nunique() > 1]
    sub = frame
    for key in held:
        sub = sub[sub[key] == sub[key].iloc[0]]
    note = ", ".join(f"{k}={sub[k].iloc[0]}" for k in held)
    return sub, (f" (at {note})" if note else "")


def _legends(ax: Any, styles: dict[str, dict[Any, Any]], titles: Sequence[str]) -> None:
    """One small legend per key (colours, line styles, markers), stacked in the side axes ``ax``."""
    from matplotlib.lines import Line2D

    ax.set_axis_off()
    y = 1.0
    for (prop, values), title in zip(styles.items(), titles, strict=True):
        base = {"color": "0.3", "lw": 2.0 if prop == "color" else 1.2}
        handles = [Line2D([], [], **{**base, prop: v}) for v in values.values()]
        labels = [str(k) for k in values]
        legend = ax.legend(
            handles, labels, title=title, loc="upper left", bbox_to_anchor=(0.0, y), fontsize=7,
            title_fontsize=7, frameon=False, alignment="left",
        )  # fmt: skip
        ax.add_artist(legend)
        y -= 0.06 + 0.035 * len(values)


def point_labels(frame: pd.DataFrame, axis_keys: Sequence[str]) -> list[str]:
    """Each point's swept values that vary, ``ulysses=2 dit_fsdp=true`` (the key's last part)."""
    varying = [k for k in axis_keys if k in frame and frame[k].nunique() > 1]
    return [
        " ".join(f"{k.rsplit('.', 1)[-1]}={as_written(v)}" for k, v in zip(varying, values, strict=True))
        for values in frame[varying].itertuples(index=False)
    ]


def _by_point(ax: Any, frame: pd.DataFrame, axis_keys: Sequence[str]) -> None:
    """Every point's predicted time per video, by device, each point named by its swept values: what
    a sweep without the x axis shows."""
    for i, (device, rows) in enumerate(frame.groupby("device", sort=False)):
        ax.scatter(rows.index, rows["per_video_s"], s=14, color=f"C{i % 10}", label=str(device))
    step = max(1, -(-len(frame) // _NAMED_POINTS))  # at most _NAMED_POINTS names
    ax.set_xticks(frame.index[::step], point_labels(frame, axis_keys)[::step], rotation=30, ha="right")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("point of the sweep (its swept values)")
    ax.legend(fontsize=7, loc="best")


def time_png(
    frame: pd.DataFrame, axis_keys: Sequence[str], x: str, third: str, xlabel: str, path: Path
) -> None:
    """Seconds per video against ``x``, one line per device × model × ``third``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = frame.assign(
        resolution=frame["height"].astype(str) + "×" + frame["width"].astype(str),
        megapixels=frame["height"] * frame["width"] / 1e6,
    )
    sub, note = _held(data, axis_keys, _DRAWN)
    thirds = sorted(sub[third].unique())
    if len(thirds) > _THIRD:  # a readable plot: the smallest, a middle and the largest
        kept = [thirds[0], thirds[len(thirds) // 2], thirds[-1]]
        sub = sub[sub[third].isin(kept)]
        note += f" ({third.replace('num_', '')} {', '.join(map(str, kept))} of {len(thirds)})"
    fig, (ax, side) = plt.subplots(1, 2, figsize=(12, 6), width_ratios=(5, 1), layout="tight")
    if sub[x].nunique() < 2:
        fig.delaxes(side)
        _by_point(ax, data, axis_keys)
        ax.set_title(f"predicted time per video of every point ({xlabel} not swept)", fontsize=10)
    else:
        styles: dict[str, dict[Any, Any]] = {"color": {}, "linestyle": {}, "marker": {}}
        for (device, model, key), rows in sub.groupby(["device", "model", third], sort=False):
            # two points of a line at one x differ only in their preset (two of one size): the median
            line = rows.groupby(x, sort=True)["per_video_s"].median()
            colour = styles["color"].setdefault(device, f"C{len(styles['color']) % 10}")
            ls = styles["linestyle"].setdefault(model, _STYLES[len(styles["linestyle"]) % len(_STYLES)])
            marker = styles["marker"].setdefault(key, _MARKERS[len(styles["marker"]) % len(_MARKERS)])
            ax.plot(line.index, line.values, color=colour, linestyle=ls, marker=marker, ms=4, lw=1.2)
        _legends(side, styles, ("device", "model", third.replace("num_frames", "frames")))
        ax.set_xlabel(xlabel)
        ax.set_title(f"predicted time per video vs {xlabel}{note}", fontsize=10)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per video (predicted)")
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    _save(fig, path)


def share_png(frame: pd.DataFrame, path: Path) -> None:
    """The denoiser's forward time by category, stacked, one bar per device (mean over its points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in frame.columns if c.startswith("share_")]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.8 * frame["device"].nunique()), 5.5), layout="tight")
    if not columns or frame.empty:
        ax.text(0.5, 0.5, "no forward stage categories in this sweep", ha="center", va="center")
        ax.set_axis_off()
    else:
        shares = frame.groupby("device", sort=False)[columns].mean()
        bottom = pd.Series(0.0, index=shares.index)
        for i, column in enumerate(columns):
            ax.bar(shares.index, shares[column], bottom=bottom, color=f"C{i % 10}", label=column[6:])
            bottom += shares[column]
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of the DiT forward's predicted time")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        points = len(frame) // max(1, len(shares))
        ax.set_title(f"DiT forward time by category (mean over {points:,} points per device)", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    _save(fig, path)


def plan_families(frame: pd.DataFrame) -> pd.DataFrame:
    """The points by plan family (its degrees and flags: ``Ulysses + DiT FSDP + T5 FSDP``):
    ``strategy``, ``gpus``, ``per_video_s`` and ``peak_per_gpu_bytes``, the one-GPU point first
    in every family (a family's line starts where one GPU is)."""
    named = []
    for _, row in frame.iterrows():
        degrees = [name for key, name in _DEGREES.items() if key in frame and int(row[key]) > 1]
        flags = [name for key, name in _FLAGS.items() if key in frame and as_written(row[key]) == "true"]
        # a gpus= axis: each point's fastest plan (its ``plan`` column), one line
        alone = "one GPU" if int(row["gpus"]) == 1 else "fastest plan (gpus=)"
        named.append(" + ".join([" × ".join(degrees) or alone, *flags]))
    points = frame.assign(strategy=named)[["strategy", "gpus", "per_video_s", "peak_per_gpu_bytes"]]
    one = points[points["gpus"] == 1].head(1)
    many = points[points["gpus"] > 1]
    parts = [
        pd.concat([one.assign(strategy=name), rows]) for name, rows in many.groupby("strategy", sort=False)
    ]
    return pd.concat(parts, ignore_index=True) if parts else many


def plans_png(frame: pd.DataFrame, axis_keys: Sequence[str], path: Path) -> None:
    """Seconds per video and peak memory per GPU against the GPU count, one line per plan family
    (:func:`plan_families`); swept keys other than ``parallel.*`` held at their first value."""
    from ditmeter.reports.plots import gpus_png

    sub, note = _held(frame, axis_keys, [k for k in axis_keys if k.startswith("parallel.") or k == "gpus"])
    first = sub.iloc[0]
    title = f"{first['model']} × {first['workload']}: per GPU by plan family{note}"
    gpus_png(plan_families(sub), str(first["device"]), int(first["device_memory_bytes"]), title, path)


def write_plots(frame: pd.DataFrame, axis_keys: Sequence[str], folder: Path) -> tuple[str, ...]:
    """The three plots of a sweep's table into ``folder``, and with plans on several GPU counts
    :data:`GPUS_PLOT`; their file names."""
    time_png(frame, axis_keys, "num_frames", "resolution", "frames", folder / PLOTS[0])
    time_png(
        frame,
        axis_keys,
        "megapixels",
        "num_frames",
        "megapixels per frame (height × width)",
        folder / PLOTS[1],
    )
    share_png(frame, folder / PLOTS[2])
    if frame["gpus"].nunique() > 1:
        plans_png(frame, axis_keys, folder / GPUS_PLOT)
        return (*PLOTS, GPUS_PLOT)
    return PLOTS
