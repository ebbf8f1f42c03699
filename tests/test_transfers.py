"""Weights moved between host and GPU during one video (``offload.model``), by hand."""

from __future__ import annotations

import pytest

from ditmeter.analytic.transfer import PAGEABLE_COPY_GBPS
from ditmeter.commands.report import analyze
from ditmeter.config import load

T5_BF16 = 5_680_910_336 * 2  # UMT5-XXL encoder parameters (tests/test_umt5.py) in bf16
DIT_14B_FP32 = 14_288_491_584 * 4


def _moves(*overrides: str) -> list[tuple[str, str, int, str]]:
    cfg = load(list(overrides), "report")
    a = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
    return [(t.component, t.direction, t.bytes, t.before) for t in a.memory.transfers()]


def test_official_offload_moves_t5_in_and_out_and_the_dit_off_before_the_decode() -> None:
    """generate.py --offload_model: T5 (built on the CPU) to the GPU for the encode and back; the
    fp32 DiT (placed when the pipeline was built: loading, not the video) off before the decode."""
    moves = _moves("model=wan2.1-t2v-14b", "workload=720p-81f", "offload.model=true")
    assert moves == [
        ("text_encoder", "h2d", T5_BF16, "text_encoder"),
        ("text_encoder", "d2h", T5_BF16, "dit"),
        ("dit", "d2h", DIT_14B_FP32, "vae_decode"),
    ]
    assert _moves("model=wan2.1-t2v-14b", "workload=720p-81f", "offload.model=false") == moves[:1]
    assert _moves("model=wan2.1-t2v-14b", "workload=720p-81f", "offload.t5_cpu=true") == moves[2:]


def test_an_offload_transfer_on_the_h100_by_hand() -> None:
    """PCIe Gen5 (128 GB/s bidirectional datasheet figure): 30.4 GB/s host-to-device and 26.6 GB/s
    device-to-host for pageable copies; the offload phase is their sum, added to the video."""
    h2d, d2h, _ = PAGEABLE_COPY_GBPS[128]
    cfg = load(["model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm"], "report")
    _, view = analyze(cfg)
    p = view.prediction
    assert p is not None
    by_hand = T5_BF16 / (h2d * 1e9) + T5_BF16 / (d2h * 1e9) + DIT_14B_FP32 / (d2h * 1e9)
    assert p.transfer_s == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.3737 + 0.4271 + 2.1487, abs=1e-3)
    stages = sum(s for k, s in p.stage_seconds.items() if k != "offload")
    assert p.per_video_s == pytest.approx(stages + by_hand, rel=1e-12)


def test_wan22_swaps_its_experts_once_on_one_gpu() -> None:
    """One expert at a time (init_on_cpu): the high-noise one on for the first step, off at the
    boundary for the low-noise one, which goes off before the decode under --offload_model."""
    expert = 14_288_491_584 * 2  # bf16 under --convert_model_dtype
    moves = _moves("model=wan2.2-t2v-a14b", "workload=720p-81f", "offload.convert_model_dtype=true")
    dit = [(d, b) for c, d, b, _ in moves if c == "dit"]
    assert [d for d, _ in dit] == ["h2d", "d2h", "h2d", "d2h"]
    assert all(b == pytest.approx(expert, rel=0.01) for _, b in dit)


def test_diffusers_model_cpu_offload_moves_each_component_in_and_out() -> None:
    moves = _moves("model=wan2.1-t2v-1.3b", "workload=480p-81f", "pipeline=diffusers", "offload.model=true")
    assert [(c, d) for c, d, _, _ in moves] == [
        ("text_encoder", "h2d"),
        ("text_encoder", "d2h"),
        ("dit", "h2d"),
        ("dit", "d2h"),
        ("vae", "h2d"),
    ]
    assert _moves("model=wan2.1-t2v-1.3b", "workload=480p-81f", "pipeline=diffusers") == []
