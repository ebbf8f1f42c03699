"""Step caches and sparse attention under a multi-GPU plan (docs/whatif.md "Under a plan"): a rank
runs one GPU's schedule, a skipped forward's cost and collectives on a rank by hand, sparse
attention's FLOPs per rank by hand, the refusals, and a sweep point against ``report``."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from ditmeter.analytic.methods import CacheSchedule
from ditmeter.analytic.parallel import ParallelEstimate, rank_forward_time
from ditmeter.analytic.plan_methods import rank_schedule
from ditmeter.analytic.tree import walk
from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load

BASE = ["model=wan2.1-t2v-1.3b", "workload=w002-512p", "device=h100-sxm"]
#: the H100's element-wise pass: 3350 GB/s × 0.75 (configs/kernels/hopper.yaml), 5 µs a launch at least
ELEMENTWISE_BPS, LAUNCH_S = 3350e9 * 0.75, 5e-6
#: the nvswitch-hopper fabric's smallest collective (configs/fabric/nvswitch-hopper.yaml)
FABRIC_FLOOR_S = 10.59e-6


def _plan(*extra: str) -> tuple[object, ParallelEstimate]:
    a, view = analyze(load([*BASE, *extra], "report"))
    assert view.plan is not None
    return a, view.plan.estimate


def _comm(est: ParallelEstimate, word: str):  # type: ignore[no-untyped-def]
    (t,) = [t for t in est.comms if word in t.comm.what]
    return t


def test_a_rank_runs_one_gpus_schedule_under_ulysses() -> None:
    """Ulysses 2: every rank runs all 100 forwards (50 steps × 2 branches) and skips the same 30 as
    one GPU at cache_skip 0.3; MagCache's rule gives the rank the one GPU's own counts."""
    _, est = _plan("parallel.ulysses=2", "methods.cache=teacache", "methods.cache_skip=0.3")
    assert [(r.kind, r.count) for r in est.forward_runs] == [("computed", 70), ("cached", 30)]
    _, one = analyze(load([*BASE, "methods.cache=magcache"], "report"))
    assert one.prediction is not None
    _, mag = _plan("parallel.ulysses=2", "methods.cache=magcache")
    assert [(r.kind, r.count) for r in mag.forward_runs] == [
        (r.kind, r.count) for r in one.prediction.forward_runs
    ]


def test_cfg_parallel_halves_wait_for_the_branch_that_computes() -> None:
    """Two steps of two forwards a step: a step computes on a CFG half when either branch does."""
    mask = (True, True, True, False, False, False, False, True)  # steps 0-3, (cond, uncond)
    s = rank_schedule(CacheSchedule("magcache", 4, 4, "hand", mask), 2, 2)
    assert (s.computed, s.skipped, s.mask) == (3, 1, (True, True, False, True))
    shared = rank_schedule(CacheSchedule("teacache", 70, 30, "hand"), 2, 2)
    assert (shared.computed, shared.skipped) == (35, 15)  # both branches skip the same steps
    _, est = _plan("parallel.ulysses=2", "parallel.cfg=2", "methods.cache=teacache", "methods.cache_skip=0.3")
    assert [(r.kind, r.count) for r in est.forward_runs] == [("computed", 35), ("cached", 15)]


def test_a_skipped_forward_on_a_rank_by_hand() -> None:
    """Ulysses 2, official: a skipped forward runs the rank's forward outside its 30 blocks plus the
    residual add over its shard (tokens / 2 × 1536 fp32: two read, one written); it waits only for
    the head's output gather; the cache holds the two branches' shards."""
    a, view = analyze(load([*BASE, "parallel.ulysses=2"], "report"))
    assert view.plan is not None and view.prediction is not None
    plain = view.plan.estimate
    _, est = _plan("parallel.ulysses=2", "methods.cache=teacache", "methods.cache_skip=0.3")
    shard = est.rank.padded_tokens // 2
    residual_s = max(3 * shard * 1536 * 4 / ELEMENTWISE_BPS, LAUNCH_S)
    p = view.prediction
    stage = a.stage_kernels(plain.rank.forward_stage(a.forward), p.plan)
    total, block_s, _ = rank_forward_time(plain.rank, p.device, p.plan, stage)
    outside_s = total.predicted_s - 30 * block_s
    computed, cached = est.forward_runs
    assert cached.compute.predicted_s == pytest.approx(outside_s + residual_s, rel=1e-9)
    assert computed.compute.predicted_s == pytest.approx(plain.compute.predicted_s + residual_s, rel=1e-9)
    assert cached.comm_s == pytest.approx(_comm(plain, "head's output").exposed_s, rel=1e-12)
    held = {ph.stage: ph.activation_bytes or 0 for ph in est.rank.memory.phases}["dit"]
    base = {ph.stage: ph.activation_bytes or 0 for ph in plain.rank.memory.phases}["dit"]
    assert held - base == 2 * shard * 1536 * 4


def test_collectives_run_for_computed_forwards_only() -> None:
    """Per video: the Ulysses all-to-alls (4 × 30 a forward) for the 70 computed forwards, the head's
    gather for all 100; nothing else."""
    _, plain = _plan("parallel.ulysses=2")
    _, est = _plan("parallel.ulysses=2", "methods.cache=teacache", "methods.cache_skip=0.3")
    a2a, gather = _comm(plain, "Ulysses"), _comm(plain, "head's output")
    assert a2a.comm.spec.count == 4 * 30
    by_hand = 70 * 4 * 30 * a2a.call_s + 100 * gather.call_s
    assert est.comm_video_s == pytest.approx(by_hand, rel=1e-9)
    assert plain.comm_video_s == pytest.approx(100 * (4 * 30 * a2a.call_s + gather.call_s), rel=1e-9)


def test_fbcache_under_diffusers_all_reduces_its_decision() -> None:
    """pipeline=diffusers, Ulysses 2: two scalar all-reduces (bf16) a forward at the fabric's floor;
    a skipped forward also runs the first block's four all-to-alls."""
    _, est = _plan(
        "pipeline=diffusers", "parallel.ulysses=2", "methods.cache=fbcache", "methods.cache_skip=0.3"
    )
    vote = _comm(est, "decision")
    assert (vote.comm.spec.op, vote.comm.spec.count, vote.comm.spec.input_bytes) == ("all_reduce", 2, 2)
    assert vote.call_s == pytest.approx(FABRIC_FLOOR_S, rel=1e-12)
    a2a, gather = _comm(est, "Ulysses"), _comm(est, "head's output")
    cached = est.forward_runs[1]
    assert cached.comm_s == pytest.approx(4 * a2a.call_s + gather.call_s + 2 * FABRIC_FLOOR_S, rel=1e-9)


