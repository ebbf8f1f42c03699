"""``ditmeter sweep``: the grid, every point against the expanded prediction, the files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ditmeter.commands import sweep as sw
from ditmeter.commands import sweep_grid as sg
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.reports.sweep_plots import PLOTS

TINY = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny"]


def expected(point: list[str]) -> dict[str, float]:
    """The independent path: one load per point, the expanded tree's prediction."""
    _, view = analyze(load(point))
    p = view.prediction
    assert p is not None
    out = {
        "per_video_s": p.per_video_s,
        "roofline_per_video_s": p.roofline_video_s,
        "per_forward_s": p.per_forward.predicted_s,
        "per_step_s": p.per_step_s,
    }
    out |= {f"{s}_per_video_s": p.stage_video_s(s, n) for s, n in p.stage_runs}
    return out


def points(result: sw.SweepResult) -> list[list[str]]:
    """Each row's overrides for ``load``: the fixed ones and its axis values."""
    g = result.grid
    fixed = [o for o in g.fixed if not o.startswith(("output_root", "run_id"))]
    return [[*fixed, *(f"{k}={v}" for k, v in p.items())] for p in g.points()]


# ---- the grid ---------------------------------------------------------------------------------


def test_grid_is_the_product_of_the_axes_and_keeps_fixed_keys() -> None:
    fixed, pts = sg.parse_grid(
        [*TINY, "device=[h100-sxm,a100-sxm-80gb]", "workload.num_frames=[5,9,13]", "stages=[dit]"]
    )
    assert fixed == [*TINY, "stages=[dit]"]  # a list-valued key is one value, not an axis
    assert len(pts) == 2 * 3
    assert pts[0] == {"device": "h100-sxm", "workload.num_frames": "5"}
    assert pts[-1] == {"device": "a100-sxm-80gb", "workload.num_frames": "13"}  # the last axis fastest


