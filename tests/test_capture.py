"""The fx capture: per-node FLOPs agree with a bare FlopCounterMode pass, per module too."""

from __future__ import annotations

from collections import defaultdict

from conftest import analyze, spec_and_workload

from ditmeter.models.wan21.builders import build_diffusers_dit, diffusers_dit_inputs
from ditmeter.models.wan21.names import DIT_NAMES
from ditmeter.tracer.capture import capture_forward, flop_counter_pass


def test_capture_matches_flop_counter_and_keeps_module_paths() -> None:
    spec, wl = spec_and_workload("wan2.1-t2v-1.3b", "w002-512p")
    model = build_diffusers_dit(spec, wl.dtype)
    inputs = diffusers_dit_inputs(spec, wl, analyze(spec, wl).geometry)
    graph = capture_forward(model, inputs)
    counter = flop_counter_pass(model, inputs)
    nodes = list(graph.nodes)
    assert sum(n.meta["flops"] for n in nodes) == counter.get_total_flops()

    per_module: dict[str, int] = defaultdict(int)
    for n in nodes:
        per_module[n.meta["module_path"]] += n.meta["flops"]
    measured = counter.get_flop_counts()
    assert per_module["blocks.3.attn1.to_q"] == sum(
        measured["WanTransformer3DModel.blocks.3.attn1.to_q"].values()
    )
    # every FLOP-bearing node maps onto an official module id
    assert all(DIT_NAMES.canonical_id(p) is not None for p, f in per_module.items() if f)
    # data-flow edges exist and shapes are recorded
    q = next(n for n in nodes if n.meta["module_path"] == "blocks.0.attn1.to_q" and n.meta["flops"])
    assert q.all_input_nodes and q.meta["out_shapes"][0][-1] == spec.dim
    tokens = 4 * 32 * 32  # 16 frames → 4 latent frames (official rule), 512/16 = 32 patches a side
    assert q.meta["out_shapes"][0] == (tokens, spec.dim)  # addmm over flattened rows
    assert q.meta["bytes_out"] == tokens * spec.dim * 2  # bf16


def test_in_place_writes_are_data_flow_edges() -> None:
    """The diffusers RoPE writes into ``out[..., 0::2]`` in place; attention must depend on it."""
    spec, wl = spec_and_workload("wan2.1-t2v-1.3b", "w001-tiny")
    model = build_diffusers_dit(spec, wl.dtype)
    graph = capture_forward(model, diffusers_dit_inputs(spec, wl, analyze(spec, wl).geometry))
    attn = [n for n in graph.nodes if n.meta["module_path"] == "blocks.0.attn1"]
    writes = [n for n in attn if str(n.target) == "aten.copy_.default"]
    first_bmm = next(n for n in attn if n.meta["flops"])
    assert writes, "the diffusers RoPE copies into a preallocated tensor"
    ancestors: set[object] = set()
    stack = list(first_bmm.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in ancestors:
            ancestors.add(n)
            stack += n.all_input_nodes
    assert set(writes) <= ancestors
    assert all(n.meta["module_class"] == "WanAttention" for n in attn)


def test_a_single_linear_by_hand() -> None:
    """One nn.Linear on meta: addmm of 2·rows·in·out FLOPs, bytes of x, Wᵀ, b in and y out."""
    import torch
    from torch import nn

    layer = nn.Linear(96, 40, device="meta", dtype=torch.bfloat16)
    x = torch.empty(3, 7, 96, device="meta", dtype=torch.bfloat16)
    graph = capture_forward(layer, {"input": x})
    (mm,) = [n for n in graph.nodes if n.meta["flops"]]
    assert str(mm.target) == "aten.addmm.default"
    assert mm.meta["flops"] == 2 * 21 * 96 * 40  # bias add excluded, as flop_counter does
    assert mm.meta["module_path"] == "" and mm.meta["module_class"] == "Linear"
    assert mm.meta["in_shapes"] == [(40,), (21, 96), (96, 40)]
    assert mm.meta["bytes_in"] == 2 * (40 + 21 * 96 + 96 * 40) and mm.meta["bytes_out"] == 2 * 21 * 40
    assert (
        sum(n.meta["flops"] for n in graph.nodes) == flop_counter_pass(layer, {"input": x}).get_total_flops()
    )
