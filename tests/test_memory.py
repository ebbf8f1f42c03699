"""Peak memory per GPU: the DiT's live activations against the real module's tensor lifetimes,
the placement of every component through the video, the device's capacity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ditmeter.cli import main
from ditmeter.commands.trace import trace
from ditmeter.config import load
from ditmeter.tracer.memory import LiveBytes, peak_live_bytes


def test_live_bytes_by_hand() -> None:
    """Linear 1024→4096, GELU, Linear 4096→1024 on 1024 fp32 rows: the GELU runs while the first
    output (16 MiB) is alive, so 32 MiB at once; at the end only the 4 MiB output is alive."""
    x = torch.empty(1024, 1024, device="meta")
    up, down = torch.nn.Linear(1024, 4096, device="meta"), torch.nn.Linear(4096, 1024, device="meta")
    mode = LiveBytes()
    with torch.no_grad(), mode:
        y = down(torch.nn.functional.gelu(up(x)))
    assert mode.peak == 2 * 1024 * 4096 * 4 and mode.live == 1024 * 1024 * 4
    del y


@pytest.mark.parametrize(
    ("model", "workload", "overrides", "within"),
    [
        ("wan2.1-t2v-1.3b", "480p-81f", (), 0.0),
        ("wan2.1-t2v-1.3b", "w001-tiny", ("workload.num_frames=1",), 0.0),  # 256 tokens < 512 context
        ("wan2.1-t2v-14b", "720p-81f", (), 0.0),
        ("wan2.1-t2v-1.3b", "w002-512p", ("workload.batch_size=2", "workload.dtype=fp16"), 0.0),
        ("wan2.1-i2v-14b-480p", "480p-81f", (), 0.0),
        ("wan2.1-flf2v-14b-720p", "w002-512p", (), 0.0),
        ("wan2.1-flf2v-14b-720p", "w001-tiny", ("workload.num_frames=1",), 0.0),  # the image K norm
    ],
)
def test_dit_activations_equal_the_real_modules_tensor_lifetimes(
    model: str, workload: str, overrides: tuple[str, ...], within: float
) -> None:
    """One block is enough: every block holds the same live set; the peak is inside one."""
    cfg = load(
        [f"model={model}", f"workload={workload}", "pipeline=diffusers", "model.num_layers=1", *overrides]
    )
    analysis = cfg.family.analyze(cfg.model, cfg.workload, ("dit",))
    module, inputs = cfg.family.references()["dit"].make(cfg.model, cfg.workload, cfg.geometry, "meta")
    measured = peak_live_bytes(module, inputs)
    expected = cfg.family.reference_memory(analysis)["dit"]
    assert expected == analysis.footprint.peak_activation_bytes  # diffusers: the reference's dtypes
    assert abs(expected - measured) <= within * measured


def test_official_residual_is_fp32() -> None:
    """Official: the same live set with a 4-byte residual stream (3 more [L, dim] copies at 2 bytes)."""
    official = load(["workload=480p-81f"])
    diffusers = load(["workload=480p-81f", "pipeline=diffusers"])
    fo = official.family.analyze(official.model, official.workload, ("dit",)).footprint
    fd = diffusers.family.analyze(diffusers.model, diffusers.workload, ("dit",)).footprint
    rows_dim = 32_760 * 5120
    assert fo.persistent_bytes - fd.persistent_bytes == 2 * rows_dim
    assert fo.stage_bytes["cross_attention"] - fd.stage_bytes["cross_attention"] == 2 * rows_dim


def test_a_wrong_memory_rule_fails_the_trace_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The qk-norm's three fp32 copies forgotten: the DiT's peak is off by far more than 5%."""
    from ditmeter.models.wan21 import memory

    cfg = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={tmp_path}"])
    right = trace(cfg).verdict
    assert right.passed and [c.module_id for c in right.memory] == ["text_encoder", "dit", "vae_decode"]
    assert all(c.rel_error == 0 for c in right.memory)
    original = memory.dit_footprint

    def no_qk_norm(*args: object, **kwargs: object) -> object:
        f = original(*args, **kwargs)  # type: ignore[arg-type]
        stages = {k: v // 2 for k, v in f.stage_bytes.items()}
        return type(f)(f.weights_by_dtype, f.persistent_bytes, stages)

    monkeypatch.setattr(memory, "dit_footprint", no_qk_norm)
    wrong = trace(load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"output_root={tmp_path}"])).verdict
    assert not wrong.passed and not wrong.failures  # FLOPs still exact
    assert [c.module_id for c in wrong.memory if not c.passed] == ["dit"]