def test_hydra_sweep_syntax_is_an_axis() -> None:
    g = sg.grid(
        ["workload.num_frames=range(5,18,4)", "time.mode=predicted,roofline", "stages=[dit],[vae_decode]"]
    )
    assert [a.key for a in g.axes] == ["workload.num_frames", "time.mode", "stages"]
    assert g.axes[0].texts == ("5", "9", "13", "17")
    assert g.axes[2].texts == ("[dit]", "[vae_decode]")
    assert g.size == 4 * 2 * 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["compare.tolerance=[0.1,0.2]"], "compare.tolerance"),  # a key sweep does not take
        (["device=[h100-sxm,no-such-gpu]"], "device"),  # an unknown name
        (["model=[wan2.1-t2v-1.3b,nope]"], "model"),
        (["device=h100-sxm", "device=[a100-sxm-80gb]"], "device"),  # given twice
        (["workload.num_frames=[]"], "workload.num_frames"),
        (["run_id=[a,b]"], "run_id"),  # one folder for the whole sweep
        (["workload.num_frames=[5,9"], "workload.num_frames"),  # Hydra cannot parse it
        (["gpus=[1,1]"], "gpus"),  # a value twice: duplicate rows
        (["gpus=[1,2,4]", "workload.num_frames=range(1,10004,4)"], "gpus"),  # 5,002 points rank plans
    ],
)
def test_bad_grid_names_the_key(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        sg.grid(overrides)
    assert err.value.field == field


def test_a_gpu_count_no_device_of_the_grid_holds_is_refused_before_any_point_is_timed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """16 GPUs are two nodes of H100 SXMs (over InfiniBand) but no H100 PCIe server: refused when
    the grid is read, not after the points before it were costed."""

    def timed(*_: object) -> None:
        raise AssertionError("a point was timed before the grid's GPU counts were checked")

    monkeypatch.setattr(sw.Timer, "evaluate", timed)
    grid = ["model=wan2.1-t2v-1.3b", "workload=w002-512p", "device=[h100-sxm,h100-pcie]", "gpus=[1,16]"]
    with pytest.raises(ConfigError, match="16 GPUs exceed one node of h100-pcie") as err:
        sw.sweep(grid)
    assert err.value.field == "gpus"


def test_grid_is_capped() -> None:
    with pytest.raises(ConfigError, match="at most 100,000"):
        sg.grid(["workload.num_frames=range(1,401)", "workload.height=range(1,301)"])


def test_distinct_analyses_are_capped_devices_are_not() -> None:
    """Each value of a workload axis builds an analysis (~12 ms each): 5,001 of them would run for
    minutes, refused naming the axis; 1,000 frames on six devices (6,000 points) are 1,000."""
    with pytest.raises(ConfigError, match="5,001 distinct analyses; at most 5,000") as err:
        sg.grid(["workload.num_frames=range(1,5002)"])
    assert err.value.field == "workload.num_frames"
    six = "device=[h100-sxm,a100-sxm-80gb,h20,l20,l40s,rtx4090]"
    assert sg.grid(["workload.num_frames=range(1,1001)", six]).size == 6_000


# ---- every point against the expanded prediction ------------------------------------------------


def test_small_sweep_equals_the_expanded_prediction() -> None:
    result = sw.sweep([*TINY, "device=[h100-sxm,a100-sxm-80gb]", "workload.num_frames=[5,9]"])
    frame = result.frame
    assert len(frame) == 4 and list(frame.columns) == result.schema.names
    assert list(frame["device"]) == ["h100-sxm", "h100-sxm", "a100-sxm-80gb", "a100-sxm-80gb"]
    assert list(frame["workload.num_frames"]) == ["5", "9", "5", "9"]
    for row, point in zip(frame.to_dict("records"), points(result), strict=True):
        for column, value in expected(point).items():
            assert row[column] == pytest.approx(value, rel=1e-12), (point, column)
    for device, rows in frame.groupby("device"):
        assert rows["per_video_s"].is_monotonic_increasing, device  # more frames, more time
        assert rows["tensor_flops_per_video"].is_monotonic_increasing
    shares = frame[[c for c in frame.columns if c.startswith("share_")]].sum(axis=1)
    assert shares.to_numpy() == pytest.approx(1.0, rel=1e-12)
    assert (frame["fits"] == (frame["peak_per_gpu_bytes"] <= frame["device_memory_bytes"])).all()


def test_every_branch_of_the_timing_equals_the_expanded_prediction() -> None:
    """Per-value keys (workload.*, device.*, time.mode, attention, gemm_dtype), image-to-video
    (text and image key/value lengths), the math attention path, fp8 GEMMs, the roofline."""
    result = sw.sweep(
        [
            "model=[wan2.1-t2v-1.3b,wan2.1-i2v-14b-480p]",
            "workload=w001-tiny",
            "workload.height=[256,320]",
            "device=[h100-sxm,h20]",  # two kernel tables with fp8 GEMM curves
            "device.efficiency=[1.0,0.5]",
            "attention=[auto,sdpa_math]",
            "gemm_dtype=[null,fp8]",
        ]
    )
    assert len(result.frame) == 2 * 2 * 2 * 2 * 2 * 2
    assert result.analyses == 4 and result.device_plans == 16
    for row, point in zip(result.frame.to_dict("records"), points(result), strict=True):
        for column, value in expected(point).items():
            assert row[column] == pytest.approx(value, rel=1e-12), (point, column)
    i2v = result.frame["model"] == "wan2.1-i2v-14b-480p"
    assert result.frame.loc[i2v, "image_encoder_per_video_s"].notna().all()
    assert result.frame.loc[~i2v, "image_encoder_per_video_s"].isna().all()  # t2v has none
    math = result.frame["attention"] == "sdpa_math"
    assert (result.frame.loc[math, "attention_backend"] == "sdpa_math").all()


def test_roofline_mode_equals_the_expanded_prediction() -> None:
    result = sw.sweep([*TINY, "device=h100-sxm", "time.mode=[predicted,roofline]"])
    predicted, roofline = result.frame.to_dict("records")
    for row, point in zip((predicted, roofline), points(result), strict=True):
        assert row["per_video_s"] == pytest.approx(expected(point)["per_video_s"], rel=1e-12)
    assert roofline["per_video_s"] == pytest.approx(roofline["roofline_per_video_s"], rel=1e-12)
    assert roofline["per_video_s"] < predicted["per_video_s"]
    assert (roofline["time_mode"], predicted["time_mode"]) == ("roofline", "predicted")


@pytest.mark.parametrize(
    ("axes", "field"),
    [
        (["device=[h100-sxm,a100-sxm-80gb]", "attention=fa3"], "attention"),  # no FA3 on Ampere
        (["device=h100-sxm", "time.mode=[predicted,roofline]", "attention=fa2"], None),  # load's call
        (["device=[h100-sxm,a100-sxm-80gb]", "gemm_dtype=fp8"], "gemm_dtype"),
        (["device=h100-sxm", "device.efficiency=[1.0,0]"], "device.efficiency"),
        (["device=h100-sxm", "workload.num_frames=[5,0]"], "workload.num_frames"),
    ],
)
def test_a_refused_point_is_the_error_load_gives(axes: list[str], field: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        sw.sweep([*TINY, *axes])
    assert field in (None, err.value.field) and "(at " in err.value.message
    point = err.value.message.rsplit("(at ", 1)[1].rstrip(")").split(" ")
    with pytest.raises(ConfigError) as direct:
        load(point)
    assert (direct.value.field, direct.value.message) == (
        err.value.field,
        err.value.message.rsplit(" (at ", 1)[0],
    )


def test_a_sweep_needs_a_device() -> None:
    with pytest.raises(ConfigError) as err:
        sw.sweep([*TINY, "workload.num_frames=[5,9]"])
    assert err.value.field == "device"


# ---- the files ----------------------------------------------------------------------------------


def test_publish_writes_the_table_and_plots(out_root: Path) -> None:
    result = sw.sweep(
        [
            *TINY,
            "device=[h100-sxm,a100-sxm-80gb]",
            "workload.num_frames=[5,9]",
            f"output_root={out_root}",
            "run_id=s1",
        ]
    )
    folder, files = sw.publish(result)
    assert folder == out_root / "s1" / "static_analysis" / "sweep"
    assert set(files) == {"sweep.parquet", *PLOTS}
    assert all((folder / f).stat().st_size > 0 for f in files)
    back = pd.read_parquet(folder / "sweep.parquet")
    pd.testing.assert_frame_equal(back, result.frame)
    meta = pq.read_schema(folder / "sweep.parquet").metadata
    assert json.loads(meta[b"ditmeter.axes"]) == {
        "device": ["h100-sxm", "a100-sxm-80gb"],
        "workload.num_frames": ["5", "9"],
    }
    assert pq.read_schema(folder / "sweep.parquet").equals(result.schema, check_metadata=False)
    assert json.loads((out_root / "s1" / "run.json").read_text())["command"] == "sweep"
    with pytest.raises(ConfigError) as err:  # the id is taken: nothing else is written
        sw.publish(result)
    assert err.value.field == "run_id"
    assert sorted(p.name for p in out_root.iterdir()) == ["s1"]


def test_plots_of_a_sweep_without_frames_or_resolution(tmp_path: Path) -> None:
    result = sw.sweep([*TINY, "device=[h100-sxm,a100-sxm-80gb,l40s]", "stages=[vae_decode]"])
    files = sw.write_sweep(result, tmp_path)
    assert all((tmp_path / f).stat().st_size > 0 for f in files)
    assert "dit_per_video_s" not in result.frame  # not selected; the forward's figures still are
    assert (result.frame["per_forward_s"] > 0).all()


def test_run_sweep_prints_the_rate_and_the_folder(out_root: Path) -> None:
    from rich.console import Console

    console = Console(record=True, width=200)
    status = sw.run_sweep([*TINY, "device=[h100-sxm,l40s]", f"output_root={out_root}"], console)
    text = console.export_text()
    assert status == 0
    assert "2 points in" in text and "points/s" in text and "wrote" in text


def test_a_point_whose_workload_the_pipeline_adjusts_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """18 frames are costed as 17 ((F-1)//4+1 latent frames): the row keeps the swept 18, says the
    adjustment in ``adjusted`` and costs what report costs for 17; the terminal says it too."""
    from rich.console import Console

    base = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=h100-sxm"]
    frame = sw.sweep([*base, "workload.num_frames=[17,18]"]).frame.set_index("workload.num_frames")
    assert (
        pd.isna(frame.loc["17", "adjusted"]) and "workload.num_frames: 18 → 17" in frame.loc["18", "adjusted"]
    )
    assert frame.loc["18", "per_video_s"] == frame.loc["17", "per_video_s"]
    console = Console(width=200)
    assert sw.run_sweep([*base, "workload.num_frames=[17,18]", f"output_root={tmp_path}"], console) == 0
    assert "adjusted workload at 1 of 2 points" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("axes", "field"),
    [
        (["offload.t5_cpu=[true,false]", "host=epyc-9654"], None),  # host at the t5_cpu points
        (["methods.cache=[magcache,null]", "methods.magcache_threshold=0.1"], None),
        (["host=[epyc-9654,ryzen-7950x]"], "host"),  # no point runs the encoder on the host
        (["methods.magcache_k=[1,2]"], "methods.magcache_k"),  # no point runs MagCache
    ],
)
def test_a_key_that_needs_another_is_asked_of_the_whole_grid(axes: list[str], field: str | None) -> None:
    """``host=`` needs ``offload.t5_cpu=true`` and MagCache's rule keys MagCache: in a sweep at some
    point of the grid, not at every one."""
    base = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]
    if field is None:
        assert len(sw.sweep([*base, *axes]).frame) == 2
        return
    with pytest.raises(ConfigError) as err:
        sw.sweep([*base, *axes])
    assert err.value.field == field


