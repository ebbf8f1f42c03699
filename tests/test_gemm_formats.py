"""Quantized DiT matmuls (``gemm_dtype=``): each format's GEMM time from its kernel curve and its
kernels' bytes, by hand on one linear."""

from __future__ import annotations

import math

import pytest

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
