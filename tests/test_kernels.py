"""Kernel efficiency and predicted time: interpolation by hand, the peak each dtype takes, the
attention kernel each pipeline runs, predicted >= roofline, and the calibration mechanism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from ditmeter.analytic.kernels import Curve, KernelTable
from ditmeter.analytic.timing import StageKernels, TimePlan, leaf_time
from ditmeter.analytic.tree import ModuleRow, rule_leaf
from ditmeter.catalog import kernel_table
from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError

H100 = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]).device
assert H100 is not None
HOPPER = kernel_table("hopper")
PREDICTED = TimePlan("predicted", HOPPER)


def _row(rule: str, **dims: int | bool) -> ModuleRow:
    leaf = rule_leaf("x", "ffn", rule, **dims)
    return ModuleRow("x", None, 0, "leaf", "ffn", rule, leaf.cost, 1, leaf.dims)


def test_a_curve_is_linear_in_log2_between_points_and_flat_beyond() -> None:
    c = Curve((512, 2048), (0.4, 0.6), "hand")
    # 1024 is halfway between 512 and 2048 in log2 (9 → 10 → 11)
    assert c.at(1024) == pytest.approx(0.5)
    assert c.at(724.077) == pytest.approx(0.4 + 0.2 * (math.log2(724.077) - 9) / 2)
    assert (c.at(100), c.at(512), c.at(2048), c.at(1e9)) == (0.4, 0.4, 0.6, 0.6)


def test_the_hopper_fa3_curve_between_two_published_points() -> None:
    """FA3 forward, head dim 128, H100: 482 TFLOP/s at 512 tokens, 565 at 1k (FA3 paper, Fig. 5);
    at 724 tokens (log2 halfway) the fraction is the mean of the two, over the 989.4 peak."""
    assert HOPPER.attention_fraction("fa3", 128, 1024) == pytest.approx(565 / 989.4, abs=5e-4)
    halfway = 512 * math.sqrt(2)
    assert HOPPER.attention_fraction("fa3", 128, halfway) == pytest.approx((482 + 565) / 2 / 989.4, abs=5e-4)
    # head dim 96 is nearer 128 than 64 in log2; 80 is nearer 64
    assert HOPPER.attention_fraction("fa3", 96, 16384) == HOPPER.attention_fraction("fa3", 128, 16384)
    assert HOPPER.attention_fraction("fa3", 80, 16384) == HOPPER.attention_fraction("fa3", 64, 16384)


def test_a_big_gemm_by_hand_on_the_h100() -> None:
    """75,600 × 5120 × 5120 bf16: 3.96 TFLOP at 80.6% of 989.4 TFLOP/s (the sweep's plateau)."""
    row = _row(
        "linear",
        tokens=75_600,
        in_features=5120,
        out_features=5120,
        bias=False,
        act_bytes=2,
        weight_el_bytes=2,
    )
    t = leaf_time(row, H100, PREDICTED, StageKernels("bf16"))
    flops = 2 * 75_600 * 5120 * 5120
    assert t.compute_s == pytest.approx(flops / (989.4e12 * 0.806))
    assert t.roofline_s == pytest.approx(flops / 989.4e12)
    assert t.predicted_s == t.compute_s and t.bound == "compute"
    assert t.memory_s == pytest.approx(row.cost.moved_bytes / (3350e9 * 0.75))
    # the what-if: fp8 matmuls at 70.9% of the 1978.9 fp8 peak
    fp8 = leaf_time(row, H100, PREDICTED, StageKernels("bf16", gemm_dtype="fp8"))
    assert fp8.compute_s == pytest.approx(flops / (1978.9e12 * 0.709))


def test_fp32_convs_take_the_tf32_peak_and_fp32_matmuls_the_cuda_cores() -> None:
    conv = _row(
        "conv",
        outputs=4 * 90 * 160,
        in_channels=384,
        out_channels=384,
        kernel_volume=27,
        inputs=6 * 92 * 162,
        bias=True,
        act_bytes=4,
        weight_el_bytes=4,
    )
    t = leaf_time(conv, H100, PREDICTED, StageKernels("fp32"))
    call = 2 * 4 * 90 * 160 * 384 * 384 * 27
    rate = 494.7e12 * HOPPER.conv_fraction("fp32", call)
    assert t.compute_s == pytest.approx(conv.cost.tensor_flops / rate + conv.cost.cuda_flops / 66.9e12)
    linear = _row(
        "linear", tokens=257, in_features=1280, out_features=1280, bias=True, act_bytes=4, weight_el_bytes=4
    )
    lt = leaf_time(linear, H100, PREDICTED, StageKernels("fp32"))
    call = 2 * 257 * 1280 * 1280
    expected = linear.cost.tensor_flops / (66.9e12 * HOPPER.gemm_fraction("fp32", call))
    assert lt.compute_s == pytest.approx(expected + linear.cost.cuda_flops / 66.9e12)


def _time(overrides: list[str]) -> dict:
    _, view = analyze(load(["model=wan2.1-t2v-14b", "workload=720p-81f", *overrides], "report"))
    assert view.prediction is not None
    return {"p": view.prediction}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # the official flash_attention: FA2, what requirements.txt installs; FA3 where built and asked for
        (["device=h100-sxm"], {"dit": "fa2", "text_encoder": "sdpa_math", "vae_decode": "sdpa_math"}),
        (["device=h100-sxm", "attention=fa3"], {"dit": "fa3"}),
        (["device=a100-sxm-80gb"], {"dit": "fa2"}),
        (["device=h100-sxm", "pipeline=diffusers"], {"dit": "sdpa_flash"}),
        (["device=h100-sxm", "attention=cudnn"], {"dit": "cudnn"}),
        (["device=rtx4090"], {"dit": "fa2"}),
    ],
)
def test_each_pipeline_runs_its_own_attention_kernel(overrides: list[str], expected: dict[str, str]) -> None:
    backends = _time(overrides)["p"].backends
    assert {k: backends[k] for k in expected} == expected


