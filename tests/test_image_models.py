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
    cfg = load([f"model={model}", "workload=w001-tiny", "pipeline=diffusers"])
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
    # the official FLF2V code runs 81 frames only: the tiny workload is the diffusers pipeline's
    pipeline = "diffusers" if (model, workload) == ("wan2.1-flf2v-14b-720p", "w001-tiny") else "official"
    cfg = load([f"model={model}", f"workload={workload}", f"output_root={tmp_path}", f"pipeline={pipeline}"])
    v = trace(cfg).verdict
    assert v.passed and v.max_error == 0.0 and v.coverage.nodes["unmatched"] == 0
    compared = {c.module_id for c in v.checks}
    assert {
        "dit.img_emb.proj.1",
        "dit.blocks.39.cross_attn.k_img",
        "dit.blocks.0.cross_attn.attn_core",
    } <= compared


def test_image_attention_by_hand() -> None:
    """I2V cross-attention at 480p-81f: text (512) and image (257) cores over 32,760 queries."""
    cfg = load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f", "pipeline=diffusers"])
    a = analyze(cfg.model, cfg.workload)
    t2v = load(["model=wan2.1-t2v-14b", "workload=480p-81f", "pipeline=diffusers"])
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


def test_the_official_i2v_480p_forward() -> None:
    """generate.py sizes I2V from max_area = 480·832 and the image's aspect with a float square root:
    lat_h = 58, so 464×832 and 21 × 29 × 52 = 31,668 tokens (diffusers takes 480×832: 32,760)."""
    official = load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f"])
    g = official.geometry
    assert (g.latent_height, g.latent_width, g.tokens) == (58, 104, 31_668) and 21 * 29 * 52 == 31_668
    assert [(a.field, a.requested, a.effective) for a in g.adjustments] == [("height", 480, 464)]
    a = analyze(official.model, official.workload)
    assert a.per_forward.tensor_flops == 1_601_943_976_673_280
    assert a.forwards_per_video == 80  # 40 steps × 2
    diffusers = load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f", "pipeline=diffusers"])
    assert diffusers.geometry.tokens == 32_760


def test_official_flf2v_runs_81_frames_only(tmp_path: Path) -> None:
    from ditmeter.cli import main

    argv = ["report", "model=wan2.1-flf2v-14b-720p", "workload=w001-tiny", f"output_root={tmp_path}"]
    assert main(argv) == 2
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    assert main([*argv, "pipeline=diffusers"]) == 0
