"""Quantized DiT matmuls (``gemm_dtype=``): each format's GEMM time from its kernel curve and its
kernels' bytes, by hand on one linear."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ditmeter.catalog import kernel_table
from ditmeter.commands.report import analyze
from ditmeter.config import load


def _ffn_gemm(device: str, gemm_dtype: str, workload: str = "480p-81f"):  # type: ignore[no-untyped-def]
    """The 1.3B's first FFN linear (32,760 tokens at 480p × 1536 → 8960) as ``gemm_dtype`` runs it:
    the analysis, the prediction, the stage's kernels, the leaf row and its eager calls."""
    from ditmeter.analytic.tree import walk

    model = ["model=wan2.1-t2v-1.3b", f"workload={workload}"]
    a, v = analyze(load([*model, f"device={device}", f"gemm_dtype={gemm_dtype}"], "report"))
    p = v.prediction
    sk = a.stage_kernels(a.forward, p.plan)
    row = next(r for r in walk(a.forward.tree, "dit") if r.module_id == "dit.blocks.0.ffn.0")
    calls = sk.calls(row)
    assert calls is not None
    return a, p, sk, row, calls


def _between(x: float, x0: float, f0: float, x1: float, f1: float) -> float:
    """A curve between two points: linear in log2(x)."""
    return f0 + (math.log2(x) - math.log2(x0)) / (math.log2(x1) - math.log2(x0)) * (f1 - f0)


def test_rtx4090_fp8_gemm_at_its_cublaslt_plateau_by_hand() -> None:
    """gemm_dtype=fp8 on an RTX 4090: the FFN GEMM (2 × 32,760 × 1536 × 8960 FLOPs) on the FP8
    FP32-accumulate peak 330.3 TFLOP/s (Ada whitepaper) at the rtx4090 table's fp8 curve, between
    its 1.374e11 (0.945) and 1.1e12 (1.0) points, plus its bias add (32,760 × 8960 FLOPs) on the
    82.6 TFLOP/s CUDA cores; compute-bound."""
    from ditmeter.analytic.timing import kernel_time

    a, p, sk, _, calls = _ffn_gemm("rtx4090", "fp8")
    gemm, dtype, count = next(c for c in calls if c[0].rule == "linear")
    flops = 2 * 32760 * 1536 * 8960
    assert a.geometry.tokens == 32760 and gemm.cost.tensor_flops == flops and count == 1
    fraction = _between(flops, 1.374e11, 0.945, 1.1e12, 1.0)
    hand = flops / (330.3e12 * fraction) + 32760 * 8960 / 82.6e12
    assert kernel_time(gemm, p.device, p.plan, sk, dtype).predicted_s == pytest.approx(hand, rel=1e-9)
    assert hand == pytest.approx(2.75e-3, rel=0.01)


def test_fp8_block_quantizes_per_1x128_tile_and_transposes_its_scales_by_hand() -> None:
    """gemm_dtype=fp8_block at the tiny workload (256 tokens) on an H100: before the FFN GEMM
    (1536 → 8960) sgl_per_token_group_quant_fp8 reads 256 × 1536 bf16 (2 bytes), writes them in FP8
    (1 byte) and one fp32 scale per 128 elements (12 per token); DeepGEMM then transposes those
    scales (read and written); each a memory-bound pass at 3350 GB/s × 0.75 (hopper.yaml), never
    under one 5 µs launch. The weight: one byte an element plus one fp32 per 128 × 128 block."""
    from ditmeter.analytic.gemm_formats import FORMATS
    from ditmeter.analytic.timing import kernel_time

    a, p, sk, _, calls = _ffn_gemm("h100-sxm", "fp8_block", "w001-tiny")
    assert a.geometry.tokens == 256
    (quant, q_dtype, _), (transpose, t_dtype, _) = calls[0], calls[1]
    assert quant.cost.moved_bytes == 256 * 1536 * 2 + 256 * 1536 + 256 * 12 * 4 == 1_191_936
    assert transpose.cost.moved_bytes == 2 * 256 * 12 * 4
    hand = max(1_191_936 / (3350e9 * 0.75), 5e-6)
    assert kernel_time(quant, p.device, p.plan, sk, q_dtype).predicted_s == pytest.approx(hand, rel=1e-9)
    assert kernel_time(transpose, p.device, p.plan, sk, t_dtype).predicted_s == pytest.approx(5e-6)
    assert FORMATS["fp8_block"].weight_bytes(1536, 8960) == 1536 * 8960 + 70 * 12 * 4