def test_the_official_clip_is_pinned_to_fa2() -> None:
    _, view = analyze(load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f", "device=h100-sxm"], "report"))
    assert view.prediction is not None and view.prediction.backends["image_encoder"] == "fa2"


def test_fa3_beats_fa2_by_the_published_ratio_on_long_self_attention() -> None:
    """At 75,600 tokens (beyond 16k: the last published point) the self-attention core's time is
    FLOPs / (peak × fraction): FA2/FA3 time = 648/370 (FA3 paper, Fig. 5, head dim 128). Compiled:
    the leaf is the kernel alone (eager adds flash_attention's casts around it)."""
    fa3, fa2 = (
        _time(["device=h100-sxm", f"attention={b}", "time.execution=compiled"])["p"] for b in ("fa3", "fa2")
    )
    core = "dit.blocks.0.self_attn.attn_core"
    assert fa2.modules[core].predicted_s / fa3.modules[core].predicted_s == pytest.approx(648 / 370, rel=2e-3)
    assert fa2.per_video_s > fa3.per_video_s > fa3.roofline_video_s


@pytest.mark.parametrize(
    "overrides",
    [
        ["device=h100-sxm"],
        ["device=h20"],
        ["device=l40s", "pipeline=diffusers"],
        ["device=a100-sxm-80gb", "attention=sdpa_math"],
        ["device=h100-sxm", "gemm_dtype=fp8"],
    ],
)
def test_predicted_is_never_below_the_roofline(overrides: list[str]) -> None:
    _, view = analyze(load(["model=wan2.1-i2v-14b-480p", "workload=480p-81f", *overrides], "report"))
    p = view.prediction
    assert p is not None
    for module_id, t in p.modules.items():
        assert t.predicted_s >= t.roofline_s * (1 - 1e-12), module_id
    roofline = _time([*overrides[:1], "time.mode=roofline"])["p"]
    assert roofline.per_video_s <= _time(overrides[:1])["p"].per_video_s


def test_time_mode_roofline_is_the_lower_bound() -> None:
    p = _time(["device=h100-sxm", "time.mode=roofline"])["p"]
    assert all(t.predicted_s == t.roofline_s for t in p.modules.values())
    assert p.per_video_s == pytest.approx(p.roofline_video_s)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["device=a100-sxm-80gb", "attention=fa3"], "attention"),
        (["attention=fa2"], "attention"),
        (["device=a100-sxm-80gb", "gemm_dtype=fp8"], "gemm_dtype"),
        (["device=rtx4090d", "gemm_dtype=fp8"], "gemm_dtype"),  # no FP8 GEMM figure of a 4090 D
        (["device=h100-sxm", "time.mode=roofline", "attention=fa2"], "attention"),
        (["device=h100-sxm", "time.mode=fast"], "time.mode"),
        (["device=h100-sxm", "attention=flash"], "attention"),
    ],
)
def test_what_if_keys_are_checked_against_the_device(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(["model=wan2.1-t2v-1.3b", *overrides], "report")
    assert err.value.field == field


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t["gemm"]["bf16"].update(fraction=[0.1, 1.5, 0.5, 0.5]), "kernels.gemm.bf16.fraction"),
        (lambda t: t["gemm"]["bf16"].update(source=""), "kernels.gemm.bf16.source"),
        (lambda t: t["gemm"]["bf16"].update(flops=[4, 3, 2, 1]), "kernels.gemm.bf16.flops"),
        (lambda t: t["attention"].update(flash4={}), "kernels.attention.flash4"),
        (lambda t: t["host"].update(per_kernel_s=-1), "kernels.host.per_kernel_s"),
    ],
)
def test_a_bad_kernel_table_names_the_field(edit, field: str) -> None:  # type: ignore[no-untyped-def]
    raw = HOPPER.as_mapping()
    edit(raw)
    with pytest.raises(ConfigError) as err:
        KernelTable.from_mapping(raw)
    assert err.value.field == field


