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
    assert c.elements == 40 * 75600 * 75600  # the softmax runs over every score
    assert c.bytes_read == 3 * 75600 * 5120 * 2  # q, k, v once; no L×L matrix
    assert c.bytes_written == 75600 * 5120 * 2


def test_attention_core_cross_by_hand_and_by_torch() -> None:
    """1000 queries over 512 text keys, 2 samples × 12 heads of 128: per (sample, head) QKᵀ is a
    [1000, 128] × [128, 512] matmul, 131,072,000 FLOPs, and PV the same; 24 of each. torch's
    FlopCounterMode counts the same on an SDPA call of these shapes on meta (its math path: two bmm)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    c = attention.attention_core(batch=2, heads=12, q_tokens=1000, kv_tokens=512, head_dim=128, act_bytes=2)
    assert c.tensor_flops == 24 * 2 * 131_072_000 == 6_291_456_000
    q = torch.empty(2, 12, 1000, 128, device="meta", dtype=torch.bfloat16)
    kv = torch.empty(2, 12, 512, 128, device="meta", dtype=torch.bfloat16)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, kv, kv)
    assert counter.get_total_flops() == c.tensor_flops
    assert c.bytes_read == (1000 + 2 * 512) * 2 * 12 * 128 * 2  # q, k and v once


@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm(affine: bool) -> None:
    """10 rows of 64: 640 values normalised; γ and β are 2·64 weights when affine; fp32 out."""
    c = elementwise.layer_norm(rows=10, dim=64, affine=affine, in_bytes=2, out_bytes=4, weight_el_bytes=4)
    assert c.elements == 640
    assert c.params == (128 if affine else 0)
    assert c.bytes_written == 640 * 4
    assert c.bytes_read == 640 * 2 + (128 * 4 if affine else 0)
    assert c.tensor_flops == 0


def test_rms_norm_weight_spans_whole_dim() -> None:
    """Wan's q/k RMSNorm normalises all 40 heads together: one weight of 5120 per norm."""
    c = elementwise.rms_norm(rows=7, dim=5120, act_bytes=2, weight_el_bytes=2)
    assert (c.params, c.elements, c.weight_bytes) == (5120, 35_840, 10_240)


@pytest.mark.parametrize("fn", [elementwise.gelu_tanh, elementwise.gelu, elementwise.silu])
def test_activations_read_and_write_each_value_once(fn: object) -> None:
    c = fn(elements=1000, act_bytes=2)  # type: ignore[operator]
    assert c.elements == 1000 and c.tensor_flops == 0
    assert (c.bytes_read, c.bytes_written) == (2000, 2000)


def test_rope_rotates_q_and_k_and_reads_the_tables() -> None:
    """q and k of 100 rows × 40 heads × 128: 1,024,000 values; cos and sin of 100 × 128 fp32 per tensor."""
    c = elementwise.rope(tensors=2, rows=100, heads=40, head_dim=128, act_bytes=2, table_bytes=4)
    assert c.elements == 1_024_000
    assert c.bytes_read == 1_024_000 * 2 + 2 * 2 * 100 * 128 * 4
    assert c.bytes_written == 1_024_000 * 2


def test_modulation_is_per_sample() -> None:
    """The 6-vector table is (6, 5120) fp32 parameters; the sum with the time embedding is per sample."""
    c = elementwise.modulation_table(batch=3, vectors=6, dim=5120, table_el_bytes=4)
    assert (c.params, c.weight_bytes, c.elements) == (30_720, 122_880, 92_160)
    m = elementwise.modulate(batch=3, rows=300, dim=8, in_bytes=4, out_bytes=2)
    assert m.elements == 2400  # every token's values, not every sample's
    assert m.bytes_read == 2400 * 4 + 2 * 3 * 8 * 4  # x in fp32, shift and scale per sample


def test_residuals() -> None:
    g = elementwise.gated_residual(batch=1, rows=10, dim=8, act_bytes=2)
    assert (g.elements, g.bytes_read, g.bytes_written) == (80, 2 * 80 * 2 + 8 * 4, 160)
    r = elementwise.residual_add(elements=80, act_bytes=2)
    assert (r.elements, r.bytes_read, r.bytes_written) == (80, 320, 160)


def test_cuda_flops_are_the_documented_constant_per_element() -> None:
    """The per-element constants are a convention (docs/architecture.md lists them); the element
    counts they multiply are checked against the traced ops in test_leaf_checks.py."""
    ln = elementwise.layer_norm(rows=3, dim=4, affine=True, in_bytes=2, out_bytes=2, weight_el_bytes=2)
    assert ln.cuda_flops == ln.elements * (
        elementwise.LAYER_NORM_FLOPS_PER_ELEMENT + elementwise.LAYER_NORM_AFFINE_FLOPS_PER_ELEMENT
    )
    gelu = elementwise.gelu_tanh(elements=7, act_bytes=2)
    assert gelu.cuda_flops == gelu.elements * elementwise.GELU_TANH_FLOPS_PER_ELEMENT
    core = attention.attention_core(batch=1, heads=2, q_tokens=3, kv_tokens=5, head_dim=8, act_bytes=2)
    assert core.elements == 2 * 3 * 5 and core.cuda_flops == 30 * attention.SOFTMAX_FLOPS_PER_SCORE


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


def test_layout_dims_reach_the_eager_recipe_and_not_the_cost() -> None:
    """``layout_copy``'s kernel layout (a cache's clone, the upsampler's ``stack``, the output's
    per-call concatenations) stays on the leaf for its recipe and never changes the cost; an
    unknown dim is still refused by the rule."""
    from ditmeter.analytic.tree import rule_leaf

    plain = apply_rule("layout_copy", elements=1000, act_bytes=4)
    assert plain.bytes_read == plain.bytes_written == 4000
    assert apply_rule("layout_copy", elements=1000, act_bytes=4, stacked=True, chunks=3, chunk=7) == plain
    leaf = rule_leaf("up", "conv", "layout_copy", elements=1000, act_bytes=4, stacked=True)
    assert dict(leaf.dims)["stacked"] is True and leaf.cost == plain
    with pytest.raises(TypeError):
        apply_rule("layout_copy", elements=1000, act_bytes=4, stackd=True)
