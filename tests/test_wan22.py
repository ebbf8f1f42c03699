"""Wan2.2 T2V-A14B (the first model of the wan2.2 family; docs/wan22.md): its experts, per-token
timesteps under the official code, placement and the trace gate on the real diffusers modules."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load

A14B = ["model=wan2.2-t2v-a14b", "workload=720p-81f", "device=h100-sxm"]


def _analysis(*extra: str):  # type: ignore[no-untyped-def]
    return analyze(load([*A14B, *extra], "report"))[0]


def test_one_expert_has_the_parameters_of_the_diffusers_module() -> None:
    from ditmeter.models.wan21.builders import build_diffusers_dit

    a = _analysis()
    module = build_diffusers_dit(a.model, "bf16")
    assert a.per_forward.params == sum(p.numel() for p in module.parameters()) == 14_288_491_584


@pytest.mark.parametrize("pipeline", ["official", "diffusers"])
def test_the_expert_split_comes_from_the_pipelines_scheduler(pipeline: str) -> None:
    """40 steps at shift 12, boundary 0.875: 26 high-noise and 14 low-noise steps (the release)."""
    a = _analysis(f"pipeline={pipeline}")
    assert any("runs 26 of 40 steps" in n and "low-noise one 14" in n for n in a.notes)
    assert a.forwards_per_video == 80


def test_official_timesteps_are_per_token_diffusers_per_sample() -> None:
    """Official: the time projection runs on all 75,600 tokens (2 × 75,600 × 5,120 × 30,720 FLOPs);
    diffusers without expand_timesteps runs Wan2.1-14B's forward exactly."""
    official = {r.module_id: r for r in _analysis().forward.rows()}
    assert official["dit.time_projection"].cost.tensor_flops == 2 * 75_600 * 5_120 * 30_720
    diffusers = _analysis("pipeline=diffusers").per_forward
    wan21 = analyze(load(["model=wan2.1-t2v-14b", "workload=720p-81f", "pipeline=diffusers"], "report"))[0]
    assert diffusers == wan21.per_forward