def test_every_device_has_a_kernel_table_with_sources() -> None:
    from ditmeter.catalog import choices

    for name in choices("device"):
        cfg = load(["model=wan2.1-t2v-1.3b", f"device={name}"], "report")
        assert cfg.time.kernels is not None, name
        assert all(s.strip() for s in cfg.time.kernels.sources.values()), name


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (fast) calibration of the 1.3B DiT's shapes on this CPU: few FLOPs per call."""
    out = tmp_path_factory.mktemp("cal")
    path = out / "cal.yaml"
    argv = [
        "calibrate",
        "model=wan2.1-t2v-1.3b",
        "workload=w001-tiny",
        "stages=[dit]",
        f"output_root={out}",
        f"calibrate.output={path}",
        "calibrate.max_flops=2e7",
        "calibrate.min_run_time=0.005",
    ]
    assert main(argv) == 0
    return path


def test_calibrate_writes_a_file_that_reads_back(calibration: Path) -> None:
    raw = yaml.safe_load(calibration.read_text())
    assert raw["kind"] == "ditmeter-calibration" and raw["machine"]["device_kind"] == "cpu"
    kinds = {p["kind"] for p in raw["points"]}
    assert {"gemm", "attention", "conv", "elementwise", "copy", "host"} <= kinds
    # the model's own shapes: the 1.3B's FFN (1536 → 8960) is among the GEMMs measured
    assert any(p["shape"].endswith("x1536x8960") for p in raw["points"] if p["kind"] == "gemm")
    from ditmeter.analytic.calibration import read_calibration

    device, table = read_calibration(calibration)
    assert device.name == "cpu" and table.host.overlapped is False
    assert set(table.attention) == {"sdpa_flash"} and "bf16" in table.gemm
    for curve in table.gemm.values():
        assert all(0 < f <= 1 for f in curve.fraction)


def test_predictions_follow_the_calibration_file(calibration: Path, tmp_path: Path) -> None:
    """report with calibration= predicts on the calibrated machine; halving the GEMM fractions in the
    file doubles the compute of every GEMM leaf."""
    base = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "stages=[dit]"]
    _, view = analyze(load([*base, f"calibration={calibration}"], "report"))
    p = view.prediction
    assert p is not None and p.device.name == "cpu" and p.plan.kernels is not None
    assert p.plan.kernels.name == "calibrated:cpu" and p.backends["dit"] == "sdpa_flash"
    raw = yaml.safe_load(calibration.read_text())
    for curve in raw["kernels"]["gemm"].values():
        curve["fraction"] = [f / 2 for f in curve["fraction"]]
    halved = tmp_path / "halved.yaml"
    halved.write_text(yaml.safe_dump(raw))
    _, view2 = analyze(load([*base, f"calibration={halved}"], "report"))
    assert view2.prediction is not None
    q = "dit.blocks.0.ffn.0"
    before, after = p.modules[q], view2.prediction.modules[q]
    row = next(r for r in view.analysis.forward.rows() if r.module_id == q)
    cuda = row.cost.cuda_flops / p.device.cuda_flop_per_s  # the bias add: not a GEMM
    assert after.compute_s == pytest.approx(2 * (before.compute_s - cuda) + cuda, rel=1e-9)
    assert view2.prediction.per_video_s > p.per_video_s


