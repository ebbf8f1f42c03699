"""What the run plots draw and label: read back from the figures themselves."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ditmeter.reports import ingest_report, plots


def _drawn(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    """The figures ``module`` saves, kept open for the test."""
    figures: list[Any] = []
    monkeypatch.setattr(module, "_save", lambda fig, path: figures.append(fig))
    return figures


def test_roofline_numbers_sit_beside_their_points_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 14B at 720p: label 1 (the attention core, the largest marker) outside its marker; the
    four projections at one spot (labels 5–8) each beside it, no two labels on top of each other."""
    from matplotlib.text import Annotation

    from ditmeter.commands.report import analyze
    from ditmeter.config import load
    from ditmeter.reports.tables import modules_frame

    figures = _drawn(monkeypatch, plots)
    _, view = analyze(load(["model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm"], "report"))
    assert view.prediction is not None
    a = view.analysis
    stages = {s.name: (s.runs_per_video, s.dtype) for s in a.stages}
    plots.roofline_png(
        modules_frame(a, view.prediction), stages, view.prediction.device, "t", tmp_path / "r.png"
    )
    ax = figures[0].axes[0]
    labels = {t.get_text(): t for t in ax.texts if isinstance(t, Annotation) and t.get_text().isdigit()}
    assert len(labels) >= 8
    largest = max(float(c.get_sizes().max()) for c in ax.collections if len(c.get_sizes()))
    assert np.hypot(*labels["1"].xyann) >= np.sqrt(largest) / 2 + 4  # past the marker's edge
    scale = figures[0].dpi / 72
    at = {k: ax.transData.transform(t.xy) / scale + np.array(t.xyann) for k, t in labels.items()}
    for (k1, p1), (k2, p2) in itertools.combinations(at.items(), 2):
        assert abs(p1[0] - p2[0]) >= 10 or abs(p1[1] - p2[1]) >= 10, (k1, k2)
    for k, t in labels.items():
        assert np.hypot(*t.xyann) <= np.sqrt(largest) / 2 + 40, k  # near its point, not in a column


def test_ingest_ratios_keep_their_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prediction 1,000× under the measurement is labelled 0.001×, not 0.00×."""
    figures: list[Any] = []
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", lambda fig, *a, **k: figures.append(fig))
    monkeypatch.setattr("matplotlib.pyplot.close", lambda fig=None: None)
    row = {
        "stage": "dit",
        "kind": "leaf",
        "tensor_flops": 10,
        "cuda_flops": 0,
        "bytes_read": 10,
        "bytes_written": 10,
        "roofline_s": 1e-5,
    }
    modules = pd.DataFrame(
        [
            {**row, "module_id": "a", "category": "attn_core", "measured_time_s": 0.1, "predicted_s": 1e-4},
            {**row, "module_id": "b", "category": "ffn", "measured_time_s": 0.02, "predicted_s": 0.03},
        ]
    )
    ingest_report.ingest_png(modules, "dit", "t", tmp_path / "ingest.png")
    texts = sorted(t.get_text().strip() for t in figures[0].axes[0].texts)
    assert texts == ["0.001×", "1.5×"]


def _outside(fig: Any) -> list[str]:
    """The sides of ``fig``'s canvas that something an axes draws (its tick labels, axis labels,
    title, legends) runs past: what a fixed margin that is too small clips."""
    fig.canvas.draw()
    renderer, canvas = fig.canvas.get_renderer(), fig.bbox
    out = []
    for i, ax in enumerate(fig.axes):
        box = ax.get_tightbbox(renderer)
        sides = {"left": canvas.x0 - box.x0, "bottom": canvas.y0 - box.y0}
        sides |= {"right": box.x1 - canvas.x1, "top": box.y1 - canvas.y1}
        out += [f"axes {i} {side}" for side, past in sides.items() if past > 0.5]
    return out


@pytest.mark.parametrize(
    ("model", "device"),
    [("wan2.1-t2v-14b", "h100-sxm"), ("wan2.1-i2v-14b-480p", "rtx4090"), ("wan2.2-ti2v-5b", "l20")],
)
def test_device_plots_clip_no_label(
    model: str, device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three plots of a run with a device sit on fixed margins (not the tight layout): every
    tick label, axis label, title and legend stays on the canvas, the I2V's five stage names
    (``image_encoder`` the longest) and the offload phase included."""
    from ditmeter.commands.report import analyze
    from ditmeter.config import load
    from ditmeter.reports.device_report import stage_times, time_by_category
    from ditmeter.reports.tables import modules_frame

    figures = _drawn(monkeypatch, plots)
    _, view = analyze(load([f"model={model}", "workload=480p-81f", f"device={device}"], "report"))
    assert view.prediction is not None
    a, d = view.analysis, view.prediction.device
    modules = modules_frame(a, view.prediction)
    stages = {s.name: (s.runs_per_video, s.dtype) for s in a.stages}
    by_stage = {t["stage"]: t["per_video_s"] for t in stage_times(view)}
    plots.roofline_png(modules, stages, d, f"{a.model.name} on {d.display_name}", tmp_path / "r.png")
    plots.time_breakdown_png(
        time_by_category(modules, a.forward.name), d, "t", tmp_path / "t.png", "DiT forward", by_stage
    )
    plots.memory_timeline_png(a, d, tmp_path / "m.png")
    assert len(figures) == 3
    assert ("image_encoder" in by_stage) == model.startswith("wan2.1-i2v")
    for fig in figures:
        assert _outside(fig) == []


def test_a_too_small_margin_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above fails when a margin is too small: the breakdown's category and stage names at a left
    margin of a quarter inch (no label measured) run off the canvas, in both panels."""
    figures = _drawn(monkeypatch, plots)
    monkeypatch.setattr(plots, "_text_width_in", lambda fig, texts, size: 0.0)
    cats = pd.DataFrame(
        {
            "category": ["attn_core", "ffn"],
            "predicted_s": [2.0, 1.0],
            "compute_s": [2.0, 1.0],
            "memory_s": [0.1, 0.1],
        }
    )
    from ditmeter.config import load

    device = load(["device=h100-sxm"]).device
    assert device is not None
    plots.time_breakdown_png(cats, device, "t", tmp_path / "t.png", "DiT forward", {"image_encoder": 1.0})
    assert _outside(figures[0]) == ["axes 0 left", "axes 1 left"]
