"""``roofline.png``, ``time_breakdown.png`` and ``memory_timeline.png`` for a run with a device.

The roofline shows one point per layer of every timed stage (the 40 copies of
``blocks.*.ffn.0`` are one point: they sit on the same spot), at the FLOP/s its
predicted time implies, sized by its share of the predicted video; the top
layers by time and the memory-bound layers that carry time are numbered (each
its own label) and the legend names them; the ridge is labelled.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.tree import layer_pattern
from ditmeter.reports.format import binary_bytes

#: Layers numbered on the roofline (the legend names them), and memory-bound layers named besides.
LABELLED = 8
MEMORY_LABELLED = 3
_BOUND_COLOURS = {"compute": "#1f77b4", "memory": "#d62728"}


def _layers(modules: pd.DataFrame, runs: dict[str, int]) -> pd.DataFrame:
    """The leaves of every stage in ``runs`` (stage → runs per video) grouped across repeated
    blocks: FLOPs, bytes, predicted and measured time per run, and seconds per video."""
    repeated = list(modules.loc[modules["kind"] == "repeated", "module_id"])
    leaves = modules[
        (modules["kind"] == "leaf") & (modules["predicted_s"] > 0) & modules["stage"].isin(list(runs))
    ].copy()
    leaves["layer"] = [layer_pattern(m, repeated) for m in leaves["module_id"]]
    leaves["flops"] = leaves["tensor_flops"] + leaves["cuda_flops"]
    leaves["moved"] = leaves["bytes_read"] + leaves["bytes_written"]
    leaves["video_s"] = leaves["predicted_s"] * leaves["stage"].map(runs)
    leaves["compute_video_s"] = leaves["video_s"].where(leaves["bound"] == "compute", 0.0)
    leaves["measured"] = leaves["measured_time_s"].fillna(0.0)
    out = leaves.groupby(["stage", "layer"], sort=False).agg(
        count=("module_id", "size"),
        flops=("flops", "sum"),
        moved=("moved", "sum"),
        predicted_s=("predicted_s", "sum"),
        video_s=("video_s", "sum"),
        compute_video_s=("compute_video_s", "sum"),
        measured_s=("measured", "sum"),
    )
    out = out[(out["flops"] > 0) & (out["moved"] > 0)]
    out["intensity"] = out["flops"] / out["moved"]
    out["tflops"] = out["flops"] / out["predicted_s"] / 1e12
    out["measured_tflops"] = (out["flops"] / out["measured_s"] / 1e12).where(out["measured_s"] > 0)
    out["bound"] = np.where(2 * out["compute_video_s"] >= out["video_s"], "compute", "memory")
    return out.sort_values("video_s", ascending=False).reset_index()


def _save(fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    # one draw (bbox_inches="tight" would cost a second); zlib level 1: a third of level 6's encode
    # time for files about a fifth larger
    fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]


def _named(layers: pd.DataFrame) -> pd.DataFrame:
    """The layers the plot names: the top ones by time, plus the memory-bound ones that carry time."""
    top = layers.head(LABELLED)
    memory = layers[(layers["bound"] == "memory") & ~layers.index.isin(top.index)].head(MEMORY_LABELLED)
    return pd.concat([top, memory])


#: Where a number may sit around its point, tried in turn (degrees: up-right first).
_ANGLES = (45, 0, 90, 315, 135, 270, 180, 225)
#: A number's box (points): labels closer than this in both x and y would overlap.
_LABEL_W, _LABEL_H = 12.0, 11.0


def _number_layers(ax: Any, named: pd.DataFrame, total: float, sizes: pd.Series) -> list[str]:
    """One number per named layer, each its own label, just outside its marker (``sizes``: marker
    areas in points², by layer): the first free place around the point (up-right, right, up, …),
    a ring further out when all are taken, with a leader line beyond the first ring; never merged
    into a "4,5,6" label, never on top of another.

    Returns the legend lines naming them.
    """
    names = []
    placed: list[tuple[float, float]] = []  # label centres in display points
    scale = ax.figure.dpi / 72
    for i, r in enumerate(named.itertuples(), start=1):
        copies = f" ×{r.count}" if r.count > 1 else ""
        names.append(f"{i}. {r.layer}{copies} ({r.bound}): {100 * r.video_s / total:.2g}% of the video")
        px, py = ax.transData.transform((r.intensity, r.tflops)) / scale
        edge = 0.71 * float(np.sqrt(sizes[r.Index])) + 6  # half a square marker's diagonal, and a gap
        for ring in itertools.count():
            free = [
                (edge + _LABEL_H * ring) * np.array([np.cos(np.radians(a)), np.sin(np.radians(a))])
                for a in _ANGLES
            ]
            free = [d for d in free if all(_apart(px + d[0] - x, py + d[1] - y) for x, y in placed)]
            if free:
                dx, dy = (float(v) for v in free[0])
                break
        placed.append((px + dx, py + dy))
        ax.annotate(
            str(i),
            (r.intensity, r.tflops),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=8,
            fontweight="bold",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4"} if ring else None,
        )
    return names


def _apart(dx: float, dy: float) -> bool:
    return abs(dx) >= _LABEL_W or abs(dy) >= _LABEL_H


def roofline_png(
    modules: pd.DataFrame, stages: dict[str, tuple[int, str]], device: DeviceSpec, title: str, path: Path
) -> None:
    """The device's roofs and one point per layer of every timed stage (``stages``: stage → (runs per
    video, dtype)) at (FLOP/byte, attained TFLOP/s at the predicted time); marker by stage, size by
    share of the video; a profiled run's measured points beside them (hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullLocator

    layers = _layers(modules, {s: runs for s, (runs, _) in stages.items()})
    total = float(layers["video_s"].sum())
    bw = device.bytes_per_s / 1e12  # TB/s: TFLOP/s per FLOP/byte
    by_peak: dict[float, list[str]] = {}  # dtypes sharing a peak share one roof line
    for dtype in dict.fromkeys(d for _, d in stages.values()):
        if dtype == "fp32":  # fp32 matmuls are on the CUDA-core roof; fp32 convs on TF32
            by_peak.setdefault(device.conv_flop_per_s("fp32") / 1e12, []).append("TF32 (fp32 convs)")
        else:
            by_peak.setdefault(device.tensor_flop_per_s(dtype) / 1e12, []).append(f"{dtype} tensor")
    roofs = {"/".join(names): peak for peak, names in by_peak.items()}
    cuda = device.cuda_flop_per_s / 1e12
    top = max(roofs.values())
    lo = min(0.05, float(layers["intensity"].min()) / 2)
    hi = max(2 * top / bw, float(layers["intensity"].max()) * 2)
    x = np.logspace(np.log10(lo), np.log10(hi), 200)

    fig, ax = plt.subplots(figsize=(10, 6.5))
    _margins(fig, left=0.9, right=0.15, top=0.55, bottom=0.55)  # short numeric ticks, a two-line title
    for (name, peak), ls in zip(sorted(roofs.items(), key=lambda kv: -kv[1]), ("-", "-.", ":"), strict=False):
        ax.plot(
            x,
            np.minimum(peak, bw * x),
            color="black",
            lw=1.4,
            ls=ls,
            label=f"{name} roof {peak:,.0f} TFLOP/s",
        )
    ax.plot(
        x,
        np.minimum(cuda, bw * x),
        color="grey",
        lw=1.2,
        ls="--",
        label=f"fp32 CUDA-core roof {cuda:,.1f} TFLOP/s",
    )
    ridge = top / bw
    ax.axvline(ridge, color="black", lw=0.6, ls=":")
    ax.annotate(
        f"ridge {ridge:,.0f} FLOP/B: memory-bound left of it",
        (ridge, 0.02),
        xycoords=("data", "axes fraction"),
        xytext=(4, 0),
        textcoords="offset points",
        rotation=90,
        fontsize=8,
        va="bottom",
    )
    sizes = 30 + 1500 * layers["video_s"] / total
    markers = dict(zip(stages, ("o", "s", "^", "D", "v"), strict=False))
    for stage, marker in markers.items():
        for bound, colour in _BOUND_COLOURS.items():
            sel = (layers["stage"] == stage) & (layers["bound"] == bound)
            if sel.any():
                ax.scatter(
                    layers.loc[sel, "intensity"],
                    layers.loc[sel, "tflops"],
                    s=sizes[sel],
                    c=colour,
                    marker=marker,
                    alpha=0.55,
                    edgecolors="black",
                    linewidths=0.5,
                    label=f"{stage}: {bound}-bound",
                )
    measured = layers[layers["measured_tflops"].notna()]
    if len(measured):
        ax.scatter(
            measured["intensity"],
            measured["measured_tflops"],
            s=40,
            facecolors="none",
            edgecolors="#2ca02c",
            linewidths=1.2,
            label="measured (profile)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    names = _number_layers(ax, _named(layers), total, sizes)
    for axis in (ax.xaxis, ax.yaxis):  # plain labels: mathtext "10^k" labels are slow to lay out
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(NullLocator())  # minor log ticks: most of the drawing time
    ax.set_xlabel("arithmetic intensity (FLOP / byte, fused-ideal bytes)")
    ax.set_ylabel("attained TFLOP/s at the predicted time")
    # y=1: no tick labels on top to clear, and placing the title past them cost a tenth of the plot
    ax.set_title(f"{title}\nsize = share of the predicted video (every stage)", fontsize=10, y=1)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    first = ax.legend(loc="lower right", fontsize=7)
    ax.add_artist(first)
    handles = [Line2D([], [], ls="none") for _ in names]
    ax.legend(
        handles,
        names,
        loc="upper left",
        fontsize=7,
        title="layers named (top by time, then memory-bound)",
        title_fontsize=7,
        handlelength=0,
        frameon=True,
    )
    _save(fig, path)


def _margins(fig: Any, *, left: float, right: float, top: float, bottom: float, gap: float = 0.0) -> None:
    """Fixed margins around ``fig``'s axes (inches; ``gap`` between stacked panels) in place of the
    tight layout, which measured every text of the figure and was half of each plot's time: the
    labels outside the axes are few and known (short tick numbers, one label per axis, the
    category, stage and component names measured by :func:`_text_width_in`)."""
    width, height = fig.get_size_inches()
    rows = fig.axes[0].get_subplotspec().get_gridspec().nrows
    panel = (height - top - bottom - gap * (rows - 1)) / rows  # the panels' mean height
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=gap / panel,
    )