def test_fp8_tensor_clamps_and_casts_with_one_static_scale_by_hand() -> None:
    """gemm_dtype=fp8_tensor (ComfyUI's fp8 linear) at the tiny workload (256 tokens) on an H100:
    before the FFN GEMM (1536 → 8960) a one-element fp32 fill (its input scale), the bf16 activation
    clamped in place (256 × 1536 × 2 bytes read and written), then cast to FP8 (2 bytes read, 1
    written, no per-token scales); the GEMM reads the FP8 activation and weight and their two fp32
    scales, at the same ``fp8`` curve as the per-token format. The weight: one byte an element plus
    one fp32 scale for the whole tensor."""
    from ditmeter.analytic.gemm_formats import FORMATS
    from ditmeter.analytic.timing import kernel_time

    a, p, sk, _, calls = _ffn_gemm("h100-sxm", "fp8_tensor", "w001-tiny")
    assert a.geometry.tokens == 256
    (fill, _, _), (clamp, c_dtype, _), (cast, _, _) = calls[0], calls[1], calls[2]
    assert fill.cost.moved_bytes == 4
    assert clamp.cost.moved_bytes == 2 * 256 * 1536 * 2 == 1_572_864
    assert cast.cost.moved_bytes == 256 * 1536 * 2 + 256 * 1536 == 1_179_648
    hand = max(1_572_864 / (3350e9 * 0.75), 5e-6)
    assert kernel_time(clamp, p.device, p.plan, sk, c_dtype).predicted_s == pytest.approx(hand, rel=1e-9)
    assert FORMATS["fp8_tensor"].weight_bytes(1536, 8960) == 1536 * 8960 + 4
    gemm = next(c for c in calls if c[0].rule == "linear")[0]
    _, _, _, _, per_token = _ffn_gemm("h100-sxm", "fp8", "w001-tiny")
    twin = next(c for c in per_token if c[0].rule == "linear")[0]
    # the same GEMM but for the scales it reads: per tensor 4 + 4 bytes, per token 256 x 4 + 8960 x 4
    assert twin.cost.moved_bytes - gemm.cost.moved_bytes == (256 * 4 + 8960 * 4) - (4 + 4)
    assert gemm.cost.tensor_flops == twin.cost.tensor_flops


def test_int8_w8a8_on_an_a100_by_hand() -> None:
    """gemm_dtype=int8 (LightX2V's int8-sgl path) on an A100: before the FFN GEMM (1536 → 8960) one
    per-token quantize kernel (32,760 × 1536 bf16 read, INT8 written with one fp32 scale a token);
    the GEMM (2 × 32,760 × 1536 × 8960 = 9.02e11 FLOPs) on the 624 TOPS INT8 peak at the ampere
    table's int8 plateau, 0.804 (sglang PR #2752's M=2048 row: 501.4 TOPS, held beyond its 7.3e11
    FLOPs), plus its bias add on the CUDA cores; the weight one byte an element plus one fp32 scale
    an output channel."""
    from ditmeter.analytic.gemm_formats import FORMATS
    from ditmeter.analytic.timing import kernel_time

    _, p, sk, _, calls = _ffn_gemm("a100-sxm-80gb", "int8")
    quant, _, _ = calls[0]
    assert quant.cost.moved_bytes == 32760 * 1536 * 2 + 32760 * 1536 + 32760 * 4
    gemm, dtype, _ = next(c for c in calls if c[0].rule == "linear")
    flops = 2 * 32760 * 1536 * 8960
    assert gemm.cost.tensor_flops == flops and p.device.int8_tops == 624
    int8_peak = 624e12 * p.device.efficiency * p.device.clock
    plateau = 501544.442461 / 1000 * 43520 / 43531 / 624  # the PR's "GB/s" column: ops/s / 1e9
    assert plateau == pytest.approx(0.804, abs=5e-4)
    hand = flops / (int8_peak * 0.804) + 32760 * 8960 / p.device.cuda_flop_per_s
    assert kernel_time(gemm, p.device, p.plan, sk, dtype).predicted_s == pytest.approx(hand, rel=1e-9)
    assert FORMATS["int8"].weight_bytes(1536, 8960) == 1536 * 8960 + 8960 * 4


