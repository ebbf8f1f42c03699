"""A sweep over ``parallel.*`` plans: its table's columns, its plots and what they label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from ditmeter.commands import sweep as sw
from ditmeter.reports import plots, sweep_plots

TINY = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]
PLANS = [*TINY, "parallel.ulysses=[1,2]", "parallel.dit_fsdp=[false,true]", "parallel.t5_fsdp=true"]


@pytest.fixture(scope="module")
def plans() -> sw.SweepResult:
    return sw.sweep(PLANS)


def test_fixed_keys_are_columns_and_booleans_stay_booleans(plans: sw.SweepResult) -> None:
    frame, schema = plans.frame, plans.schema
    assert list(frame["parallel.dit_fsdp"]) == [False, True, False, True]
    assert list(frame["parallel.t5_fsdp"]) == [True] * 4  # fixed: a column too
    for key in ("parallel.dit_fsdp", "parallel.t5_fsdp"):
        assert frame[key].dtype == bool and schema.field(key).type == pa.bool_()
    assert list(frame["parallel.ulysses"]) == ["1", "1", "2", "2"]  # other values as written
    assert list(frame["gpus"]) == [1, 1, 2, 2]


def test_a_sweep_without_plans_shows_the_peak_memory(out_root: Path) -> None:
    from rich.console import Console

    console = Console(record=True, width=200)
    assert sw.run_sweep([*TINY, f"output_root={out_root}"], console) == 0
    assert "peak per GPU" in console.export_text()


def _drawn(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    """The figures ``module`` saves, kept open for the test."""
    figures: list[Any] = []
    monkeypatch.setattr(module, "_save", lambda fig, path: figures.append(fig))
    return figures


def test_a_plan_sweep_plots_time_and_memory_against_the_gpus(
    plans: sw.SweepResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sw.write_sweep(plans, tmp_path)
    assert "time_vs_gpus.png" in files and (tmp_path / "time_vs_gpus.png").stat().st_size > 0
    figures = _drawn(monkeypatch, plots)
    sweep_plots.write_plots(plans.frame, [a.key for a in plans.grid.axes], tmp_path)
    (fig,) = figures
    time_ax, memory_ax = fig.axes[:2]
    lines = {line.get_label(): line for line in time_ax.get_lines() if not line.get_label().startswith("_")}
    # one family per FSDP setting, each from 1 GPU (the one-GPU point) to 2
    fsdp = next(k for k in lines if "DiT FSDP" in k)
    whole = next(k for k in lines if "Ulysses" in k and "DiT FSDP" not in k)
    assert list(lines[fsdp].get_xdata()) == [1, 2] and list(lines[whole].get_xdata()) == [1, 2]
    frame = plans.frame
    two = frame[(frame["gpus"] == 2) & frame["parallel.dit_fsdp"]]
    assert lines[fsdp].get_ydata()[-1] == pytest.approx(float(two["per_video_s"].iloc[0]))
    memory = {x.get_label(): x for x in memory_ax.get_lines()}
    assert memory[fsdp].get_ydata()[-1] == pytest.approx(float(two["peak_per_gpu_bytes"].iloc[0]) / 2**30)


def test_the_points_plot_names_each_point(
    plans: sw.SweepResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _drawn(monkeypatch, sweep_plots)
    sweep_plots.write_plots(plans.frame, [a.key for a in plans.grid.axes], tmp_path)
    ax = figures[0].axes[0]  # time_vs_frames.png: frames not swept, every point
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == 4 and "ulysses=2" in labels[2] and "dit_fsdp=false" in labels[2]
    assert "row of sweep.parquet" not in ax.get_xlabel()


def test_coinciding_strategies_stay_distinguishable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two strategies with the same times and memory (Ulysses and Ring where neither communicates
    more): their lines differ in marker and line style, so the one drawn second does not hide the
    first."""
    from ditmeter.config import load

    figures = _drawn(monkeypatch, plots)
    rows = [
        {"strategy": s, "gpus": n, "per_video_s": 100.0 / n, "speedup": float(n), "peak_per_gpu_bytes": 2**34}
        for s in ("Ulysses", "Ring")
        for n in (1, 2, 4)
    ]
    device = load(["device=h100-sxm"]).device
    assert device is not None
    plots.scaling_png(pd.DataFrame(rows), device, "t", tmp_path / "scaling.png")
    for ax in figures[0].axes[:2]:
        ulysses, ring = (next(x for x in ax.get_lines() if x.get_label() == s) for s in ("Ulysses", "Ring"))
        assert ulysses.get_marker() != ring.get_marker()
        assert ulysses.get_linestyle() != ring.get_linestyle()


def test_the_readme_plan_sweeps_and_their_snippet_run_as_written(tmp_path: Path) -> None:
    """The README's two plan sweeps, then its pandas snippet in a namespace of its own: every name
    it uses it defines, and the two tables line up (fixed keys are columns)."""
    import shlex

    from ditmeter.cli import main

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    part = readme.split("**How many H100s, which plan")[1]
    commands = [
        line[2:] for line in part.split("```text\n")[1].split("```")[0].splitlines() if line.startswith("$ ")
    ]
    assert len(commands) == 2
    for command in commands:
        argv = shlex.split(command)[1:]  # without .venv/bin/ditmeter
        assert main([*argv, f"output_root={tmp_path}"]) == 0, command
    snippet = part.split("```python\n")[1].split("```")[0]
    scope: dict[str, Any] = {}
    exec(compile(snippet.replace("tmp/profile-output", str(tmp_path)), "README.md", "exec"), scope)
    df = scope["df"]
    assert len(df) == 8 + 3 and df["parallel.dit_fsdp"].dtype == bool and df["parallel.t5_fsdp"].all()
