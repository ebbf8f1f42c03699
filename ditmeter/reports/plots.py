"""``roofline.png``, ``time_breakdown.png`` and ``memory_timeline.png`` for a run with a device.

The roofline shows one point per layer (the 40 copies of ``blocks.*.ffn.0``
are one point: they sit on the same spot), sized by its share of the predicted
forward time; the top layers by time are numbered, and the legend names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.tree import layer_pattern
from ditmeter.reports.format import binary_bytes

#: Layers numbered on the roofline (the legend names them).
LABELLED = 8
_BOUND_COLOURS = {"compute": "#1f77b4", "memory": "#d62728"}


def _layers(modules: pd.DataFrame, stage: str) -> pd.DataFrame:
    """``stage``'s leaves grouped across repeated blocks: FLOPs, bytes and predicted time per run."""
    repeated = list(modules.loc[modules["kind"] == "repeated", "module_id"])
    own = modules["stage"] == stage
    leaves = modules[(modules["kind"] == "leaf") & (modules["predicted_s"] > 0) & own].copy()
    leaves["layer"] = [layer_pattern(m, repeated) for m in leaves["module_id"]]
    leaves["flops"] = leaves["tensor_flops"] + leaves["cuda_flops"]
    leaves["moved"] = leaves["bytes_read"] + leaves["bytes_written"]
    out = leaves.groupby("layer").agg(
        count=("module_id", "size"),
        flops=("flops", "sum"),
        moved=("moved", "sum"),
        predicted_s=("predicted_s", "sum"),
        memory_s=("memory_s", "sum"),
        compute_s=("compute_s", "sum"),
    )
    out = out[(out["flops"] > 0) & (out["moved"] > 0)]
    out["intensity"] = out["flops"] / out["moved"]
    out["tflops"] = out["flops"] / out["predicted_s"] / 1e12
    out["bound"] = np.where(out["compute_s"] >= out["memory_s"], "compute", "memory")
    return out.sort_values("predicted_s", ascending=False).reset_index()


def _save(fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    # the figure's "tight" layout engine: one draw (bbox_inches="tight" would cost a second)
    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]


def _number_top_layers(ax: Any, layers: pd.DataFrame, total: float) -> list[str]:
    """Number the top layers by time on the plot (one label per spot where points coincide).

    Returns the legend lines naming them.
    """
    names = []
    spots: list[tuple[float, float, list[str]]] = []
    for i, r in enumerate(layers.head(LABELLED).itertuples(), start=1):
        copies = f" ×{r.count}" if r.count > 1 else ""
        names.append(f"{i}. {r.layer}{copies}: {100 * r.predicted_s / total:.1f}% of time")
        near = [
            s
            for s in spots
            if abs(np.log10(s[0] / r.intensity)) < 0.08 and abs(np.log10(s[1] / r.tflops)) < 0.08
        ]
        if near:
            near[0][2].append(str(i))
        else:
            spots.append((r.intensity, r.tflops, [str(i)]))
    for k, (xi, yi, numbers) in enumerate(spots):
        ax.annotate(
            ",".join(numbers),
            (xi, yi),
            xytext=(6, 8 if k % 2 == 0 else -14),  # alternate above and below neighbours
            textcoords="offset points",
            fontsize=9,
            fontweight="bold",
        )
    return names


def roofline_png(
    modules: pd.DataFrame, stage: str, device: DeviceSpec, dtype: str, title: str, path: Path
) -> None:
    """The device's roofs and one point per layer of ``stage`` at (FLOP/byte, attained TFLOP/s at
    the roofline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullLocator

    layers = _layers(modules, stage)
    total = float(modules.loc[modules["module_id"] == stage, "predicted_s"].iloc[0])
    tensor = device.tensor_flop_per_s(dtype) / 1e12
    cuda = device.cuda_flop_per_s / 1e12
    bw = device.bytes_per_s / 1e12  # TB/s: TFLOP/s per FLOP/byte
    lo = min(0.05, float(layers["intensity"].min()) / 2)
    hi = max(2 * tensor / bw, float(layers["intensity"].max()) * 2)
    x = np.logspace(np.log10(lo), np.log10(hi), 200)

    fig, ax = plt.subplots(figsize=(9.5, 6), layout="tight")
    ax.plot(
        x,
        np.minimum(tensor, bw * x),
        color="black",
        lw=1.6,
        label=f"{dtype} tensor roof {tensor:,.0f} TFLOP/s",
    )
    ax.plot(
        x,
        np.minimum(cuda, bw * x),
        color="grey",
        lw=1.2,
        ls="--",
        label=f"fp32 CUDA-core roof {cuda:,.1f} TFLOP/s",
    )
    ax.axvline(tensor / bw, color="black", lw=0.6, ls=":")
    sizes = 30 + 1500 * layers["predicted_s"] / total
    for bound, colour in _BOUND_COLOURS.items():
        sel = layers["bound"] == bound
        ax.scatter(
            layers.loc[sel, "intensity"],
            layers.loc[sel, "tflops"],
            s=sizes[sel],
            c=colour,
            alpha=0.55,
            edgecolors="black",
            linewidths=0.5,
            label=f"{bound}-bound layer (size = time share)",
        )
    names = _number_top_layers(ax, layers, total)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain labels: mathtext "10^k" labels are slow to lay out
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(NullLocator())  # minor log ticks: most of the drawing time
    ax.set_xlabel("arithmetic intensity (FLOP / byte, fused-ideal bytes)")
    ax.set_ylabel("attained at the roofline (TFLOP/s)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    first = ax.legend(loc="lower right", fontsize=8)
    ax.add_artist(first)
    handles = [Line2D([], [], ls="none") for _ in names]
    ax.legend(
        handles,
        names,
        loc="upper left",
        fontsize=8,
        title="top layers by predicted time",
        title_fontsize=8,
        handlelength=0,
        frameon=True,
    )
    _save(fig, path)


def time_breakdown_png(by_category: pd.DataFrame, device: DeviceSpec, title: str, path: Path) -> None:
    """Predicted time per forward by category: compute and memory terms side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = by_category.sort_values("predicted_s")
    total = float(cats["predicted_s"].sum())
    scale, unit = (1.0, "s") if total >= 1 else (1e3, "ms")
    y = np.arange(len(cats))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(cats) + 1.8), layout="tight")
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
    ax.set_xlabel(f"predicted time per DiT forward ({unit}) on {device.display_name}")
    ax.set_title(title, fontsize=11)
    ax.set_xlim(0, float(cats["predicted_s"].max()) * scale * 1.18)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="x", lw=0.3, alpha=0.5)
    _save(fig, path)


def memory_timeline_png(analysis: Analysis, device: DeviceSpec | None, path: Path) -> None:
    """Stacked weights by component and activations per stage, the capacity as a line (GiB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = analysis.memory
    stages = [p.stage for p in t.phases]
    fig, ax = plt.subplots(figsize=(10, 4.5), layout="tight")
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
    ax.set_title(f"{analysis.model.name}: peak {binary_bytes(t.peak_per_gpu_bytes)} at {t.peak_phase.stage}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save(fig, path)