def test_sparse_attention_flops_per_rank_are_the_dense_ranks_times_the_density() -> None:
    """Ulysses 2: the rank's self-attention core attends its 6 of 12 heads over the whole sequence,
    4 × L² × 128 × 6 FLOPs dense, 0.3 of them sparse."""
    a, est = _plan("parallel.ulysses=2", "methods.sparse=svg", "methods.sparse_density=0.3")
    cfg = load([*BASE, "parallel.ulysses=2", "methods.sparse=svg", "methods.sparse_density=0.3"], "report")
    stage = a.stage_kernels(est.rank.forward_stage(a.forward), cfg.time)  # type: ignore[attr-defined]
    (row,) = [r for r in walk(est.rank.forward, expand=False) if r.module_id == est.rank.attention]
    tokens = dict(row.dims)["q_tokens"]
    assert tokens == dict(row.dims)["kv_tokens"] == est.rank.padded_tokens
    assert row.cost.tensor_flops == 4 * tokens * tokens * 128 * 6
    assert stage.computed(row).cost.tensor_flops == round(0.3 * 4 * tokens * tokens * 128 * 6)
    _, dense = _plan("parallel.ulysses=2")
    assert est.compute.predicted_s < dense.compute.predicted_s


def test_sparse_dense_steps_run_the_ranks_dense_forward() -> None:
    _, est = _plan(
        "parallel.ulysses=2",
        "methods.sparse=svg",
        "methods.sparse_density=0.3",
        "methods.sparse_dense_steps=0.2",
    )
    _, dense = _plan("parallel.ulysses=2")
    assert [(r.kind, r.count) for r in est.forward_runs] == [("dense", 20), ("sparse", 80)]
    assert est.forward_runs[0].compute.predicted_s == pytest.approx(dense.compute.predicted_s, rel=1e-12)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["parallel.ulysses=2", "methods.cache=easycache", "methods.cache_skip=0.3"], "methods.cache"),
        (["parallel.ulysses=2", "methods.cache=fbcache", "methods.cache_skip=0.3"], "methods.cache"),
        (
            ["pipeline=diffusers", "parallel.cfg=2", "methods.cache=fbcache", "methods.cache_skip=0.3"],
            "methods.cache",
        ),
        (["parallel.ring=2", "methods.sparse=radial", "methods.sparse_density=0.3"], "methods.sparse"),
        (["parallel.ulysses=2", "methods.cfg_batch=true"], "methods.cfg_batch"),
    ],
)
def test_refused_under_a_plan_exit_2_naming_the_key(extra: list[str], key: str, tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["report", *BASE, *extra, f"output_root={tmp_path}"])
    assert rc == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and key in lines[0], lines


