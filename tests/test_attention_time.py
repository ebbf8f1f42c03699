"""The fused attention kernel's time at its edges: the head-dim limit of the fused kernels, and
I2V's two cross-attention key lengths each read at its own point of the curve.

Small hand-made kernel tables make the expected times hand arithmetic: a wrong limit (``>=``
256) or one key length for both I2V cores changes them.
"""

from __future__ import annotations

import attrs
import pytest
from conftest import analyze

from ditmeter.analytic.kernels import Curve
from ditmeter.analytic.timing import StageKernels, TimePlan, effective_backend, kernel_time, leaf_time
from ditmeter.analytic.tree import ModuleRow, rule_leaf
from ditmeter.catalog import kernel_table
from ditmeter.config import load

H100 = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]).device
assert H100 is not None
BF16_PEAK = 989.4e12  # H100 SXM dense bf16 (configs/device/h100-sxm.yaml)
HOPPER = kernel_table("hopper")


def _plan(head_dim: int, curve: Curve) -> TimePlan:
    return TimePlan("predicted", attrs.evolve(HOPPER, attention={"fa3": {head_dim: curve}}))


def _attention_row(head_dim: int) -> ModuleRow:
    leaf = rule_leaf(
        "x",
        "attn_core",
        "attention_core",
        batch=1,
        heads=8,
        q_tokens=4096,
        kv_tokens=4096,
        head_dim=head_dim,
        act_bytes=2,
    )
    return ModuleRow("x", None, 0, "leaf", "attn_core", "attention_core", leaf.cost, 1, leaf.dims)


def test_head_dim_256_runs_the_fused_kernel_and_257_the_math_path() -> None:
    """FlashAttention 2/3 and cuDNN take head dims up to 256 inclusive."""
    assert effective_backend("fa3", "bf16", 256) == "fa3"
    assert effective_backend("fa3", "bf16", 257) == "sdpa_math"
    row = _attention_row(256)
    plan = _plan(256, Curve((4096,), (0.5,), "hand"))
    t = leaf_time(row, H100, plan, StageKernels("bf16", attention="fa3"))
    flops = 4 * 8 * 4096 * 4096 * 256  # QKᵀ and PV
    assert row.cost.tensor_flops == flops
    assert t.compute_s == pytest.approx(flops / (BF16_PEAK * 0.5))


#: A table whose fraction differs between the two I2V key lengths: 0.2 at 257 image keys, 0.8 at
#: 512 text keys (linear in log2 between, flat beyond).
I2V_TABLE = Curve((257, 512), (0.2, 0.8), "hand")


def _i2v_cross_attention() -> tuple[ModuleRow, int]:
    """The I2V-14B DiT's cross-attention core at 480p-81f and its query tokens (the official
    max_area size 464×832: 21 × 29 × 52 = 31,668)."""
    cfg = load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f"])
    rows = analyze(cfg.model, cfg.workload).forward.rows()
    row = next(r for r in rows if r.module_id.endswith("blocks.0.cross_attn.attn_core"))
    return row, 21 * 29 * 52


def _i2v_expected_s(q_tokens: int) -> float:
    text = 4 * 40 * q_tokens * 512 * 128  # 40 heads of 128 over 512 text keys
    image = 4 * 40 * q_tokens * 257 * 128  # and over 257 CLIP keys
    return text / (BF16_PEAK * 0.8) + image / (BF16_PEAK * 0.2)


def test_i2v_text_and_image_cross_attention_each_at_its_key_length_compiled() -> None:
    row, q_tokens = _i2v_cross_attention()
    assert row.cost.tensor_flops == 4 * 40 * q_tokens * (512 + 257) * 128
    t = leaf_time(row, H100, _plan(128, I2V_TABLE), StageKernels("bf16", attention="fa3"))
    assert t.compute_s == pytest.approx(_i2v_expected_s(q_tokens))


def test_i2v_text_and_image_cross_attention_each_at_its_key_length_eager() -> None:
    """Eager: the official code's two flash_attention calls (image, then text), each timed at
    its own key length; the casts and offsets around them are memory kernels."""
    row, q_tokens = _i2v_cross_attention()
    sk = StageKernels("bf16", attention="fa3", flavour="official", stage="dit")
    calls = sk.calls(row)
    assert calls is not None
    plan = _plan(128, I2V_TABLE)
    attention = [(launch, dtype, n) for launch, dtype, n in calls if launch.rule == "attention_core"]
    assert len(attention) == 2
    seconds = sum(kernel_time(launch, H100, plan, sk, dtype).compute_s * n for launch, dtype, n in attention)
    assert seconds == pytest.approx(_i2v_expected_s(q_tokens))
