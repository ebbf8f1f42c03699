"""The rules' element counts and bytes, checked against what the traced ops record, leaf by leaf.

Every leaf of every stage (UMT5, CLIP, the Wan-VAE encode and decode, the DiT with and without
image conditioning) at two workloads: the CUDA-core element counts agree exactly; the fused-ideal
bytes in and out agree exactly except where a listed convention says why not.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ditmeter.analytic.tree import ModuleRow
from ditmeter.compare.check import map_graph
from ditmeter.compare.leaf_checks import (
    BYTE_CONVENTIONS,
    Disagreement,
    disagreements,
    measure_leaves,
    unexplained,
)
from ditmeter.config import load
from ditmeter.tracer.capture import capture_forward

#: (model, workload, overrides): FLF2V covers every stage (two images, the position table);
#: w002-512p adds several VAE calls per run and, for FLF2V, a batch of 2.
CASES = [
    ("wan2.1-flf2v-14b-720p", "w001-tiny", ("model.num_layers=2",)),
    ("wan2.1-flf2v-14b-720p", "w002-512p", ("model.num_layers=2", "workload.batch_size=2")),
    ("wan2.1-t2v-1.3b", "w001-tiny", ()),
    ("wan2.1-t2v-1.3b", "w002-512p", ()),
]
BYTES = ("bytes_read", "bytes_written")


def _measured(
    model: str, workload: str, overrides: tuple[str, ...]
) -> list[tuple[str, list[ModuleRow], Any]]:
    """(stage, its module rows, what its traced ops record per leaf) for every stage of the model."""
    # the traced modules run in the diffusers pipeline's dtypes (the official DiT holds fp32 weights)
    cfg = load([f"model={model}", f"workload={workload}", "pipeline=diffusers", *overrides])
    analysis = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages)
    refs = cfg.family.references()
    out = []
    for stage in analysis.stages:
        ref = refs[stage.name]
        module, inputs = ref.make(cfg.model, cfg.workload, analysis.geometry, "meta")
        graph = capture_forward(module, inputs)
        rows = stage.rows()
        nodes = map_graph(graph, rows, ref.names, ref.rules, stage=stage.name)
        out.append((stage.name, rows, measure_leaves(graph, list(nodes["leaf_id"]), list(nodes["rule"]))))
    return out


@pytest.fixture(scope="module")
def measured() -> dict[tuple[str, str], list[tuple[str, list[ModuleRow], Any]]]:
    return {(m, w): _measured(m, w, o) for m, w, o in CASES}


def _all(measured: dict[Any, Any], fields: tuple[str, ...]) -> list[Disagreement]:
    return [d for runs in measured.values() for _, rows, m in runs for d in disagreements(rows, m, fields)]


def test_every_stage_was_measured(measured: dict[Any, Any]) -> None:
    stages = {stage for runs in measured.values() for stage, _, _ in runs}
    assert stages == {"text_encoder", "image_encoder", "vae_encode", "dit", "vae_decode"}


def test_element_counts_agree_exactly(measured: dict[Any, Any]) -> None:
    """Norm inputs, softmax scores, activation inputs, RoPE halves, modulated and gated tensors,
    bias outputs: the rule's count equals the traced ops' elements for every leaf."""
    assert _all(measured, ("elements",)) == []
    counted = {
        r.rule
        for runs in measured.values()
        for _, rows, _ in runs
        for r in rows
        if r.kind == "leaf" and r.cost.elements
    }
    assert counted >= {
        "layer_norm",
        "rms_norm",
        "gelu_tanh",
        "gelu",
        "silu",
        "attention_core",
        "rope",
        "modulate",
        "gated_residual",
        "residual_add",
        "linear",
        "conv",
        "sinusoid",
    }


def test_bytes_agree_except_where_a_listed_convention_says_why(measured: dict[Any, Any]) -> None:
    found = _all(measured, BYTES)
    assert unexplained(found) == []
    leaves = {
        r.module_id for runs in measured.values() for _, rows, _ in runs for r in rows if r.kind == "leaf"
    }
    exact = leaves - {d.leaf for d in found}
    assert len(exact) > len(leaves) / 2  # most leaves' fused-ideal bytes are exactly the traced boundary


def test_every_listed_convention_still_applies(measured: dict[Any, Any]) -> None:
    """A convention that no leaf needs any more must be removed (the list cannot go stale)."""
    used = Counter(
        c.leaves for d in _all(measured, BYTES) for c in BYTE_CONVENTIONS if c.covers(d.leaf, d.field)
    )
    assert [c.leaves for c in BYTE_CONVENTIONS if not used[c.leaves]] == []


def test_a_wrong_element_count_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """An RMSNorm costed over one row too many: every RMSNorm leaf of every stage is named."""
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import elementwise

    def one_row_more(**dims: Any) -> Any:
        return elementwise.rms_norm(**{**dims, "rows": dims["rows"] + 1})

    monkeypatch.setitem(registry.RULES, "rms_norm", one_row_more)
    runs = _measured("wan2.1-t2v-1.3b", "w001-tiny", ())
    wrong = [d for _, rows, m in runs for d in disagreements(rows, m, ("elements",))]
    assert {d.rule for d in wrong} == {"rms_norm"}
    assert {
        "text_encoder.blocks.0.norm1",
        "dit.blocks.0.self_attn.norm_q",
        "vae_decode.decoder.norm_out",
    } <= {d.leaf for d in wrong}


def test_a_wrong_byte_count_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GELU that writes fp32 where the model writes bf16 is not one of the listed conventions."""
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import elementwise

    monkeypatch.setitem(
        registry.RULES, "gelu_tanh", lambda **d: elementwise.gelu_tanh(**{**d, "act_bytes": 4})
    )
    runs = _measured("wan2.1-t2v-1.3b", "w001-tiny", ())
    wrong = unexplained([d for _, rows, m in runs for d in disagreements(rows, m, BYTES)])
    assert {d.leaf for d in wrong} >= {"dit.blocks.0.ffn.1", "text_encoder.blocks.0.ffn.gate.1"}