def test_a_calibration_for_another_device_or_a_bad_file_is_refused(calibration: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(["model=wan2.1-t2v-1.3b", "device=h100-sxm", f"calibration={calibration}"], "report")
    assert err.value.field == "calibration"
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(ConfigError) as err:
        load(["model=wan2.1-t2v-1.3b", f"calibration={bad}"], "report")
    assert err.value.field == "calibration"
    assert main(["report", "model=wan2.1-t2v-1.3b", f"calibration={tmp_path / 'missing.yaml'}"]) == 2


def test_a_calibrated_rule_fraction_changes_only_that_rules_leaves(calibration: Path, tmp_path: Path) -> None:
    """elementwise.rules.<rule> (the model's eager code, measured) replaces the table's element-wise
    share for that rule's fused leaves only (time.execution=compiled; eager times each kernel at the
    table's share); the sweep's vectorised timing agrees with the per-leaf one."""
    from ditmeter.commands.sweep import sweep

    raw = yaml.safe_load(calibration.read_text())
    assert "rms_norm" in raw["kernels"]["elementwise"]["rules"]  # measured by calibrate
    raw["kernels"]["elementwise"]["rules"]["rms_norm"]["fraction"] = [1e-3]
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(raw))
    base = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "stages=[dit]", "time.execution=compiled"]
    _, view = analyze(load([*base, f"calibration={edited}"], "report"))
    p = view.prediction
    assert p is not None and p.device.bytes_per_s > 0
    row = next(r for r in view.analysis.forward.rows() if r.module_id == "dit.blocks.0.self_attn.norm_q")
    assert p.modules[row.module_id].memory_s == pytest.approx(
        row.cost.moved_bytes / (p.device.bytes_per_s * 1e-3)
    )
    share = raw["kernels"]["elementwise"]["bandwidth_fraction"]
    add = next(r for r in view.analysis.forward.rows() if r.rule == "layer_norm")
    rules = raw["kernels"]["elementwise"]["rules"]
    expected = rules["layer_norm"]["fraction"][0] if "layer_norm" in rules else share
    assert p.modules[add.module_id].memory_s == pytest.approx(
        add.cost.moved_bytes / (p.device.bytes_per_s * expected)
    )
    result = sweep([*base, f"calibration={edited}", "workload.num_frames=[1,5]"])
    first = result.frame.iloc[0]
    assert first["per_video_s"] == pytest.approx(p.per_video_s, rel=1e-9)


def test_a_cpu_calibration_is_a_host(calibration: Path) -> None:
    """``host=<calibration.yaml>``: the text encoder under ``offload.t5_cpu`` is timed on the machine
    ``calibrate`` measured (its device record and measured curves), not on a catalog CPU."""
    from ditmeter.commands.report import analyze as report_analyze

    base = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm", "offload.t5_cpu=true"]
    cfg = load([*base, f"host={calibration}"], "report")
    assert cfg.time.host is not None and cfg.time.host.device.name == "cpu"
    _, here = report_analyze(cfg)
    _, server = report_analyze(load([*base, "host=epyc-9654"], "report"))
    assert here.prediction is not None and server.prediction is not None
    # this 2-core machine encodes far slower than a 96-core server
    encode = [v.prediction.modules["text_encoder"].predicted_s for v in (here, server)]
    assert encode[0] > encode[1]


def test_timing_arithmetic_is_per_field() -> None:
    """``Timing``'s ``+``, ``times`` and ``minus`` name every field by hand (a prediction adds
    ~10^5 of them): each equals the same sum over ``attrs.astuple``, and a field added to
    ``Timing`` fails here until the three pass it."""
    import attrs

    from ditmeter.analytic.timing import Timing

    assert [f.name for f in attrs.fields(Timing)] == [
        "compute_s", "memory_s", "overhead_s", "predicted_s", "roofline_s", "compute_bound_s",
        "memory_bound_s", "overhead_bound_s",
    ]  # fmt: skip
    a = Timing(*(0.1 * (i + 1) for i in range(8)))
    b = Timing(*(0.25 * (8 - i) for i in range(8)))
    pairs = list(zip(attrs.astuple(a), attrs.astuple(b), strict=True))
    assert attrs.astuple(a + b) == tuple(x + y for x, y in pairs)
    assert attrs.astuple(a.times(3)) == tuple(3 * x for x in attrs.astuple(a))
    assert attrs.astuple(b.minus(a)) == tuple(max(y - x, 0.0) for x, y in pairs)
    assert a.minus(b).compute_s == 0.0 and b.minus(a).compute_s == pytest.approx(2.0 - 0.1)  # by hand