def test_fp8_block_gemm_at_deepgemms_h800_rows_by_hand() -> None:
    """gemm_dtype=fp8_block on an H100 SXM: the FFN GEMM at 480p (2 × 32,760 × 1536 × 8960 FLOPs)
    between DeepGEMM's M=4096 rows (N, K) = (24576, 1536) at 1212 and (7168, 16384) at 1520 TFLOPS
    of the H800's 1979 (0.612 and 0.768), on the H100's 1978.9 FP8 peak; its bias add on the
    66.9 TFLOP/s CUDA cores."""
    from ditmeter.analytic.timing import kernel_time

    _, p, sk, _, calls = _ffn_gemm("h100-sxm", "fp8_block")
    gemm, dtype, _ = next(c for c in calls if c[0].rule == "linear")
    flops = 2 * 32760 * 1536 * 8960
    # the table's points: 2·4096·24576·1536 = 3.0924e11 and 2·4096·7168·16384 = 9.6207e11 FLOPs
    fraction = _between(flops, 3.0924e11, 0.612, 9.6207e11, 0.768)
    hand = flops / (1978.9e12 * fraction) + 32760 * 8960 / 66.9e12
    assert kernel_time(gemm, p.device, p.plan, sk, dtype).predicted_s == pytest.approx(hand, rel=1e-9)


@pytest.mark.parametrize(
    ("device", "gemm_dtype"),
    [
        ("rtx4090", "fp8_block"),
        ("b200", "fp8_block"),
        ("h100-sxm", "nvfp4"),
        ("h20", "nvfp4"),
        ("a100-sxm-80gb", "fp8_tensor"),
        ("h100-sxm", "int8"),
        ("l40", "int8"),
    ],
)
def test_a_format_without_its_curve_or_peak_is_refused(device: str, gemm_dtype: str) -> None:
    """Exit 2, one line naming gemm_dtype and what the device does run."""
    from ditmeter.cli import main
    from ditmeter.errors import ConfigError

    args = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", f"device={device}", f"gemm_dtype={gemm_dtype}"]
    with pytest.raises(ConfigError) as err:
        load(args, "report")
    assert err.value.field == "gemm_dtype" and "allowed here: null" in str(err.value)
    assert main(["report", *args]) == 2
    if (device, gemm_dtype) == ("h100-sxm", "int8"):  # the peak is there (1979 TOPS): the curve is not
        assert "kernel table has no int8 GEMM curve" in str(err.value)
    if (device, gemm_dtype) == ("a100-sxm-80gb", "fp8_tensor"):  # no FP8 tensor cores at all
        assert "no fp8 tensor-core peak for gemm_dtype=fp8_tensor" in str(err.value)


