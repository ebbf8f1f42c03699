"""Per-token timesteps (Wan2.2, groundwork for issue 14; docs/wan22.md): the DiT's cost tree and
its live memory with a timestep per token, against the diffusers DiT fed [batch, tokens] timesteps
on meta (FlopCounterMode and the tensor-lifetime counter), and by hand."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ditmeter.analytic.tree import walk
from ditmeter.config import load
from ditmeter.models.wan21.builders import build_diffusers_dit, diffusers_dit_inputs
from ditmeter.models.wan21.dit import build_dit
from ditmeter.models.wan21.memory import dit_footprint
from ditmeter.tracer.memory import peak_live_bytes

CASES = [("wan2.1-t2v-1.3b", "w001-tiny"), ("wan2.1-t2v-14b", "w002-512p")]


def _cfg(model: str, workload: str):  # type: ignore[no-untyped-def]
    return load(
        [f"model={model}", f"workload={workload}", "model.num_layers=2", "pipeline=diffusers"], "report"
    )


@pytest.mark.parametrize(("model", "workload"), CASES)
def test_flops_with_a_timestep_per_token_equal_the_real_module(model: str, workload: str) -> None:
    """The whole forward and the time embedder and projection (which now run on every token)
    equal FlopCounterMode on the diffusers DiT; the per-sample tree does not (the check can fail)."""
    cfg = _cfg(model, workload)
    m, w, g = cfg.model, cfg.workload, cfg.geometry
    module = build_diffusers_dit(m, w.dtype)
    inputs = {**diffusers_dit_inputs(m, w, g, per_token=True), "return_dict": False}
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(**inputs)
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    tree = build_dit(m, w, g, per_token_timesteps=True)
    rows = {r.module_id: r.total.tensor_flops for r in walk(tree, expand=False)}
    root = f"{type(module).__name__}.condition_embedder"
    assert tree.total.tensor_flops == counter.get_total_flops()
    assert rows["time_embedding"] == per_module[f"{root}.time_embedder"]
    assert rows["time_projection"] == per_module[f"{root}.time_proj"]
    assert build_dit(m, w, g).total.tensor_flops != counter.get_total_flops()


@pytest.mark.parametrize(("model", "workload"), CASES)
def test_live_memory_with_a_timestep_per_token_equals_the_real_modules(model: str, workload: str) -> None:
    """diffusers keeps the projection [tokens, 6, dim] and the embedding in bf16 and each block a
    fp32 [tokens, 6, dim] modulation; the 14B's peak moves to the block start (the fp32 copy and the
    sum), the 1.3B's stays in the FFN."""
    cfg = _cfg(model, workload)
    m, w, g = cfg.model, cfg.workload, cfg.geometry
    module = build_diffusers_dit(m, w.dtype)
    measured = peak_live_bytes(
        module, {**diffusers_dit_inputs(m, w, g, per_token=True), "return_dict": False}
    )
    fp = dit_footprint(m, w, g, build_dit(m, w, g), residual_dtype=w.dtype, per_token="diffusers")
    assert fp.peak_activation_bytes == measured
    assert fp.peak_stage == ("modulation" if model.endswith("14b") else "ffn")


def test_the_official_time_tensors_at_720p_by_hand() -> None:
    """14B shapes at 720p-81f (75,600 tokens): the time projection is 2 × 75,600 × 5,120 × 30,720
    FLOPs (23.8 TFLOP) per forward; the official code keeps e0 [75,600, 6, 5,120] and e
    [75,600, 5,120] in fp32 (9.29 + 1.55 GB) and each block a fp32 e0-sized sum."""
    cfg = load(["model=wan2.1-t2v-14b", "workload=720p-81f"], "report")
    m, w, g = cfg.model, cfg.workload, cfg.geometry
    tree = build_dit(m, w, g, per_token_timesteps=True)
    rows = {r.module_id: r for r in walk(tree, expand=False)}
    assert rows["time_projection"].total.tensor_flops == 2 * 75_600 * 5_120 * 30_720
    whole = dit_footprint(m, w, g, tree)
    official = dit_footprint(m, w, g, tree, per_token="official")
    per_sample = 5_120 * (6 * 4 + 6 * 2 + 2)
    assert official.persistent_bytes - whole.persistent_bytes == 75_600 * 5_120 * 7 * 4 - per_sample
    assert official.stage_bytes["ffn"] - whole.stage_bytes["ffn"] == 75_600 * 6 * 5_120 * 4