def _timeline(*overrides: str) -> dict[str, set[str]]:
    cfg = load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f", *overrides])
    a = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
    return {p.stage: set(p.resident) for p in a.memory.phases}


def test_official_placement_with_offload() -> None:
    """generate.py on one GPU (image2video.py): the VAE and CLIP on the GPU from the start, the DiT
    built on the CPU and moved over for the steps, T5 only for its encode, CLIP back to the CPU after
    its encode, the DiT off before the VAE decode."""
    assert _timeline() == {
        "text_encoder": {"vae", "image_encoder", "text_encoder"},
        "image_encoder": {"vae", "image_encoder"},
        "vae_encode": {"vae"},
        "dit": {"dit", "vae"},
        "vae_decode": {"vae"},
    }
    without = _timeline("offload.model=false")
    assert without["text_encoder"] == without["vae_encode"] == {"vae", "image_encoder", "text_encoder"}
    assert without["dit"] == without["vae_decode"] == {"dit", "vae", "image_encoder", "text_encoder"}
    assert "text_encoder" not in set().union(*_timeline("offload.t5_cpu=true").values())
    # text2video.py moves the DiT to the GPU when the pipeline is built
    cfg = load(["workload=480p-81f"])
    a = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages, cfg.offload)
    assert {p.stage: set(p.resident) for p in a.memory.phases} == {
        "text_encoder": {"dit", "vae", "text_encoder"},
        "dit": {"dit", "vae"},
        "vae_decode": {"vae"},
    }


def test_diffusers_placement() -> None:
    every = {"dit", "vae", "image_encoder", "text_encoder"}
    assert set(map(frozenset, _timeline("pipeline=diffusers").values())) == {frozenset(every)}
    offloaded = _timeline("pipeline=diffusers", "offload.model=true")
    assert offloaded == {
        "text_encoder": {"text_encoder"},
        "image_encoder": {"image_encoder"},
        "vae_encode": {"vae"},
        "dit": {"dit"},
        "vae_decode": {"vae"},
    }


def test_report_json_peak_per_gpu_by_hand(tmp_path: Path) -> None:
    """T2V-14B official at 480p on an H100: the DiT's fp32 weights, the VAE and T5 set the peak at
    the text encode; the capacity is the driver's 81,559 MiB, not 80·10⁹ bytes."""
    argv = ["report", "workload=480p-81f", "device=h100-sxm", f"output_root={tmp_path}"]
    assert main(argv) == 0
    (run,) = tmp_path.iterdir()
    memory = json.loads(next(run.rglob("report.json")).read_text())["memory"]
    c = memory["components"]
    dit_params = 14_288_491_584
    assert c["dit"]["weights_by_dtype"] == {"fp32": 4 * dit_params}
    assert c["text_encoder"]["weights_by_dtype"] == {"bf16": 2 * 5_680_910_336}
    weights = sum(x["weight_bytes"] for x in c.values())
    umt5 = 260_046_848  # one 512-token encode (test_umt5_attention_by_hand)
    assert memory["peak_stage"] == "text_encoder" and memory["peak_live_bytes"] == weights + umt5
    assert memory["peak_per_gpu_bytes"] == weights + umt5 + 512 * 2**20
    assert memory["device_memory_bytes"] == 81_559 * 2**20 and memory["fits"] is True
    dit = next(p for p in memory["timeline"] if p["stage"] == "dit")
    assert dit["activation_bytes"] == memory["dit_activation"]["peak_bytes"] and dit["activation_modeled"]


