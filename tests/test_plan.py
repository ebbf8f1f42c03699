"""``ditmeter plan``: every plan costed as ``report`` costs it, ranked, priced, and bad input refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ditmeter.cli import main
from ditmeter.commands.plan import plan
from ditmeter.commands.plan_result import PlanOptions, PlanResult
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.reports.plan_table import plan_lines

BASE = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=h100-sxm"]


@pytest.fixture(scope="module")
def result() -> PlanResult:
    return plan(load(BASE, "plan"), PlanOptions(gpus=4, price_per_gpu_hour=2.5))


def test_every_plan_costs_what_report_gives(result: PlanResult) -> None:
    runnable = result.runnable
    assert len(runnable) == 5 * 4  # u×r = 4 (u 1, 2, 4) and 2 (u 1, 2) with cfg 2, × FSDP flags
    for _, row in runnable.iterrows():
        keys = ("ulysses", "ring", "cfg", "dit_fsdp", "t5_fsdp")
        overrides = [f"parallel.{k}={str(row[k]).lower()}" for k in keys]
        _, view = analyze(load([*BASE, *overrides], "report"))
        assert row["per_video_s"] == view.per_video_s, overrides


def test_ranking_is_sorted_and_the_best_is_the_minimum(result: PlanResult) -> None:
    times = result.runnable["per_video_s"].tolist()
    assert times == sorted(times)
    best = result.best()
    assert best is not None and best["per_video_s"] == min(times)
    assert result.runnable["rank"].tolist() == list(range(1, len(times) + 1))


def test_cost_per_video_by_hand(result: PlanResult) -> None:
    row = result.runnable.iloc[3]
    assert row["cost_per_video"] == pytest.approx(row["per_video_s"] * 4 / 3600 * 2.5, rel=1e-12)
    assert row["videos_per_gpu_hour"] == pytest.approx(3600 / row["per_video_s"] / 4, rel=1e-12)


def test_fits_is_peak_against_the_device(result: PlanResult) -> None:
    capacity = result.cfg.device.memory_bytes if result.cfg.device is not None else 0
    rows = result.runnable
    assert (rows["device_memory_bytes"] == capacity).all()
    assert (rows["fits"] == (rows["peak_per_gpu_bytes"] <= capacity)).all()


def test_refused_plans_are_listed_with_the_family_reason() -> None:
    eight = plan(load(BASE, "plan"), PlanOptions(gpus=8))
    refused = eight.frame[~eight.frame["runs"].astype(bool)]
    assert len(refused) == 4  # ulysses 8 does not divide the 1.3B's 12 heads, × FSDP flags
    assert refused["reason"].str.contains("does not divide").all()
    assert pd.isna(refused["per_video_s"]).all()


@pytest.mark.parametrize(
    "bad",
    [
        "gpus=0",
        "gpus=9",
        "gpus=two",
        "plan.nope=1",
        "parallel.ulysses=2",
        "plan.price_per_gpu_hour=1e308",  # an inf cost per video
        "plan.price_per_gpu_hour=1e-320",
        "plan.memory_limit_gib=1e-320",
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*BASE, "gpus=2", bad] if bad.startswith(("plan.", "parallel.")) else [*BASE, bad]
    assert main(["plan", *args, f"output_root={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ditmeter: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *BASE, "gpus=2", f"output_root={tmp_path}", "run_id=p"]) == 0
    folder = tmp_path / "p" / "static_analysis" / "plan"
    frame = pd.read_parquet(folder / "plan.parquet")
    assert len(frame) == 3 * 4 and frame["gpus"].eq(2).all()  # ulysses 2, ring 2 or cfg 2
    assert "best:" in (folder / "plan.md").read_text(encoding="utf-8")
    assert "best that fits" in capsys.readouterr().out


def test_a_plan_may_span_a_gb200_nvl72_but_not_more_than_one_node_without_a_network() -> None:
    """A GB200's NVLink domain holds 72 GPUs (its datasheet): 64 GPUs are one domain there, and its
    best plan costs what report gives; an L40S node of 8 has no network in the catalog, so 16 are
    refused naming gpus; H100 nodes of 8 have one, but 12 GPUs are not whole nodes."""
    cfg = load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=gb200"], "plan")
    result = plan(cfg, PlanOptions(gpus=64))
    best = result.best()
    assert best is not None and best["gpus"] == 64
    keys = ("ulysses", "ring", "cfg", "dit_fsdp", "t5_fsdp")
    overrides = [f"parallel.{k}={str(best[k]).lower()}" for k in keys]
    _, view = analyze(
        load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=gb200", *overrides], "report")
    )
    assert best["per_video_s"] == view.per_video_s
    l40s = load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=l40s"], "plan")
    with pytest.raises(ConfigError) as exc:
        plan(l40s, PlanOptions(gpus=16))
    assert exc.value.field == "gpus" and "8 GPUs" in exc.value.message and "no network" in exc.value.message
    h100 = load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm"], "plan")
    with pytest.raises(ConfigError) as exc:
        plan(h100, PlanOptions(gpus=12))
    assert exc.value.field == "gpus" and "not whole nodes of 8" in exc.value.message


def test_a_sweep_refuses_a_plan_beyond_one_node_of_a_device_without_a_network() -> None:
    from ditmeter.commands.sweep import sweep

    with pytest.raises(ConfigError) as exc:
        sweep(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=rtx4090", "parallel.ring=[2,16]"])
    assert exc.value.field == "parallel.gpus"


def test_data_parallel_replicas_by_hand(result: PlanResult) -> None:
    """4 GPUs: 4 replicas of one GPU make 4 × 3,600 / (one GPU's seconds) videos an hour; 2 of 2,
    2 × 3,600 / (the best 2-GPU plan's); 1 of 4, the best plan's 3,600 / seconds. Ranked by it."""
    reps = result.replicas.set_index("gpus_per_replica")
    assert list(reps.index.sort_values()) == [1, 2, 4]
    assert reps.loc[1, "videos_per_hour"] == pytest.approx(4 * 3600 / result.single_video_s, rel=1e-12)
    two = plan(load(BASE, "plan"), PlanOptions(gpus=2)).best(fits_only=True)
    assert two is not None
    assert reps.loc[2, "videos_per_hour"] == pytest.approx(2 * 3600 / two["per_video_s"], rel=1e-12)
    best = result.best(fits_only=True)
    assert best is not None and reps.loc[4, "plan"] == best["plan"]
    assert result.replicas["videos_per_hour"].is_monotonic_decreasing
    first = "most videos per hour on 4 GPUs: 4 replicas of 1 GPU"
    assert any(line.startswith(first) for line in plan_lines(result))


def test_two_h100_nodes_rank_plans_that_keep_ulysses_in_a_node() -> None:
    """16 H100s (2 nodes over NDR): the same plan with its 8-way Ulysses inside a node (ulysses 8 ×
    ring 2: the ring's hop crosses) is faster than with a 2-way Ulysses and an 8-way ring whose
    members are 2 apart (ulysses 2 × ring 8, each ring spanning both nodes), and every plan's
    seconds are report's (the planner's ranking: hand-checkable per row)."""
    cfg = load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm"], "plan")
    res = plan(cfg, PlanOptions(gpus=16))
    rows = res.runnable.set_index("plan")
    assert rows.loc["ulysses 8 × ring 2", "per_video_s"] < rows.loc["ulysses 2 × ring 8", "per_video_s"]
    best = res.best()
    assert best is not None
    keys = ("ulysses", "ring", "cfg", "dit_fsdp", "t5_fsdp")
    overrides = [f"parallel.{k}={str(best[k]).lower()}" for k in keys]
    base = ["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm"]
    _, view = analyze(load([*base, *overrides], "report"))
    assert best["per_video_s"] == view.per_video_s


def test_a_sweep_gpus_axis_runs_each_devices_best_plan() -> None:
    """``sweep gpus=[1,4,16]``: every point is the plan command's best plan that fits on that
    device and GPU count, with report's seconds; its name is in the ``plan`` column."""
    from ditmeter.commands.sweep import sweep

    base = ["model=wan2.1-t2v-1.3b", "workload=480p-81f"]
    res = sweep([*base, "device=[h100-sxm,a100-sxm-80gb]", "gpus=[1,4,16]"])
    frame = res.frame
    assert sorted(set(frame["gpus"])) == [1, 4, 16] and "plan" in frame
    for _, row in frame.iterrows():
        cfg = load([*base, f"device={row['device']}"], "plan")
        best = plan(cfg, PlanOptions(gpus=int(row["gpus"]))).best(fits_only=True)
        assert best is not None
        assert row["plan"] == best["plan"]
        assert row["per_video_s"] == pytest.approx(best["per_video_s"], rel=1e-12)
        assert row["peak_per_gpu_bytes"] == best["peak_per_gpu_bytes"]


@pytest.mark.parametrize(
    "method",
    [
        ["methods.cache=magcache"],
        ["methods.sparse=svg", "methods.sparse_density=0.25"],
        ["methods.vae_parallel=true"],
    ],
)
def test_a_sweep_gpus_axis_runs_the_best_plan_with_a_method(method: list[str]) -> None:
    """``sweep gpus=4`` with a step cache, sparse attention or the decode over the GPUs: each point is
    the plan command's best plan under the same method, with report's seconds; sparse attention runs
    on Ulysses plans only (a ring plan is the fastest without it here, so a sweep that ignored the
    refusal would name a plan ``plan`` marks as unable to run)."""
    from ditmeter.commands.sweep import sweep

    base = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", *method]
    frame = sweep([*base, "device=[h100-sxm,l40s]", "gpus=4"]).frame
    for _, row in frame.iterrows():
        cfg = load([*base, f"device={row['device']}", "gpus=4"], "plan")
        result = plan(cfg, PlanOptions(gpus=4))
        best = result.best(fits_only=True)
        assert best is not None and row["plan"] == best["plan"]
        assert row["per_video_s"] == pytest.approx(best["per_video_s"], rel=1e-12)
        keys = ("ulysses", "ring", "cfg", "dit_fsdp", "t5_fsdp")
        at = [f"parallel.{k}={str(best[k]).lower()}" for k in keys]
        _, view = analyze(load([*base, f"device={row['device']}", *at], "report"))
        assert best["per_video_s"] == view.per_video_s
        plain = plan(load([*BASE[:2], f"device={row['device']}"], "plan"), PlanOptions(gpus=4))
        plain_best = plain.best(fits_only=True)
        assert plain_best is not None and plain_best["ring"] > 1
        if row["device"] == "h100-sxm":  # on the L40S's PCIe Ulysses costs more than SVG saves
            assert row["per_video_s"] < plain_best["per_video_s"]
        if "methods.sparse=svg" in method:
            assert best["ring"] == 1 and not result.frame.query("ring > 1")["runs"].any()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["device=h100-sxm", "gpus=[2,4]", "parallel.ulysses=2"], "gpus"),
        (["device=rtx4090", "gpus=[8,16]"], "gpus"),
        (["device=h100-sxm", "gpus=[2,100]"], "gpus"),
        # the batch a plan's collectives carry is not modelled: refused as report and plan refuse it
        (["device=h100-sxm", "gpus=4", "methods.cfg_batch=true"], "methods.cfg_batch"),
        (["device=h100-sxm", "parallel.ulysses=2", "methods.cfg_batch=true"], "methods.cfg_batch"),
    ],
)
def test_a_bad_gpus_axis_is_refused_naming_it(extra: list[str], field: str) -> None:
    from ditmeter.commands.sweep import sweep

    with pytest.raises(ConfigError) as exc:
        sweep(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", *extra])
    assert exc.value.field == field


@pytest.mark.parametrize("gpus", [24, 40])
def test_plans_on_nodes_whose_half_is_not_whole_nodes(gpus: int) -> None:
    """24 and 40 H100s (3 and 5 nodes): no plan runs on 12 or 20 GPUs (not whole nodes), so the
    warnings compare with the largest count below N/2 that runs and divides N (8), and no
    data-parallel replica straddles nodes (12, 20 and other such splits are left out)."""
    res = plan(
        load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm"], "plan"), PlanOptions(gpus)
    )
    assert res.fewer_gpus == 8
    sizes = set(res.replicas["gpus_per_replica"])
    assert sizes and all(8 % n == 0 or n % 8 == 0 for n in sizes)


def test_plan_and_whatif_say_when_the_pipeline_adjusts_the_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """18 frames are costed as 17: both commands say so before their tables."""
    for argv in (["plan", *BASE, "gpus=2"], ["whatif", *BASE, "whatif=[fp8]"]):
        assert main([*argv, "workload.num_frames=18", f"output_root={tmp_path}"]) == 0
        assert "adjusted workload.num_frames: 18 → 17" in capsys.readouterr().out


def test_a_batch_counts_every_video_it_makes() -> None:
    """``workload.batch_size=2``: one pipeline call (the 'per video' time) makes two videos, so
    videos per GPU-hour and the cost per video count both: by hand from the row's own seconds."""
    two = plan(load([*BASE, "workload.batch_size=2"], "plan"), PlanOptions(gpus=2, price_per_gpu_hour=2.5))
    row = two.runnable.iloc[0]
    assert row["videos_per_gpu_hour"] == pytest.approx(2 * 3600 / row["per_video_s"] / 2, rel=1e-12)
    assert row["cost_per_video"] == pytest.approx(row["per_video_s"] * 2 / 3600 * 2.5 / 2, rel=1e-12)
    top = two.replicas.iloc[0]
    assert top["videos_per_hour"] == pytest.approx(2 * top["replicas"] * 3600 / top["per_video_s"], rel=1e-12)
    assert any("workload.batch_size=2" in line for line in plan_lines(two))


def test_a_gain_beyond_the_gpu_count_is_explained() -> None:
    """On a tiny video the one-GPU run is mostly offload.model's weight moves (generate.py's one-GPU
    default), which the plans skip: plans gain more than their GPU count, and the lines say why."""
    tiny = ["model=wan2.2-t2v-a14b", "workload=w001-tiny", "device=h100-sxm"]
    r = plan(load(tiny, "plan"), PlanOptions(gpus=4))
    assert (r.runnable["speedup"] > r.runnable["gpus"]).any()
    assert any(line.startswith("note:") and "offload.model" in line for line in plan_lines(r))
    linear = plan(load(BASE, "plan"), PlanOptions(gpus=4))
    assert not any(line.startswith("note:") for line in plan_lines(linear))


def test_plans_that_differ_only_in_what_they_shard_time_their_forward_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rank's forward is timed once per device and time plan: of the 20 runnable plans on 4 GPUs
    those that differ only in T5 FSDP run the same DiT forward (fewer timings than plans); each
    plan's cost still equals report's (test above), and a new device object is timed afresh."""
    import ditmeter.analytic.parallel as parallel

    calls: list[object] = []
    real = parallel._rank_forward_time

    def counted(*args: object) -> object:
        calls.append(args[0])
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(parallel, "_rank_forward_time", counted)
    monkeypatch.setattr(parallel, "_RANK_FORWARD", {})
    cfg = load(BASE, "plan")
    plan(cfg, PlanOptions(gpus=4))
    first = len(calls)
    assert first < 20
    plan(cfg, PlanOptions(gpus=4))
    assert len(calls) == first  # the same device and time plan: every forward remembered
    plan(load(BASE, "plan"), PlanOptions(gpus=4))
    assert len(calls) == 2 * first  # another load: new objects, timed again
