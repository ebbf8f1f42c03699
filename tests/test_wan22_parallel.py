"""Wan2.2 on many GPUs: the official generate.py's Ulysses-only plans with the per-token timesteps
embedded whole on every rank and both experts on every GPU; diffusers' context parallelism
traced on the real code under the fake process group."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import attrs
import pytest

from ditmeter.analytic.tree import walk
from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load

A14B = ["model=wan2.2-t2v-a14b", "workload=720p-81f", "device=h100-sxm"]
L, DIM = 75_600, 5_120  # 720p-81f: 21 × 45 × 80 tokens


def _rank(*extra: str):  # type: ignore[no-untyped-def]
    cfg = load([*A14B, *extra], "report")
    single = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
    return single, cfg.family.parallel(single, cfg.parallel, cfg.offload)


def _leaf(tree, module_id: str):  # type: ignore[no-untyped-def]
    return next(r.cost for r in walk(tree) if r.module_id == module_id)


def test_official_ulysses_embeds_the_timesteps_of_the_whole_sequence_on_every_rank() -> None:
    """Ulysses 8: each rank's blocks run 9,450 tokens, but the time projection runs all 75,600
    (2 × 75,600 × 5,120 × 30,720 FLOPs, as on one GPU) and its fp32 [L, 6, dim] output and the
    [L, dim] embedding stay whole (the ranks take views)."""
    single, rank = _rank("parallel.ulysses=8", "parallel.dit_fsdp=true")
    tp = _leaf(rank.forward, "time_projection")
    assert (
        tp.tensor_flops == _leaf(single.forward.tree, "time_projection").tensor_flops == 2 * L * DIM * 30_720
    )
    q = _leaf(rank.forward, "blocks.0.self_attn.q")
    assert q.tensor_flops * 8 == _leaf(single.forward.tree, "blocks.0.self_attn.q").tensor_flops
    whole = L * DIM * 7 * 4  # e0 [L, 6, dim] + e [L, dim], fp32
    per_rank = rank.footprint.persistent_bytes - single.footprint.persistent_bytes // 8
    assert per_rank > whole


def test_diffusers_splits_the_per_token_timesteps_with_the_latents() -> None:
    """TI2V-5B under diffusers (expand_timesteps): the timestep is split at the model's input, so
    each of 4 ranks embeds a quarter of the 27,280 tokens."""
    cfg = load(["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f", "pipeline=diffusers", "device=h100-sxm"])
    single = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
    plan = attrs.evolve(cfg.parallel, ulysses=4, gpus=4)
    rank = cfg.family.parallel(single, plan, cfg.offload)
    assert _leaf(rank.forward, "time_projection").tensor_flops == 2 * (27_280 // 4) * 3_072 * 6 * 3_072


def test_both_experts_stay_on_every_gpu_sharded_under_fsdp() -> None:
    """generate.py turns init_on_cpu off under FSDP or sequence parallelism: dit and dit_2 are both
    resident through the DiT stage; with --dit_fsdp each holds 1/8 of its fp32 weights."""
    single, sharded = _rank("parallel.ulysses=8", "parallel.dit_fsdp=true")
    dit = next(p for p in sharded.memory.phases if p.stage == "dit")
    assert dit.resident["dit"] == dit.resident["dit_2"] < 14_288_491_584 * 4 // 8 * 1.01
    _, whole = _rank("parallel.ulysses=8")
    dit = next(p for p in whole.memory.phases if p.stage == "dit")
    assert dit.resident["dit"] == dit.resident["dit_2"] == 14_288_491_584 * 4  # fp32, 106 GiB for both
    one_gpu = next(p for p in single.memory.phases if p.stage == "dit")
    assert "dit_2" not in one_gpu.resident  # one expert at a time on one GPU


def test_convert_model_dtype_casts_unsharded_experts_only() -> None:
    _, cast = _rank("parallel.ulysses=8", "offload.convert_model_dtype=true")
    dit = next(p for p in cast.memory.phases if p.stage == "dit")
    assert dit.resident["dit"] < 14_288_491_584 * 2 * 1.01  # bf16
    _, fsdp = _rank("parallel.ulysses=8", "parallel.dit_fsdp=true", "offload.convert_model_dtype=true")
    assert any("no effect under parallel.dit_fsdp" in n for n in fsdp.notes)


def test_the_release_8_gpu_command_fits_and_scales() -> None:
    """README: torchrun --nproc_per_node=8 generate.py --task t2v-A14B --dit_fsdp --t5_fsdp
    --ulysses_size 8 fits an 80 GB GPU; one GPU without the cast does not."""
    a, view = analyze(load([*A14B, "parallel.ulysses=8", "parallel.dit_fsdp=true", "parallel.t5_fsdp=true"]))
    assert a.memory.peak_per_gpu_bytes < 80 * 2**30 < view.plan.single_memory.peak_per_gpu_bytes  # type: ignore[union-attr]
    # not 8x: every rank embeds and projects the per-token timesteps of the whole sequence in fp32
    # (autocast(float32) around time_embedding/time_projection), about a fifth of the 8-GPU time;
    # the README's H100/H800 720p cells give 1041.5 s / 155.1 s = 6.7x (one GPU with offload)
    assert 5.0 < view.plan.estimate.speedup <= 8.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["parallel.ring=2"], "parallel.ring"),
        (["parallel.ulysses=2", "parallel.cfg=2"], "parallel.cfg"),
        (["parallel.ulysses=3"], "parallel.ulysses"),  # 40 heads do not split 3 ways
    ],
)
def test_what_the_official_wan22_code_cannot_run_is_refused(
    args: list[str], field: str, tmp_path: Path
) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", *A14B, *args, f"output_root={tmp_path / 'out'}"]) == 2
    assert err.getvalue().startswith(f"ditmeter: error: {field}:")
    assert not (tmp_path / "out").exists()


def test_tracing_an_official_plan_is_refused_without_artifacts(tmp_path: Path) -> None:
    """The traced reference is diffusers' context parallelism, which splits what the official code
    keeps whole; exit 2, nothing published."""
    err = io.StringIO()
    argv = ["model=wan2.2-t2v-a14b", "workload=w001-tiny", "device=h100-sxm", "parallel.ulysses=2"]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["trace", *argv, "stages=[dit]", f"output_root={tmp_path}"]) == 2
    assert err.getvalue().startswith("ditmeter: error: pipeline:")
    assert not list(tmp_path.glob("*/static_analysis"))


@pytest.mark.parametrize(
    "model",
    ["wan2.2-ti2v-5b", "wan2.2-t2v-a14b"],  # per-token timesteps split; one per sample
)
def test_diffusers_context_parallel_trace_is_exact(model: str, tmp_path: Path) -> None:
    """Rank 0 of diffusers' Ulysses 2 under the fake process group: per-module FLOPs and every
    collective equal the rank tree and the plan."""
    argv = [
        f"model={model}",
        "workload=w001-tiny",
        "pipeline=diffusers",
        "device=h100-sxm",
        "parallel.ulysses=2",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["trace", *argv, "stages=[dit]", f"output_root={tmp_path}"]) == 0
    (folder,) = tmp_path.glob("*/static_analysis/wan2_2")
    compare = json.loads((folder / "report.json").read_text())["compare"]
    assert compare["passed"] and compare["max_rel_error"] == 0
    assert compare["coverage"]["nodes"]["unmatched"] == 0
    assert compare["collectives"]["passed"]


def test_a_whole_sequence_time_embedding_fails_the_diffusers_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official rule (timesteps embedded for the whole sequence on every rank) against diffusers'
    split: the gate fails (exit 1) on the time embedding and projection."""
    from ditmeter.models.wan21 import parallel

    real = parallel.build_dit

    def whole(*args, **kwargs):  # type: ignore[no-untyped-def]
        shard = args[3]
        return real(*args[:3], attrs.evolve(shard, time_tokens=shard.full_tokens), *args[4:], **kwargs)

    monkeypatch.setattr(parallel, "build_dit", whole)
    argv = ["model=wan2.2-ti2v-5b", "workload=w001-tiny", "pipeline=diffusers", "device=h100-sxm"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["trace", *argv, "parallel.ulysses=2", "stages=[dit]", f"output_root={tmp_path}"]) == 1
    (folder,) = tmp_path.glob("*/static_analysis/wan2_2")
    failed = {w["module_id"] for w in json.loads((folder / "report.json").read_text())["compare"]["worst"]}
    assert "dit.time_projection" in failed


def test_offload_model_keeps_one_expert_on_each_gpu() -> None:
    """--offload_model moves the idle expert to the CPU (_prepare_model_for_timestep) also under a
    plan: one expert through the steps."""
    _, rank = _rank("parallel.ulysses=8", "offload.model=true")
    dit = next(p for p in rank.memory.phases if p.stage == "dit")
    assert "dit_2" not in dit.resident
    assert not any("Both experts" in n for n in rank.notes)


def test_scaling_has_no_ring_for_the_official_code_and_its_one_gpu_point_is_the_reports() -> None:
    """Ring is refused at every size under Wan2.2's generate.py, so it has no curve; the 1-GPU point
    places one expert at a time, as the single-GPU report does."""
    _, view = analyze(
        load(["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f", "device=h100-sxm", "parallel.ulysses=2"])
    )
    frame = view.plan.scaling  # type: ignore[union-attr]
    assert "Ring" not in set(frame["strategy"])
    one = frame[frame["gpus"] == 1]["peak_per_gpu_bytes"]
    assert set(one) == {view.plan.single_memory.peak_per_gpu_bytes}  # type: ignore[union-attr]