def _text_width_in(fig: Any, texts: list[str], size: float) -> float:
    """The widest of ``texts`` at font ``size`` on ``fig``'s renderer, in inches."""
    from matplotlib.font_manager import FontProperties

    renderer, font = fig.canvas.get_renderer(), FontProperties(size=size)
    widths = [float(renderer.get_text_width_height_descent(t, font, ismath=False)[0]) for t in texts]
    return max(widths, default=0.0) / float(fig.dpi)


def time_breakdown_png(
    by_category: pd.DataFrame,
    device: DeviceSpec,
    title: str,
    path: Path,
    run: str = "DiT forward",
    by_stage: dict[str, float] | None = None,
) -> None:
    """Predicted time per ``run`` (the DiT's forward, or the run of the stage shown when the DiT is
    not selected) by category: compute and memory terms side by side; with ``by_stage`` a second
    panel: seconds per video by stage, the ``offload`` phase (weights moved between host and GPU)
    included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = by_category.sort_values("predicted_s")
    total = float(cats["predicted_s"].sum())
    scale, unit = (1.0, "s") if total >= 1 else (1e3, "ms")
    y = np.arange(len(cats))
    stages = by_stage or {}
    rows = len(cats) + (len(stages) + 2 if stages else 0)
    fig, axes = plt.subplots(
        2 if stages else 1,
        1,
        figsize=(9, 0.55 * rows + 2.2),
        height_ratios=[len(cats), len(stages) + 1] if stages else None,
        squeeze=False,
    )
    names = [str(c) for c in cats["category"]] + list(stages)
    _margins(fig, left=_text_width_in(fig, names, 10) + 0.25, right=0.2, top=0.4, bottom=0.6, gap=0.75)
    ax = axes[0][0]
    if stages:
        _stage_panel(axes[1][0], stages)
    ax.barh(
        y, cats["predicted_s"] * scale, color="#9ecae1", edgecolor="black", lw=0.5, label="predicted (max)"
    )
    ax.barh(
        y + 0.28,
        cats["compute_s"] * scale,
        height=0.18,
        color=_BOUND_COLOURS["compute"],
        label="compute term",
    )
    ax.barh(
        y - 0.28, cats["memory_s"] * scale, height=0.18, color=_BOUND_COLOURS["memory"], label="memory term"
    )
    for yi, v in zip(y, cats["predicted_s"], strict=True):
        ax.text(v * scale, float(yi), f"  {100 * v / total:.1f}%", va="center", fontsize=9)
    ax.set_yticks(y, cats["category"])
    ax.set_xlabel(f"predicted time per {run} ({unit}) on {device.display_name}")
    ax.set_title(title, fontsize=11, y=1)
    ax.set_xlim(0, float(cats["predicted_s"].max()) * scale * 1.18)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="x", lw=0.3, alpha=0.5)
    _save(fig, path)


def _stage_panel(ax: Any, by_stage: dict[str, float]) -> None:
    """Seconds per video by stage (the offload phase hatched), each with its share."""
    names = list(by_stage)[::-1]
    values = [by_stage[n] for n in names]
    total = sum(values) or 1.0
    colours = ["#fdae6b" if n == "offload" else "#c7e9c0" for n in names]
    bars = ax.barh(names, values, color=colours, edgecolor="black", lw=0.5)
    for bar, n, v in zip(bars, names, values, strict=True):
        if n == "offload":
            bar.set_hatch("//")
        ax.text(
            v,
            bar.get_y() + bar.get_height() / 2,
            f"  {v:,.1f} s ({100 * v / total:.1f}%)",
            va="center",
            fontsize=9,
        )
    ax.set_xlabel("predicted seconds per video by stage (offload: weights moved between host and GPU)")
    ax.set_xlim(0, max(values) * 1.3 if values else 1)
    ax.grid(True, axis="x", lw=0.3, alpha=0.5)


def memory_timeline_png(analysis: Analysis, device: DeviceSpec | None, path: Path) -> None:
    """Stacked weights by component and activations per stage, the capacity as a line (GiB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = analysis.memory
    stages = [p.stage for p in t.phases]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    bottom = [0.0] * len(stages)
    for comp in t.components:
        values = [p.resident.get(comp, 0) / 2**30 for p in t.phases]
        ax.bar(stages, values, bottom=bottom, label=f"{comp} weights")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    acts = [(p.activation_bytes or 0) / 2**30 for p in t.phases]
    ax.bar(stages, acts, bottom=bottom, label="activations (peak of one run)", hatch="//", color="#bbbbbb")
    if device is not None:
        ax.axhline(device.memory_bytes / 2**30, color="k", linestyle="--", label=f"{device.display_name}")
    ax.set_ylabel("GiB on one GPU")
    ax.set_title(
        f"{analysis.model.name}: peak {binary_bytes(t.peak_per_gpu_bytes)} at {t.peak_phase.stage}", y=1
    )
    legend = ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    wide = legend.get_window_extent().width / fig.dpi
    _margins(fig, left=0.75, right=wide + 0.25, top=0.4, bottom=0.45)
    _save(fig, path)


#: One look per strategy (marker, line style, marker size): lines that coincide (Ulysses and Ring
#: where both cost the same) stay visible, a dashed line over a solid one, hollow markers nested.
_LOOKS: tuple[tuple[str, Any, float], ...] = (
    ("o", "-", 9.0),
    ("s", "--", 6.5),
    ("^", ":", 5.0),
    ("D", "-.", 4.0),
    ("v", (0, (5, 1, 1, 1)), 7.0),
    ("P", (0, (1, 2)), 5.5),
)


def scaling_png(scaling: pd.DataFrame, device: DeviceSpec, title: str, path: Path) -> None:
    """Seconds per video and peak memory per GPU against the GPU count, one line per strategy,
    the device's capacity as a line; ideal scaling (1 GPU's time / n) dotted."""
    gpus_png(scaling, device.display_name, device.memory_bytes, title, path)


def gpus_png(scaling: pd.DataFrame, device: str, capacity_bytes: int, title: str, path: Path) -> None:
    """:func:`scaling_png` of a frame with ``strategy``, ``gpus``, ``per_video_s`` and
    ``peak_per_gpu_bytes`` on the device named ``device`` holding ``capacity_bytes``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, mem_ax) = plt.subplots(1, 2, figsize=(11, 4.2), layout="tight")
    for i, (name, rows) in enumerate(scaling.groupby("strategy", sort=False)):
        rows = rows.sort_values("gpus")
        marker, ls, size = _LOOKS[i % len(_LOOKS)]
        look = {
            "marker": marker,
            "ls": ls,
            "ms": size,
            "mfc": "none",
            "color": f"C{i % 10}",
            "label": str(name),
        }
        time_ax.plot(rows["gpus"], rows["per_video_s"], **look)
        mem_ax.plot(rows["gpus"], rows["peak_per_gpu_bytes"] / 2**30, **look)
    one = scaling.loc[scaling["gpus"] == 1, "per_video_s"]
    gpus = sorted(scaling["gpus"].unique())
    if len(one):
        time_ax.plot(gpus, [float(one.iloc[0]) / n for n in gpus], "k:", lw=0.8, label="ideal (1 GPU / n)")
    for ax in (time_ax, mem_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(gpus, [str(n) for n in gpus])
        ax.set_xlabel("GPUs")
    time_ax.set_yscale("log")
    time_ax.set_ylabel(f"seconds per video ({device})")
    mem_ax.axhline(capacity_bytes / 2**30, color="k", linestyle="--", label=f"{device} memory")
    mem_ax.set_ylabel("peak GiB per GPU")
    time_ax.legend(fontsize=8)
    mem_ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