def test_rows_built_directly_equal_attrs_evolve() -> None:
    """The sweep's fast builders (``ModuleRow.with_copies``, ``call_row``, ``KernelCall.launched``,
    ``Cost.called`` and ``Cost.plus_calls``) pass every field by position: each equals
    ``attrs.evolve`` of the same record, and a field added to one fails here until they pass it."""
    import attrs

    from ditmeter.analytic.cost import COST_FIELDS, Cost
    from ditmeter.analytic.eager import KernelCall
    from ditmeter.analytic.kernel_time import call_row
    from ditmeter.analytic.tree import ModuleRow

    assert [f.name for f in attrs.fields(ModuleRow)] == [
        "module_id", "parent_id", "depth", "kind", "category", "rule", "cost", "copies", "dims", "runs",
    ]  # fmt: skip
    row = ModuleRow("dit.a.q", "dit.a", 2, "leaf", "gemm", "linear", Cost(tensor_flops=6), 3, (("m", 2),),
                    (((("m", 2),), 4),))  # fmt: skip
    assert row.with_copies(7) == attrs.evolve(row, copies=7)
    call = KernelCall("addmm", "gemm", "bf16", 10, tensor_flops=4, call_flops=4)
    want = attrs.evolve(
        row, rule="linear", cost=Cost(tensor_flops=4, bytes_read=10), dims=(("call_flops", 4),), runs=()
    )
    assert call_row(row, call) == want
    assert [f.name for f in attrs.fields(KernelCall)] == [
        "op", "kind", "dtype", "bytes", "tensor_flops", "cuda_flops", "count", "call_flops", "dims",
        "operand",
    ]  # fmt: skip
    full = KernelCall("mul", "memory", "fp32", 10, 2, 3, 4, 5, (("m", 6),), "weight")
    assert full.launched(7) == attrs.evolve(full, count=28)
    # the VAE's per-call accumulation: params and weights held once, every other count per call
    a, b = Cost(*range(1, 10)), Cost(*range(11, 20))
    assert [f.name for f in attrs.fields(Cost)] == [*COST_FIELDS, "elements"]
    assert a.called(3) == attrs.evolve(a.times(3), params=a.params, weight_bytes=a.weight_bytes)
    assert a.plus_calls(b) == attrs.evolve(a + b, params=a.params, weight_bytes=a.weight_bytes)
