"""The device catalog, the roofline by hand, the memory footprint against the real model, MFU."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MODELS, analyze, spec_and_workload
from hypothesis import given, settings
from hypothesis import strategies as st

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.device import NUMBER_KEYS, DeviceSpec
from ditmeter.analytic.registry import apply_rule
from ditmeter.analytic.timing import StageKernels, TimePlan, leaf_roofline, leaf_time
from ditmeter.analytic.tree import ModuleRow, rule_leaf
from ditmeter.catalog import choices, config_dir, kernel_table
from ditmeter.cli import main
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21 import WAN21

DEVICES = (
    "h100-sxm",
    "h100-pcie",
    "h800",
    "h200",
    "h20",
    "a100-sxm-80gb",
    "a800",
    "l40s",
    "rtx4090",
    "rtx5090",
    "b200",
    "gb200",
    "l20",
    "l40",
    "rtx4090d",
)


def _raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((config_dir() / "device" / f"{name}.yaml").read_text())
    return data


def test_the_catalog_has_every_device_the_issue_names() -> None:
    assert set(choices("device")) == set(DEVICES)


@pytest.mark.parametrize("name", DEVICES)
def test_every_entry_is_dense_positive_and_sourced(name: str) -> None:
    raw = _raw(name)
    d = DeviceSpec.from_mapping(raw)
    assert d.name == name
    for key in NUMBER_KEYS:
        assert getattr(d, key) > 0 and raw["sources"][key].strip(), key
    # dense = half the datasheet's sparse figure, for every dtype that has one
    for dtype in ("bf16", "fp16", "fp8"):
        dense, sparse = getattr(d, f"{dtype}_tflops"), getattr(d, f"{dtype}_sparse_tflops")
        if sparse is not None:
            assert dense == pytest.approx(sparse / 2, rel=0.02)
    assert d.bf16_tflops > d.fp32_tflops  # tensor cores beat the CUDA cores on every chip here
    assert (d.fp8_tflops is None) == name.startswith("a")  # Ampere has no FP8 tensor cores


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bf16_tflops": 1979}, "device.bf16_tflops"),  # the sparse headline copied as dense
        ({"fp8_tflops": 3958}, "device.fp8_tflops"),
        ({"int8_tops": 3958}, "device.int8_tops"),  # the INT8 sparse headline copied as dense
        ({"int8_tops": 989.5}, "device.int8_tops"),  # half the dense INT8 peak: a quarter of 3,958
        ({"memory_bandwidth_gbps": 0}, "device.memory_bandwidth_gbps"),
        ({"fp32_tflops": -1}, "device.fp32_tflops"),
        ({"memory_gb": None}, "device.memory_gb"),
        ({"efficiency": 1.5}, "device.efficiency"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    raw = {**_raw("h100-sxm"), **change}
    with pytest.raises(ConfigError) as err:
        DeviceSpec.from_mapping(raw)
    assert err.value.field == field


def test_a_number_without_a_source_is_refused() -> None:
    raw = _raw("l40s")
    raw["sources"] = {k: v for k, v in raw["sources"].items() if k != "memory_gb"}
    with pytest.raises(ConfigError, match="source"):
        DeviceSpec.from_mapping(raw)


H100 = DeviceSpec.from_mapping(_raw("h100-sxm"))


def test_roofline_of_a_matmul_bound_linear_by_hand() -> None:
    """q projection of 14B at 4096 tokens on H100 SXM: 2·4096·5120² FLOPs at 989.4 TFLOP/s."""
    cost = apply_rule(
        "linear", tokens=4096, in_features=5120, out_features=5120, bias=True, act_bytes=2, weight_el_bytes=2
    )
    r = leaf_roofline(cost, H100, "bf16")
    compute = 214_748_364_800 / 989.4e12 + 20_971_520 / 66.9e12  # matmul + bias adds on CUDA cores
    memory = (41_943_040 + 52_439_040 + 41_943_040) / 3.35e12  # x, W and b, y
    assert r.compute_s == pytest.approx(compute, rel=1e-12)
    assert r.memory_s == pytest.approx(memory, rel=1e-12)
    assert r.predicted_s == r.compute_s and r.bound == "compute"


def test_roofline_of_a_memory_bound_residual_by_hand() -> None:
    """x + y over 75,600 × 5120 bf16: reads 2 tensors, writes 1, one FLOP per element."""
    n = 75_600 * 5120
    r = leaf_roofline(apply_rule("residual_add", elements=n, act_bytes=2), H100, "bf16")
    assert r.memory_s == pytest.approx(6 * n / 3.35e12, rel=1e-12)
    assert r.compute_s == pytest.approx(n / 66.9e12, rel=1e-12)
    assert r.predicted_s == r.memory_s and r.bound == "memory"


def test_efficiency_scales_every_term() -> None:
    half = DeviceSpec.from_mapping({**_raw("h100-sxm"), "efficiency": 0.5})
    cost = apply_rule("residual_add", elements=1000, act_bytes=2)
    assert leaf_roofline(cost, half, "bf16").predicted_s == pytest.approx(
        2 * leaf_roofline(cost, H100, "bf16").predicted_s
    )


@settings(max_examples=25, deadline=None)
@given(frames=st.integers(1, 120), extra=st.integers(1, 40), device=st.sampled_from(DEVICES))
def test_predicted_time_grows_with_tokens_and_respects_the_flops_bound(
    frames: int, extra: int, device: str
) -> None:
    spec, wl = spec_and_workload("wan2.1-t2v-1.3b", "w002-512p", f"workload.num_frames={frames}")
    bigger = load(
        ["model=wan2.1-t2v-1.3b", "workload=w002-512p", f"workload.num_frames={frames + 4 * extra}"]
    )
    d = DeviceSpec.from_mapping(_raw(device))
    small, large = analyze(spec, wl), analyze(bigger.model, bigger.workload)
    t_small, t_large = small.prediction(d).per_forward, large.prediction(d).per_forward
    assert t_large.predicted_s > t_small.predicted_s
    for a, t in ((small, t_small), (large, t_large)):
        floor = a.per_forward.tensor_flops / (d.bf16_tflops * 1e12)
        assert t.predicted_s >= floor
        assert t.predicted_s >= a.per_forward.moved_bytes / (d.memory_bandwidth_gbps * 1e9)


def test_a100_has_no_fp8_and_fp32_uses_the_cuda_core_peak() -> None:
    a100 = DeviceSpec.from_mapping(_raw("a100-sxm-80gb"))
    with pytest.raises(ConfigError, match="fp8"):
        a100.tensor_flop_per_s("fp8")
    assert a100.tensor_flop_per_s("fp32") == 19.5e12


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("pipeline", "loaded"), [("official", "fp32"), ("diffusers", "bf16")])
def test_weights_by_dtype_equal_the_real_modules(model: str, pipeline: str, loaded: str) -> None:
    """The official checkpoints are fp32 and stay fp32 on the GPU; diffusers loads torch_dtype."""
    from ditmeter.models.wan21.builders import build_diffusers_dit

    spec, wl = spec_and_workload(model, "w001-tiny", f"pipeline={pipeline}")
    real: dict[str, int] = defaultdict(int)
    for p in build_diffusers_dit(spec, loaded).parameters():
        real["fp32" if p.dtype.itemsize == 4 else "bf16"] += p.numel() * p.element_size()
    assert analyze(spec, wl).footprint.weights_by_dtype == dict(real)


def test_mfu_by_hand() -> None:
    spec, wl = spec_and_workload("wan2.1-t2v-14b", "720p-81f")
    a = analyze(spec, wl)
    mfu = a.prediction(H100).mfu(a.per_video.tensor_flops, "bf16", 1800.0)
    assert mfu == pytest.approx(100 * 6_523_436_592_005_120 / (1800 * 989.4e12), rel=1e-12)


def test_report_with_a_device_writes_time_memory_and_plots(out_root: Path) -> None:
    argv = [
        "report",
        "workload=720p-81f",
        "device=h100-sxm",
        "attention=fa3",
        "measured_video_s=1800",
        f"output_root={out_root}",
    ]
    assert main(argv) == 0
    (run,) = list(out_root.iterdir())
    folder = run / "static_analysis" / "wan2_1"
    for png in ("roofline.png", "time_breakdown.png", "memory_timeline.png"):
        data = (folder / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    report = json.loads((folder / "report.json").read_text())
    t = report["time"]
    # per_video_s: every stage; the DiT's share is its 100 forwards
    assert t["forward_per_video_s"] == pytest.approx(100 * t["per_forward_s"]) and t["bound"] == "compute"
    assert t["per_video_s"] == pytest.approx(sum(s["per_video_s"] for s in t["stages"]))
    assert (
        t["per_video_s"] > t["forward_per_video_s"] and t["mode"] == "predicted" and t["kernels"] == "hopper"
    )
    assert t["attention"]["dit"] == "fa3"  # asked for: the official flash_attention takes it where built
    assert t["roofline_per_video_s"] < t["per_video_s"]
    assert t["mfu"] == pytest.approx(0.3663, abs=1e-4)
    assert sum(c["predicted_s"] for c in t["by_category"]) == pytest.approx(t["per_forward_s"])
    assert report["memory"]["fits"] is True and report["device"]["name"] == "h100-sxm"
    summary = (folder / "summary.md").read_text()
    assert (
        "## Time" in summary
        and "## Memory per GPU" in summary
        and "MFU 36.6%" in summary
        and "roofline.png" in summary
    )
    import pandas as pd

    modules = pd.read_parquet(folder / "modules.parquet")
    leaves = modules[(modules["kind"] == "leaf") & (modules["stage"] == "dit")]
    root = modules[modules["module_id"] == "dit"].iloc[0]
    assert math.isclose(root["predicted_s"], leaves["predicted_s"].sum(), rel_tol=1e-9)
    import pyarrow.parquet as pq

    meta = pq.read_schema(folder / "modules.parquet").metadata
    time_meta = json.loads(meta[b"ditmeter.time"])
    assert time_meta["forward_per_video_s"] == pytest.approx(100 * root["predicted_s"])
    assert time_meta["per_video_s"] == pytest.approx(t["per_video_s"])
    assert {"compute", "memory"} <= set(leaves["bound"]) <= {"compute", "memory", "overhead"}
    # predicted >= roofline for every module, and the share of the peaks is in (0, 1]
    timed = modules[modules["predicted_s"].notna()]
    assert (timed["predicted_s"] >= timed["roofline_s"] * (1 - 1e-12)).all()
    # a leaf whose eager code launches nothing of its own (T5's bias add: inside the attention
    # kernel; the VAE upsampler's permute + reshape at batch 1 without a time conv: a view) takes no
    # time and has no share of the peaks (null, never NaN printed)
    free = timed[timed["predicted_s"] == 0]
    assert set(free["rule"]) <= {"residual_add", "layout_copy"} and free["peak_fraction"].isna().all()
    views = free[free["rule"] == "layout_copy"]["module_id"]
    assert len(views) == 1 and views.str.endswith("up_blocks.2.upsamplers.0.reshuffle").all()
    timed = timed[timed["predicted_s"] > 0]
    assert ((timed["peak_fraction"] > 0) & (timed["peak_fraction"] <= 1 + 1e-12)).all()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["device=b300"], "device"),
        (["device=h100-sxm", "device.efficiency=0"], "device.efficiency"),
        (["measured_video_s=0"], "measured_video_s"),
        (["device=a100-sxm-80gb", "workload.dtype=fp16", "device.fp16_tflops=624"], "device.fp16_tflops"),
    ],
)
def test_bad_device_input_exits_2(
    out_root: Path, args: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "workload=w001-tiny", f"output_root={out_root}", *args]) == 2
    assert capsys.readouterr().err.startswith(f"ditmeter: error: {field}:")
    assert not out_root.exists() or list(out_root.iterdir()) == []


def test_other_component_weights() -> None:
    """UMT5-XXL encoder by hand: embeddings + 24 × (attention, bias, 2 norms, gated FFN) + final norm."""
    per_layer = 4 * 4096 * 4096 + 32 * 64 + 2 * 4096 + 2 * 4096 * 10240 + 10240 * 4096
    umt5 = 256384 * 4096 + 24 * per_layer + 4096
    assert umt5 == 5_680_910_336
    weights = WAN21.component_weights(load([]).model)
    assert weights["text_encoder"] == {"bf16": 2 * umt5}
    (vae_bytes,) = weights["vae"].values()
    assert list(weights["vae"]) == ["fp32"] and vae_bytes / 4 == pytest.approx(127e6, rel=0.01)  # WAN_FACTS


def test_a_bad_component_config_names_the_field(out_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "report",
        "workload=w001-tiny",
        "device=h100-sxm",
        "model.text_encoder.d_model=0",
        f"output_root={out_root}",
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("ditmeter: error: model.text_encoder.d_model:")


def test_image_models_count_the_image_encoder_too() -> None:
    weights = WAN21.component_weights(load(["model=wan2.1-i2v-14b-480p", "pipeline=diffusers"]).model)
    assert weights["image_encoder"] == {"fp32": 4 * 630_766_080}  # CLIPVisionModel parameters, fp32
    official = WAN21.component_weights(load(["model=wan2.1-i2v-14b-480p"]).model)
    # the whole XLM-RoBERTa CLIP (text tower too) as built on meta in tests/test_clip.py; 31 blocks run
    assert official["image_encoder"] == {"fp16": 2 * 1_193_014_785}
    assert set(weights) == {"text_encoder", "vae", "image_encoder"}


#: ``report`` of a small model on an H100 (the terminal and summary tests).
SMALL_ON_H100 = ["report", "model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]


def test_the_terminal_gives_the_whole_video_time_with_significant_digits(
    out_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The FLOPs line covers every stage, so the time does too; tiny times keep their digits."""
    from ditmeter.reports.format import percent, seconds

    argv = [*SMALL_ON_H100, f"output_root={out_root}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "per video, every stage" in x)
    assert all(stage in line for stage in ("text_encoder", "dit", "vae_decode"))
    assert " 0.0 s" not in out and "0.0 ms" not in out
    assert (percent(1, 100_000), percent(0, 5), percent(1, 3)) == ("0.001%", "0.0%", "33.3%")
    assert (seconds(0.00236), seconds(2.5e-5), seconds(764.3)) == (
        "0.00236 s",
        "0.025 ms",
        "764.3 s (12.7 min)",
    )


def test_fp32_convolutions_use_tf32_and_fp32_matmuls_do_not() -> None:
    """PyTorch's defaults: cudnn.allow_tf32 True (convs), cuda.matmul.allow_tf32 False (matmuls).
    A 3×3×3 conv and a linear of 1e12 FLOPs each on an H100 SXM: 1e12 / 494.7e12 vs 1e12 / 66.9e12."""
    import torch

    assert torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (H100.tf32_tflops, H100.fp32_tflops, H100.bf16_tflops) == (494.7, 66.9, 989.4)
    flops = Cost(tensor_flops=10**12)
    conv = leaf_roofline(flops, H100, "fp32", "conv")
    linear = leaf_roofline(flops, H100, "fp32", "linear")
    assert conv.compute_s == pytest.approx(1 / 494.7) and linear.compute_s == pytest.approx(1 / 66.9)
    assert leaf_roofline(flops, H100, "bf16", "conv").compute_s == pytest.approx(1 / 989.4)  # bf16: no change
    assert leaf_roofline(flops, H100, "fp32", "patch_conv3d").compute_s == conv.compute_s


def test_top_layers_by_time_cover_every_stage(out_root: Path) -> None:
    """1.3B at w001-tiny on an H100 (one step): the two text encodes outweigh the two DiT forwards,
    so their layers lead the table; a row's seconds are its leaves' predicted_s × their stage's runs
    per video."""
    argv = [*SMALL_ON_H100, f"output_root={out_root}"]
    assert main(argv) == 0
    (run,) = list(out_root.iterdir())
    folder = run / "static_analysis" / "wan2_1"
    summary = (folder / "summary.md").read_text()
    table = summary.split("Top 10 layers by predicted time per video, every stage")[1].split("\n\n")[1]
    first = table.splitlines()[2]  # header, rule, first row
    assert "`text_encoder." in table and "`dit." in table  # not the forward stage alone
    import pandas as pd

    modules = pd.read_parquet(folder / "modules.parquet")
    runs = {
        s["stage"]: s["runs_per_video"] for s in json.loads((folder / "report.json").read_text())["stages"]
    }
    leaves = modules[modules["kind"] == "leaf"]
    per_video = leaves["predicted_s"] * leaves["stage"].map(runs)
    layer = first.split("`")[1]  # text_encoder.blocks.*.attn.bias_add: 24 copies
    mine = per_video[leaves["module_id"].str.fullmatch(layer.replace(".", r"\.").replace("*", r"\d+"))].sum()
    assert f"{mine:.3g}" in first or f"{mine * 1e3:.3g} ms" in first


def _leaf(rule: str, **dims: int) -> ModuleRow:
    leaf = rule_leaf("x", "attention", rule, **dims)
    return ModuleRow("x", None, 0, "leaf", "attention", rule, leaf.cost, 1, leaf.dims)


def test_a_derived_kernel_table_keeps_its_own_entries_over_its_base() -> None:
    """``configs/kernels/h20.yaml`` is Hopper's table (``base: hopper``) with the attention the
    H20 measured: FA3 at head dim 128 reaches 126.2 of its 148 TFLOP/s, 0.853 (Hopper's curve
    gives 0.632 at the same 2048 tokens), flat. A self-attention core of 40 heads × 2048 tokens
    × 128 (4 × 40 × 2048² × 128 FLOPs) then takes 85,899,345,920 / (148e12 × 0.853) = 680 µs,
    beside 4 × 2048 × 5120 bf16 moved at 0.75 of 4 TB/s (28 µs) and a 5 µs launch (overlapped);
    its bf16 GEMMs are its own too (AIConfigurator's H20-3e rows: 139.4 of 148 TFLOP/s at 8192³,
    where Hopper's sweep gives 80.6%; its fp32 SGEMM sweep, zzc0721 issue #77), its convolutions still
    Hopper's."""
    h20, hopper = kernel_table("h20"), kernel_table("hopper")
    assert [h20.attention_fraction("fa3", 128, n) for n in (512, 2048, 75_600)] == [0.853] * 3
    assert h20.attention_fraction("fa2", 64, 2048) == 0.553
    assert h20.gemm_fraction("bf16", 2 * 75_600 * 5120 * 5120) == pytest.approx(139.4 / 148, abs=5e-4)
    assert hopper.gemm_fraction("bf16", 2 * 75_600 * 5120 * 5120) == 0.806
    assert h20.gemm_fraction("bf16", 2 * 2048**3) == pytest.approx(127.3 / 148, abs=5e-4)
    assert h20.gemm_fraction("fp32", 2 * 4096**3) == pytest.approx(30.27 / 44, abs=5e-4)  # issue #77
    assert h20.conv_fraction("fp32", 2 * 4096**3) == hopper.conv_fraction("fp32", 2 * 4096**3)
    core = _leaf(
        "attention_core", batch=1, heads=40, q_tokens=2048, kv_tokens=2048, head_dim=128, act_bytes=2
    )
    device = load(["model=wan2.1-t2v-1.3b", "device=h20"], "report").device
    assert device is not None
    t = leaf_time(core, device, TimePlan("predicted", h20), StageKernels("bf16", attention="fa3"))
    assert t.predicted_s == t.compute_s == pytest.approx(85_899_345_920 / (148e12 * 0.853), rel=1e-12)
    assert t.memory_s == pytest.approx(4 * 2048 * 5120 * 2 / (4000e9 * 0.75), rel=1e-12)


@pytest.mark.parametrize(
    ("elements", "expected_s", "bound"),
    [
        # 75,600 × 5120 bf16 x + y: 6 bytes an element at 0.75 of 3.35 TB/s (924 µs) beside a 5 µs launch
        (75_600 * 5120, 6 * 75_600 * 5120 / (3350e9 * 0.75), "memory"),
        # 1000 elements: 6 kB move in 2.4 ns; the launch (5 µs, overlapped with earlier kernels) is the time
        (1000, 5e-6, "overhead"),
    ],
)
def test_predicted_time_is_the_kernel_or_its_launch_by_hand(
    elements: int, expected_s: float, bound: str
) -> None:
    """A residual add on the H100 SXM with Hopper's table: the longer of the kernel's memory time and
    its launch (``host.overlapped``: launches run while earlier kernels do)."""
    row = _leaf("residual_add", elements=elements, act_bytes=2)
    t = leaf_time(row, H100, TimePlan("predicted", kernel_table("hopper")), StageKernels("bf16"))
    assert t.predicted_s == pytest.approx(expected_s, rel=1e-12) and t.bound == bound


@pytest.mark.parametrize(
    ("method", "said"),
    [
        ([], False),
        (["methods.cache=teacache", "methods.cache_skip=0.5"], True),
        (["methods.sparse=svg", "methods.sparse_density=0.3"], True),
    ],
)
def test_the_mfu_says_when_a_method_ran_fewer_flops_than_it_counts(
    method: list[str], said: bool, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """MFU counts the model's FLOPs of the whole dense, uncached video (by hand above); a step cache
    or sparse attention runs fewer, and the MFU line says so (the number is the same either way)."""
    argv = [
        "report",
        "workload=720p-81f",
        "device=h100-sxm",
        "measured_video_s=900",
        f"output_root={tmp_path}",
    ]
    assert main([*argv, *method]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "MFU" in x)
    assert "MFU 73.3%" in line  # 6.523e15 × 100 forwards (+ T5, VAE) / (900 s × 989.4e12)
    assert ("uncached" in line) == said


@pytest.mark.parametrize("text", ["evil\nsecond line", "red\x1b[31m"])
def test_a_device_name_from_a_file_is_one_printable_line(text: str) -> None:
    """A calibration file's display_name heads the terminal, summary.md and the plots: a line break
    or a terminal escape in it is refused naming the field."""
    from ditmeter.errors import ConfigError

    for field in ("name", "display_name"):
        with pytest.raises(ConfigError, match="must be one line of printable text") as err:
            DeviceSpec.from_mapping({**_raw("h100-sxm"), field: text})
        assert err.value.field == f"device.{field}"