def test_a_sweep_point_under_a_plan_equals_report() -> None:
    from ditmeter.commands.sweep import sweep

    grids = [
        ["parallel.ulysses=2", "methods.cache=[null,magcache]"],
        ["parallel.ulysses=2", "parallel.cfg=2", "methods.cache=teacache", "methods.cache_skip=[0.2,0.4]"],
        ["parallel.ulysses=2", "methods.sparse=[svg,vsa]", "methods.sparse_density=0.3"],
    ]
    for axes in grids:
        frame = sweep([*BASE, *axes]).frame
        fixed = [x for x in axes if "[" not in x]
        keys = [x.split("=")[0] for x in axes if "[" in x]
        for _, row in frame.iterrows():
            point = [*BASE, *fixed, *(f"{k}={'null' if row[k] is None else row[k]}" for k in keys)]
            a, view = analyze(load(point, "report"))
            assert row["per_video_s"] == pytest.approx(view.per_video_s, rel=1e-9), point
            assert row["peak_per_gpu_bytes"] == a.memory.peak_per_gpu_bytes, point
            assert row["comm_exposed_per_video_s"] == pytest.approx(view.plan.estimate.comm_video_s), point


def test_fsdp_block_gathers_run_for_computed_forwards_only() -> None:
    """Ulysses 2 with DiT FSDP: a skipped forward waits for the root unit's gather and the head's
    output gather only; a computed one for the 30 block gathers too."""
    _, plain = _plan("parallel.ulysses=2", "parallel.dit_fsdp=true")
    _, est = _plan("parallel.ulysses=2", "parallel.dit_fsdp=true", "methods.cache=magcache")
    root, blocks = _comm(plain, "outside the blocks"), _comm(plain, "DiT block weights")
    gather = _comm(plain, "head's output")
    assert blocks.comm.spec.count == 30
    computed, cached = est.forward_runs
    assert cached.comm_s == pytest.approx(root.call_s + gather.call_s, rel=1e-12)
    assert computed.comm_s == pytest.approx(plain.exposed_s("forward"), rel=1e-12)


def test_teacache_is_refused_where_the_time_embedding_differs_along_the_sequence() -> None:
    from ditmeter.errors import ConfigError

    ti2v = ["model=wan2.2-ti2v-5b-i2v", "workload=ti2v-720p-121f", "device=h100-sxm", "parallel.ulysses=2"]
    with pytest.raises(ConfigError) as exc:
        analyze(load([*ti2v, "methods.cache=teacache", "methods.cache_skip=0.3"], "report"))
    assert exc.value.field == "methods.cache"
    _, view = analyze(load([*ti2v, "methods.cache=magcache"], "report"))  # the ratios: rank-independent
    assert view.plan is not None and view.plan.estimate.forward_runs
