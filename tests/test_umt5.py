"""The UMT5-XXL text encoder: analytic counts equal the real transformers module, per module."""

from __future__ import annotations

import collections

import attrs
import pytest

from ditmeter.compare.check import check_graph
from ditmeter.compare.gate import Verdict
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.builders import build_umt5_encoder, umt5_inputs
from ditmeter.models.wan21.names import UMT5_NAMES
from ditmeter.models.wan21.node_rules import UMT5_RULES
from ditmeter.models.wan21.spec import UMT5Spec
from ditmeter.models.wan21.umt5 import build_umt5
from ditmeter.tracer.capture import capture_forward
from ditmeter.validate import parse

SPEC = load([]).model.text_encoder


@pytest.fixture(scope="module")
def encoder() -> object:
    return build_umt5_encoder(SPEC)


def _gate(encoder: object, batch: int, tokens: int, tolerance: float = 0.0) -> Verdict:
    graph = capture_forward(encoder, umt5_inputs(batch, tokens))  # type: ignore[arg-type]
    tree = build_umt5(SPEC, batch, tokens)
    return check_graph(graph, tree, UMT5_NAMES, UMT5_RULES, tolerance, "text_encoder")[1]


def test_parameters_equal_the_real_module(encoder: object) -> None:
    real = sum(p.numel() for p in encoder.parameters())  # type: ignore[attr-defined]
    assert build_umt5(SPEC, 1, 512).total.params == real == 5_680_910_336


@pytest.mark.parametrize(("batch", "tokens"), [(1, 512), (2, 512), (1, 77)])
def test_every_module_agrees_exactly_with_flop_counter(encoder: object, batch: int, tokens: int) -> None:
    v = _gate(encoder, batch, tokens)
    assert v.passed and v.max_error == 0.0
    assert v.coverage.nodes["unmatched"] == 0 and v.coverage.flops["zero"] == 0
    compared = collections.Counter(c.module_id.split(".")[-1] for c in v.checks if c.kind == "leaf")
    assert compared["attn_core"] == compared["q"] == compared["fc2"] == 24


def test_the_total_by_hand() -> None:
    """24 × (q, k, v, o + QKᵀ and PV + wi_0, wi_1, wo) at 512 tokens."""
    per_block = 4 * 2 * 512 * 4096 * 4096 + 2 * 2 * 64 * 512 * 512 * 64 + 3 * 2 * 512 * 4096 * 10240
    assert build_umt5(SPEC, 1, 512).total.tensor_flops == 24 * per_block == 4_844_723_109_888


def test_a_wrong_rule_fails_the_gate(encoder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from ditmeter.analytic import registry
    from ditmeter.analytic.rules import attention

    def half_heads(**dims: object) -> object:
        return attention.attention_core(**{**dims, "heads": int(dims["heads"]) // 2})  # type: ignore[arg-type, call-overload]

    monkeypatch.setitem(registry.RULES, "attention_core", half_heads)
    v = _gate(encoder, 1, 77, tolerance=0.05)
    assert not v.passed
    failed = {c.module_id for c in v.failures}
    assert failed >= {"text_encoder.blocks.0.attn.attn_core", "text_encoder.blocks.23.attn.attn_core"}


def test_a_bad_text_encoder_config_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse(UMT5Spec, {**attrs.asdict(SPEC), "d_ff": 0}, "model.text_encoder")
    assert err.value.field == "model.text_encoder.d_ff"