@pytest.mark.parametrize(
    ("model", "overrides"),
    [
        ("wan2.1-t2v-14b", ()),
        ("wan2.1-t2v-14b", ("workload.batch_size=2",)),
        ("wan2.1-i2v-14b-480p", ()),  # official CLIP: 31 blocks, fp16, last hidden state only
        ("wan2.1-flf2v-14b-720p", ("pipeline=diffusers", "workload.batch_size=2")),  # every hidden state kept
    ],
)
def test_encoder_activations_equal_the_real_modules_tensor_lifetimes(
    model: str, overrides: tuple[str, ...]
) -> None:
    """UMT5 (eager attention: fp32 scores and a position bias per layer) and CLIP, exactly."""
    cfg = load([f"model={model}", "workload=w001-tiny", *overrides])
    analysis = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages)
    expected = cfg.family.reference_memory(analysis)
    encoders = [s for s in ("text_encoder", "image_encoder") if s in cfg.stages]
    for stage in encoders:
        module, inputs = cfg.family.references()[stage].make(cfg.model, cfg.workload, cfg.geometry, "meta")
        assert expected[stage] == peak_live_bytes(module, inputs), stage


def test_umt5_attention_by_hand() -> None:
    """One 512-token encode: 64 heads of 512² fp32 scores twice, the bf16 bias twice, the rest."""
    from ditmeter.models.wan21.memory import umt5_activation_bytes

    spec = load([]).model.text_encoder
    rows_d = 512 * 4096 * 2
    by_hand = 2 * rows_d + 4 * rows_d + 4 * 512 * 4096 * 4 + 2 * 512 * 512 * 64 * 2 + 2 * 64 * 512 * 512 * 4
    assert umt5_activation_bytes(spec, 1, 512) == by_hand == 260_046_848


@pytest.mark.parametrize(
    ("frames", "overrides"),
    [
        (1, ()),  # the first call only
        (5, ()),  # the second call: the first call's caches hold one frame
        (13, ()),
        (9, ("workload.batch_size=2",)),
        (9, ("workload.height=128", "workload.width=384")),
    ],
)
@pytest.mark.parametrize("stage", ["vae_encode", "vae_decode"])
def test_vae_activations_equal_the_real_modules_tensor_lifetimes(
    stage: str, frames: int, overrides: tuple[str, ...]
) -> None:
    """Chunk by chunk with every causal cache, the output so far and the padded conv input."""
    argv = ["model=wan2.1-i2v-14b-480p", "workload=w001-tiny", "pipeline=diffusers"]
    cfg = load([*argv, f"workload.num_frames={frames}", *overrides])
    analysis = cfg.family.analyze(cfg.model, cfg.workload, cfg.stages)
    module, inputs = cfg.family.references()[stage].make(cfg.model, cfg.workload, cfg.geometry, "meta")
    assert cfg.family.reference_memory(analysis)[stage] == peak_live_bytes(module, inputs)


def test_vae_decode_cache_by_hand() -> None:
    """One later call at 256² (latent 32²): 2 cached frames of every causal conv's input."""
    from ditmeter.models.wan21.vae_memory import _decoder_caches

    vae = load([]).model.vae
    caches, channels, height, width = _decoder_caches(vae, 32, 32)
    per_level = {
        (hh, ww): sum(ch for ch, h2, w2, _ in caches if (h2, w2) == (hh, ww)) for _, hh, ww, _ in caches
    }
    # conv_in 16 + mid 4×384 + up block 0 (6 convs + its time conv) × 384
    assert per_level[(32, 32)] == 16 + 4 * 384 + 7 * 384
    # up block 1: conv1 reads 192 (the upsampler halves channels), 5 convs + the time conv at 384
    assert per_level[(64, 64)] == 192 + 6 * 384
    assert per_level[(128, 128)] == 6 * 192  # up block 2: no time conv
    assert per_level[(256, 256)] == 5 * 96 and (channels, height, width) == (96, 256, 256)  # + the peak conv