def test_nvfp4_weights_are_nine_sixteenths_of_a_byte_by_hand() -> None:
    """gemm_dtype=nvfp4: every nn.Linear's weight in the real official 1.3B DiT's blocks (built on
    the meta device) in E2M1 (half a byte) with one E4M3 byte per 16 elements = 0.5625 byte an
    element, plus its two fp32 per-tensor scales (input_global_scale, alpha); biases, the embeddings,
    the head and the rest keep fp32 (LightX2V quantizes the blocks only)."""
    import torch

    from ditmeter.models.wan21.builders import build_official_dit

    cfg = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=b200"]
    a, _ = analyze(load(cfg, "report"))
    q, _ = analyze(load([*cfg, "gemm_dtype=nvfp4"], "report"))
    module = build_official_dit(a.model)
    named = module.named_modules()
    linears = [m for n, m in named if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    total = sum(p.numel() for p in module.parameters())
    assert all(m.weight.numel() % 16 == 0 for m in linears)
    nvfp4 = weights * 9 // 16 + 8 * len(linears)
    assert q.footprint.weights_by_dtype == {"nvfp4": nvfp4, "fp32": 4 * (total - weights)}
    from ditmeter.analytic.gemm_formats import FORMATS

    assert FORMATS["nvfp4"].weight_bytes(1536, 8960) == 1536 * 8960 // 2 + 1536 * 8960 // 16 + 8 == 7_741_448


def test_nvfp4_quantize_and_gemm_on_a_b200_by_hand() -> None:
    """gemm_dtype=nvfp4 on a B200: before the FFN GEMM the quantize kernel reads the bf16
    activation (2 bytes an element) and writes half a byte an element plus one E4M3 scale per 16
    (256 tokens: 256 × 1536 × 2.5625 bytes) at 7700 GB/s × 0.851 (blackwell-dc.yaml), never under one
    launch; the GEMM at 480p (2 × 32,760 × 1536 × 8960 FLOPs) on the 9000 TFLOP/s FP4 peak between
    the pytorch/ao #2427 B200 rows N=6144 (0.611) and N=8192 (0.597); its bias add on the 75 TFLOP/s
    CUDA cores."""
    from ditmeter.analytic.timing import kernel_time

    _, p, sk, _, calls = _ffn_gemm("b200", "nvfp4", "w001-tiny")
    quant, q_dtype, _ = calls[0]
    assert quant.cost.moved_bytes == 256 * 1536 * 2 + 256 * 1536 // 2 + 256 * 96 == 1_007_616
    hand = max(1_007_616 / (7700e9 * 0.851), 5e-6)  # ampere.yaml's launch, inherited
    assert kernel_time(quant, p.device, p.plan, sk, q_dtype).predicted_s == pytest.approx(hand, rel=1e-9)
    _, p, sk, _, calls = _ffn_gemm("b200", "nvfp4")
    gemm, dtype, _ = next(c for c in calls if c[0].rule == "linear")
    flops = 2 * 32760 * 1536 * 8960
    fraction = _between(flops, 4.64e11, 0.611, 1.1e12, 0.597)  # 2·6144³ and 2·8192³ as the table rounds them
    hand = flops / (9000e12 * fraction) + 32760 * 8960 / 75e12
    assert kernel_time(gemm, p.device, p.plan, sk, dtype).predicted_s == pytest.approx(hand, rel=1e-9)


@pytest.mark.parametrize(
    "axes",
    [
        ["device=[h100-sxm,h800]", "gemm_dtype=[null,fp8,fp8_block,fp8_tensor]"],
        ["device=[b200,gb200]", "gemm_dtype=[null,nvfp4]", "methods.cache=[null,magcache]"],
        ["device=[a100-sxm-80gb,rtx4090]", "gemm_dtype=[null,int8]", "time.execution=[eager,compiled]"],
    ],
)
def test_a_sweep_over_formats_costs_each_point_as_report(axes: list[str]) -> None:
    """``gemm_dtype`` as a sweep axis: every point's time and peak equal ``report``'s (the quantized
    weights in the memory timeline and the transfers included), vectorised and point by point."""
    from ditmeter.commands.sweep import sweep

    base = ["model=wan2.1-t2v-1.3b", "workload=w002-512p"]
    frame = sweep([*base, *axes]).frame
    keys = [a.split("=")[0] for a in axes[1:]]
    for _, row in frame.iterrows():
        point = [*base, f"device={row['device']}"]
        point += [f"{k}={'null' if row[k] is None else row[k]}" for k in keys]
        a, view = analyze(load(point, "report"))
        assert row["per_video_s"] == pytest.approx(view.per_video_s, rel=1e-9), point
        assert row["peak_per_gpu_bytes"] == a.memory.peak_per_gpu_bytes, point


def test_the_h20_runs_per_block_fp8_at_its_own_measured_rows() -> None:
    """AIConfigurator's H20-3e DeepGEMM rows (fp8_block, N x N x N): 242.0 TFLOP/s at 2048³ and
    273.5 at 8192³ of the 296 dense FP8 peak; Hopper's (DeepGEMM's H800 table) would not carry over."""
    h20 = kernel_table("h20")
    assert h20.gemm_fraction("fp8_block", 2 * 2048**3) == pytest.approx(242.0 / 296, abs=5e-4)
    assert h20.gemm_fraction("fp8_block", 2 * 8192**3) == pytest.approx(273.5 / 296, abs=5e-4)
    assert kernel_table("hopper").gemm_fraction("fp8_block", 2 * 8192**3) != h20.gemm_fraction(
        "fp8_block", 2 * 8192**3
    )
    load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h20", "gemm_dtype=fp8_block"], "report")


def test_a_plan_holds_the_quantized_weights_too(tmp_path: Path) -> None:
    """Under Ulysses 8 (no FSDP) every rank holds the whole DiT: the fp8 weights one GPU holds (checked
    against the real module in test_whatif), not the bf16/fp32 ones; a sweep over gemm_dtype under the
    plan gives report's peak per GPU on each point."""
    import pandas as pd

    from ditmeter.cli import main

    base = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=h100-sxm"]
    one, _ = analyze(load([*base, "gemm_dtype=fp8"], "report"))
    _, view = analyze(load([*base, "gemm_dtype=fp8", "parallel.ulysses=4"], "report"))
    assert view.plan is not None
    assert view.plan.estimate.rank.footprint.weights_by_dtype == one.footprint.weights_by_dtype
    assert "fp8" in one.footprint.weights_by_dtype
    sweep = [
        "sweep",
        *base,
        "parallel.ulysses=4",
        "gemm_dtype=[null,fp8]",
        f"output_root={tmp_path}",
        "run_id=s",
    ]
    assert main(sweep) == 0
    df = pd.read_parquet(tmp_path / "s" / "static_analysis" / "sweep" / "sweep.parquet")
    for _, row in df.iterrows():
        dtype = "null" if row["gemm_dtype"] is None else row["gemm_dtype"]
        a, v = analyze(load([*base, "parallel.ulysses=4", f"gemm_dtype={dtype}"], "report"))
        assert row["peak_per_gpu_bytes"] == a.memory.peak_per_gpu_bytes
        assert row["per_video_s"] == pytest.approx(v.per_video_s, rel=1e-9)
