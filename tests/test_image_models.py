"""I2V-14B and FLF2V-14B DiTs: parameters and every module's FLOPs equal the diffusers models'."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import analyze

from ditmeter.commands.trace import trace
from ditmeter.config import load
from ditmeter.models.wan21.builders import build_diffusers_dit

IMAGE_MODELS = ("wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p", "wan2.1-flf2v-14b-720p")


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_parameters_equal_the_diffusers_model(model: str) -> None:
    cfg = load([f"model={model}", "workload=w001-tiny"])
    real = sum(p.numel() for p in build_diffusers_dit(cfg.model, "bf16").parameters())
    t2v = load(["model=wan2.1-t2v-14b", "workload=w001-tiny"])
    # by hand over T2V-14B: 20 more input channels, the image MLP, k_img, v_img, norm_k_img per block
    extra = 20 * 4 * 5120 + (2 * 1280 + 1280 * 1280 + 1280 + 1280 * 5120 + 5120 + 2 * 5120)
    extra += 40 * (2 * (5120 * 5120 + 5120) + 5120)
    if model.startswith("wan2.1-flf2v"):
        extra += 514 * 1280  # the learned position table
    assert analyze(cfg.model, cfg.workload).per_forward.params == real
    assert real == analyze(t2v.model, t2v.workload).per_forward.params + extra


@pytest.mark.parametrize(
    ("model", "workload"),
    [
        ("wan2.1-i2v-14b-480p", "w001-tiny"),
        ("wan2.1-i2v-14b-480p", "480p-81f"),
        ("wan2.1-i2v-14b-720p", "720p-81f"),
        ("wan2.1-flf2v-14b-720p", "w001-tiny"),
        ("wan2.1-flf2v-14b-720p", "720p-81f"),
    ],
)
def test_the_gate_is_exact(model: str, workload: str, tmp_path: Path) -> None:
    v = trace(load([f"model={model}", f"workload={workload}", f"output_root={tmp_path}"])).verdict
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0
    compared = {c.module_id for c in v.checks}
    assert {
        "dit.img_emb.proj.1",
        "dit.blocks.39.cross_attn.k_img",
        "dit.blocks.0.cross_attn.attn_core",
    } <= compared


def test_image_attention_by_hand() -> None:
    """I2V cross-attention at 480p-81f: text (512) and image (257) cores over 32,760 queries."""
    cfg = load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f"])
    a = analyze(cfg.model, cfg.workload)
    t2v = load(["model=wan2.1-t2v-14b", "workload=480p-81f"])
    base = analyze(t2v.model, t2v.workload)
    tokens = 21 * 30 * 52  # (81-1)/4+1 latent frames, 480/16 and 832/16 patches
    per_block = 4 * 40 * tokens * 257 * 128 + 2 * (2 * 257 * 5120 * 5120)  # image core + k_img, v_img
    mlp = 2 * 257 * 1280 * 1280 + 2 * 257 * 1280 * 5120
    patch = 2 * tokens * 5120 * (20 * 4)  # 20 more input channels × the 1·2·2 patch
    assert a.per_forward.tensor_flops - base.per_forward.tensor_flops == 40 * per_block + mlp + patch


def test_release_default_steps() -> None:
    assert load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f"]).workload.num_inference_steps == 40
    assert load(["model=wan2.1-t2v-14b", "workload=480p-81f"]).workload.num_inference_steps == 50
    assert load(["model=wan2.1-i2v-14b-480p", "workload=w001-tiny"]).workload.num_inference_steps == 1
