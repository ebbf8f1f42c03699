"""Whole-model cross-checks against the diffusers WanTransformer3DModel on meta.

The reference is the real model traced by ``torch.utils.flop_counter``; the
analytic side never sees it. Per-module counts are compared through the
diffusers → official alias table.
"""

from __future__ import annotations

import pytest
from conftest import MODELS, WORKLOADS, analyze, spec_and_workload

from ditmeter.analytic.tree import walk
from ditmeter.models.wan21.builders import build_diffusers_dit, diffusers_dit_inputs
from ditmeter.models.wan21.names import DIT_NAMES
from ditmeter.tracer.capture import flop_counter_pass

canonical_id = DIT_NAMES.canonical_id

PARAMS = {"wan2.1-t2v-14b": 14_288_491_584, "wan2.1-t2v-1.3b": 1_418_996_800}
#: Per-module comparison covers the modules whose diffusers boundary equals the official one.
COMPARED_TYPES = ("Linear", "Conv3d", "WanAttention", "WanTransformerBlock", "WanTransformer3DModel")


@pytest.mark.parametrize("model", MODELS)
def test_parameter_count_equals_diffusers_model(model: str) -> None:
    spec, workload = spec_and_workload(model, "w001-tiny")
    real = build_diffusers_dit(spec)
    measured = sum(p.numel() for p in real.parameters())
    assert measured == PARAMS[model]
    assert analyze(spec, workload).per_forward.params == measured
    analytic = {r.module_id: r.cost.params for r in walk(analyze(spec, workload).forward.tree)}
    for name, module in real.named_modules():
        if type(module).__name__ in COMPARED_TYPES:
            own = sum(p.numel() for p in module.parameters())
            assert analytic[canonical_id(name)] == own, name


def measured_flops_by_module(model: str, workload: str) -> tuple[dict[str, int], object]:
    spec, wl = spec_and_workload(model, workload)
    real = build_diffusers_dit(spec, wl.dtype)
    analysis = analyze(spec, wl)
    inputs = diffusers_dit_inputs(spec, wl, analysis.geometry)
    counter = flop_counter_pass(real, inputs)
    root = type(real).__name__
    per_path = {
        key.removeprefix(root).removeprefix("."): sum(ops.values())
        for key, ops in counter.get_flop_counts().items()
    }
    measured = {"": counter.get_total_flops()}
    for name, module in real.named_modules():
        if name and type(module).__name__ in COMPARED_TYPES:
            measured[name] = per_path.get(name, 0)
    return measured, analysis


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("model", MODELS)
def test_tensor_flops_equal_flop_counter_per_module(model: str, workload: str) -> None:
    measured, analysis = measured_flops_by_module(model, workload)
    analytic = {r.module_id: r.cost.tensor_flops for r in walk(analysis.forward.tree)}  # type: ignore[attr-defined]
    assert analysis.per_forward.tensor_flops == measured[""]  # type: ignore[attr-defined]
    mismatched = {
        path: (analytic[canonical_id(path)], flops)
        for path, flops in measured.items()
        if analytic[canonical_id(path)] != flops
    }
    assert not mismatched


def test_wan_facts_reference_counts() -> None:
    """The three published reference counts (batch 1, 512 context, 81 frames)."""
    cases = {
        ("wan2.1-t2v-14b", "480p-81f"): 1_678_370_283_192_320,
        ("wan2.1-t2v-14b", "720p-81f"): 6_523_436_592_005_120,
        ("wan2.1-t2v-1.3b", "480p-81f"): 283_001_787_777_024,
    }
    for (model, workload), flops in cases.items():
        spec, wl = spec_and_workload(model, workload)
        assert analyze(spec, wl).per_forward.tensor_flops == flops


def test_a_wrong_rule_is_caught_by_the_cross_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """An FFN off by one row must not survive the comparison (the test can fail)."""
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import dense

    def off_by_one_row(**dims: object) -> object:
        if dims["out_features"] == 13824:  # the 14B FFN up-projection
            dims = {**dims, "tokens": int(dims["tokens"]) + 1}  # type: ignore[call-overload]
        return dense.linear(**dims)  # type: ignore[arg-type]

    monkeypatch.setitem(registry.RULES, "linear", off_by_one_row)
    measured, analysis = measured_flops_by_module("wan2.1-t2v-14b", "w001-tiny")
    analytic = {r.module_id: r.cost.tensor_flops for r in walk(analysis.forward.tree)}  # type: ignore[attr-defined]
    wrong = sorted(p for p, f in measured.items() if analytic[canonical_id(p)] != f)
    assert "blocks.0.ffn.net.0.proj" in wrong and "" in wrong
    assert "blocks.0.attn1.to_q" not in wrong