def test_one_h100_needs_convert_model_dtype_as_the_official_readme_runs_it() -> None:
    """The release README's single-GPU T2V-A14B command adds --offload_model True
    --convert_model_dtype: without the cast the fp32 expert (53 GiB) and the per-token fp32
    modulation do not fit 80 GB; with it they do. One expert on the GPU at a time (official);
    diffusers keeps both."""
    h100 = 81_559 * 2**20
    assert _analysis().memory.peak_per_gpu_bytes > h100
    converted = _analysis("offload.convert_model_dtype=true").memory
    assert converted.peak_per_gpu_bytes < h100
    dit = next(p for p in converted.phases if p.stage == "dit")
    assert set(dit.resident) == {"dit", "vae"}
    both = next(p for p in _analysis("pipeline=diffusers").memory.phases if p.stage == "dit")
    assert {"dit", "dit_2"} <= set(both.resident)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["model=wan2.1-t2v-14b", "offload.convert_model_dtype=true"], "offload.convert_model_dtype"),
        ([*A14B, "pipeline=diffusers", "offload.convert_model_dtype=true"], "offload.convert_model_dtype"),
    ],
)
def test_what_wan22_does_not_run_is_refused(args: list[str], field: str, tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", *args, f"output_root={tmp_path / 'out'}"]) == 2
    assert err.getvalue().startswith(f"ditmeter: error: {field}:")
    assert not (tmp_path / "out").exists()


def test_the_trace_gate_is_exact_with_per_token_timesteps(tmp_path: Path) -> None:
    """The diffusers DiT fed a timestep per token, as the official code feeds it: FLOPs per module
    and peak live activations of every stage exact."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["trace", "model=wan2.2-t2v-a14b", "workload=w001-tiny", f"output_root={tmp_path}"]) == 0
    (folder,) = tmp_path.glob("*/static_analysis/wan2_2")
    compare = json.loads((folder / "report.json").read_text())["compare"]
    assert compare["passed"] and compare["max_rel_error"] == 0
    assert compare["coverage"]["nodes"]["unmatched"] == 0
    assert {m["stage"]: m["rel_error"] for m in compare["memory"]} == {
        "text_encoder": 0.0,
        "dit": 0.0,
        "vae_decode": 0.0,
    }


# --- I2V-A14B and TI2V-5B -------------------------------------------------------------------


def test_i2v_a14b_has_no_clip_and_the_release_split() -> None:
    """In 36 channels (16 noise + 4 mask + 16 image latents), no CLIP branch, the image and zeros
    VAE-encoded; shift 5.0 and boundary 0.900 give 15 high-noise + 25 low-noise steps."""
    from ditmeter.models.wan21.builders import build_diffusers_dit

    cfg = load(["model=wan2.2-i2v-a14b", "workload=480p-81f"], "report")
    a = analyze(cfg)[0]
    assert cfg.family.available_stages(cfg.model) == ("text_encoder", "vae_encode", "dit", "vae_decode")
    module = build_diffusers_dit(a.model, "bf16")
    assert a.per_forward.params == sum(p.numel() for p in module.parameters()) == 14_288_901_184
    assert any("runs 15 of 40 steps" in n and "low-noise one 25" in n for n in a.notes)
    encode = next(
        s
        for s in analyze(load(["model=wan2.2-i2v-a14b", "workload=480p-81f", "stages=[vae_encode]"]))[
            0
        ].stages
        if s.name == "vae_encode"
    )
    assert encode.calls == 21  # the 81-frame [image, zeros] video: 1 + 80 / 4 encoder calls


def test_ti2v_5b_forward_equals_the_diffusers_dit_at_the_release_size(tmp_path: Path) -> None:
    """1280×704 × 121 frames, a timestep per token: 27,280 tokens; 4,999,787,712 parameters;
    520,654,782,726,144 FLOPs per forward in the traced diffusers DiT and in the cost tree."""
    argv = ["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f", "stages=[dit]", f"output_root={tmp_path}"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["trace", *argv]) == 0
    (folder,) = tmp_path.glob("*/static_analysis/wan2_2")
    report = json.loads((folder / "report.json").read_text())
    assert report["compare"]["passed"] and report["compare"]["max_rel_error"] == 0
    a = analyze(load(["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f"], "report"))[0]
    assert a.geometry.tokens == 31 * 22 * 40 == 27_280
    assert a.per_forward.params == 4_999_787_712
    assert a.per_forward.tensor_flops == 520_654_782_726_144


def test_ti2v_5b_i2v_encodes_the_image_alone_and_is_exact(tmp_path: Path) -> None:
    """Image to video: the Wan2.2 VAE encodes one frame (one encoder call), the DiT is the text
    to video one; every stage's FLOPs and peak live bytes equal the real modules."""
    with contextlib.redirect_stdout(io.StringIO()):
        argv = ["model=wan2.2-ti2v-5b-i2v", "workload=w001-tiny", f"output_root={tmp_path}"]
        assert main(["trace", *argv]) == 0
    (folder,) = tmp_path.glob("*/static_analysis/wan2_2")
    compare = json.loads((folder / "report.json").read_text())["compare"]
    assert compare["passed"] and compare["max_rel_error"] == 0
    assert compare["coverage"]["nodes"]["unmatched"] == 0
    assert {m["stage"]: m["rel_error"] for m in compare["memory"]} == dict.fromkeys(
        ("text_encoder", "vae_encode", "dit", "vae_decode"), 0.0
    )
    cfg = load(["model=wan2.2-ti2v-5b-i2v", "workload=ti2v-720p-121f", "stages=[vae_encode]"])
    encode = next(s for s in analyze(cfg)[0].stages if s.name == "vae_encode")
    assert encode.calls == 1 and encode.run == "the conditioning image"
    t2v = analyze(load(["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f"]))[0]
    assert analyze(cfg)[0].per_forward == t2v.per_forward


@pytest.mark.parametrize(
    ("size", "sized"),
    [
        ((704, 1280), (704, 1280)),
        ((720, 1280), (704, 1280)),  # 720 is no multiple of 32
        ((500, 500), (480, 512)),  # width first gives 512×480, height first 480×512: a tie, height first wins
    ],
)
def test_ti2v_image_size_is_best_output_size_by_hand(size: tuple[int, int], sized: tuple[int, int]) -> None:
    """textimage2video.py: the 32-pixel multiples within max_area = H×W nearest the image's aspect."""
    h, w = size
    g = load(["model=wan2.2-ti2v-5b-i2v", f"workload.height={h}", f"workload.width={w}"]).geometry
    assert (g.effective_height, g.effective_width) == sized


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["model=wan2.2-ti2v-5b-i2v", "model.image_latent=last_frame"], "model.image_latent"),
        (["model=wan2.2-i2v-a14b", "model.image_dim=1280"], "model.image_dim"),
        (["model=wan2.2-ti2v-5b", "model.vae.in_channels=3"], "model.vae.in_channels"),
        (["model=wan2.2-ti2v-5b", "workload.height=712", "pipeline=diffusers"], "workload.height"),
        (["model=wan2.2-ti2v-5b", "model.vae.num_res_blocks=1"], "model.vae.num_res_blocks"),
        (["model=wan2.2-ti2v-5b", "model.vae.is_residual=false"], "model.vae.is_residual"),
        (
            [
                "model=wan2.2-ti2v-5b",
                "model.vae.dim_mult=[1,2,4]",
                "model.vae.temperal_downsample=[false,true]",
            ],
            "model.vae.dim_mult",
        ),
        (["model=wan2.2-ti2v-5b", "model.vae_stride=[4,8,8]"], "model.vae_stride"),
        (["model=wan2.2-ti2v-5b", "model.z_dim=16"], "model.z_dim"),
    ],
)
def test_bad_wan22_model_keys_name_the_field(args: list[str], field: str, tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", *args, f"output_root={tmp_path / 'out'}"]) == 2
    assert err.getvalue().startswith(f"ditmeter: error: {field}:")
    assert not (tmp_path / "out").exists()


def test_diffusers_floors_ti2v_sizes_to_32_pixel_patches() -> None:
    """diffusers refuses only non-multiples of 16 and floors the rest to VAE stride × patch (32)
    with a warning: 720 runs as 704, and the output says so."""
    g = load(
        ["model=wan2.2-ti2v-5b", "workload=ti2v-720p-121f", "workload.height=720", "pipeline=diffusers"]
    ).geometry
    assert g.effective_height == 704
    assert any(a.field == "height" and a.effective == 704 for a in g.adjustments)
