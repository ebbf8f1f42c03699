"""Rule tests: expected values are hand arithmetic, not the rule's own formula."""

from __future__ import annotations

import pytest

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.registry import RULES, ZERO_RULES, apply_rule, register_rule, register_zero
from ditmeter.analytic.rules import attention, dense, elementwise


def test_linear_720p_projection() -> None:
    c = dense.linear(
        tokens=75600, in_features=5120, out_features=5120, bias=True, act_bytes=2, weight_el_bytes=2
    )
    assert c.tensor_flops == 2 * 75600 * 5120 * 5120 == 3_963_617_280_000
    assert c.cuda_flops == 75600 * 5120
    assert c.params == 26_214_400 + 5120
    assert c.weight_bytes == 2 * 26_219_520
    assert c.bytes_read == 75600 * 5120 * 2 + 2 * 26_219_520
    assert c.bytes_written == c.activation_bytes == 75600 * 5120 * 2


def test_linear_without_bias_has_no_cuda_work() -> None:
    c = dense.linear(tokens=3, in_features=4, out_features=5, bias=False, act_bytes=4, weight_el_bytes=4)
    assert (c.tensor_flops, c.cuda_flops, c.params) == (120, 0, 20)


def test_patch_conv_480p() -> None:
    # 14B at 480p-81f: 32,760 patches of 16×1×2×2 → 5120 channels.
    c = dense.patch_conv3d(
        batch=1,
        in_channels=16,
        out_channels=5120,
        kernel_volume=4,
        patches=32760,
        bias=True,
        act_bytes=2,
        weight_el_bytes=2,
    )
    assert c.tensor_flops == 21_469_593_600  # FlopCounterMode's convolution count, by hand: 2·32760·5120·64
    assert c.params == 5120 * 64 + 5120


def test_attention_core_self_720p() -> None:
    c = attention.attention_core(
        batch=1, heads=40, q_tokens=75600, kv_tokens=75600, head_dim=128, act_bytes=2
    )
    assert c.tensor_flops == 2 * 2 * 40 * 75600 * 75600 * 128 == 117_050_572_800_000
    assert c.cuda_flops == 40 * 75600 * 75600 * 5
    assert c.bytes_read == 3 * 75600 * 5120 * 2  # q, k, v once; no L×L matrix
    assert c.bytes_written == 75600 * 5120 * 2


def test_attention_core_cross_is_linear_in_context() -> None:
    c = attention.attention_core(batch=2, heads=12, q_tokens=1000, kv_tokens=512, head_dim=128, act_bytes=2)
    assert c.tensor_flops == 4 * 2 * 12 * 1000 * 512 * 128


@pytest.mark.parametrize(
    ("affine", "per_element", "params"),
    [(False, 5, 0), (True, 7, 2 * 64)],
)
def test_layer_norm(affine: bool, per_element: int, params: int) -> None:
    c = elementwise.layer_norm(rows=10, dim=64, affine=affine, in_bytes=2, out_bytes=4, weight_el_bytes=4)
    assert c.cuda_flops == 10 * 64 * per_element
    assert c.params == params
    assert c.bytes_written == 10 * 64 * 4
    assert c.bytes_read == 10 * 64 * 2 + params * 4
    assert c.tensor_flops == 0


def test_rms_norm_weight_spans_whole_dim() -> None:
    c = elementwise.rms_norm(rows=7, dim=5120, act_bytes=2, weight_el_bytes=2)
    assert (c.params, c.cuda_flops) == (5120, 7 * 5120 * 4)


@pytest.mark.parametrize(
    ("fn", "per_element"),
    [(elementwise.gelu_tanh, 9), (elementwise.silu, 5)],
)
def test_activations(fn: object, per_element: int) -> None:
    c = fn(elements=1000, act_bytes=2)  # type: ignore[operator]
    assert c.cuda_flops == 1000 * per_element
    assert (c.bytes_read, c.bytes_written) == (2000, 2000)


def test_rope_q_and_k() -> None:
    c = elementwise.rope(tensors=2, rows=100, heads=40, head_dim=128, act_bytes=2, table_bytes=4)
    assert c.cuda_flops == 2 * 100 * 5120 * 3
    assert c.bytes_read == 2 * 100 * 5120 * 2 + 2 * 2 * 100 * 128 * 4


def test_modulation_is_per_sample() -> None:
    c = elementwise.modulation_table(batch=3, vectors=6, dim=5120, table_el_bytes=4)
    assert (c.params, c.cuda_flops, c.weight_bytes) == (30720, 3 * 30720, 4 * 30720)
    m = elementwise.modulate(batch=3, rows=300, dim=8, in_bytes=4, out_bytes=2)
    assert m.cuda_flops == 300 * 8 * 2 + 3 * 8


def test_residuals() -> None:
    g = elementwise.gated_residual(batch=1, rows=10, dim=8, act_bytes=2)
    assert (g.cuda_flops, g.bytes_read) == (160, 2 * 80 * 2 + 8 * 4)
    r = elementwise.residual_add(elements=80, act_bytes=2)
    assert (r.cuda_flops, r.bytes_read, r.bytes_written) == (80, 320, 160)


def test_registry_refuses_duplicates_and_knows_zero_from_unknown() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_rule("linear")(dense.linear)
    with pytest.raises(ValueError, match="already registered"):
        register_zero("dropout", "again")
    assert apply_rule("dropout") == Cost()
    assert "dropout" in ZERO_RULES and "dropout" not in RULES
    with pytest.raises(KeyError, match="no cost rule"):
        apply_rule("definitely_not_a_rule")


def test_rules_refuse_positional_arguments() -> None:
    with pytest.raises(TypeError):
        dense.linear(1, 2, 3, True, 2, 2)  # type: ignore[misc]


def test_cost_arithmetic_is_exact() -> None:
    big = Cost(tensor_flops=2**70 + 1)
    assert (big + big).tensor_flops == 2**71 + 2
    assert big.times(3).tensor_flops == 3 * (2**70 + 1)
    video = Cost(tensor_flops=5, params=7, weight_bytes=9).per_video(100)
    assert (video.tensor_flops, video.params, video.weight_bytes) == (500, 7, 9)
