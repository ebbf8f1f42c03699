"""A fused attention call's thread blocks fill the GPU in waves: a call whose last wave is partial
runs below its curve, which was measured at a benchmark's own shape (docs/eager.md, "Attention
calls too small to fill the GPU").

Every expected time is hand arithmetic from the kernel's tiling (FlashAttention-2: 128 query rows
per CTA, 2 CTAs per SM; FlashAttention-3: 128 per tile, one persistent CTA per SM), the H100's
132 SMs and the benchmark's shape (FlashAttention's scripts: batch × seqlen = 16K, 16 heads of
128: 2,048 CTAs). A rule that ignored the waves, took the call's heads from the wrong place or
counted one CTA per SM for FlashAttention-2 changes them.
"""

from __future__ import annotations

import attrs
import pytest

from ditmeter.analytic.eager import eager_calls
from ditmeter.analytic.kernel_time import call_batch_heads
from ditmeter.analytic.kernels import ATTENTION_TILING, KernelTable, wave_efficiency
from ditmeter.analytic.parallel import ParallelPlan
from ditmeter.analytic.timing import StageKernels, TimePlan, kernel_time, leaf_time
from ditmeter.analytic.tree import ModuleRow, rule_leaf, walk
from ditmeter.catalog import kernel_table
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.errors import ConfigError

CFG = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"])
H100 = CFG.device
assert H100 is not None
BF16_PEAK = 989.4e12  # H100 SXM dense bf16 (configs/device/h100-sxm.yaml)
HOPPER = kernel_table("hopper")
FA2_4096 = 0.372  # the FA3 paper's FA2 bar at 4K tokens, head dim 128 (configs/kernels/hopper.yaml)
FA3_2048 = 0.632  # its FA3 bar at 2K
#: the benchmark's wave efficiency: 2,048 CTAs on 132 SMs × 2 (FA2) or × 1 (FA3, persistent)
BENCH_FA2 = 2048 / (8 * 264)
BENCH_FA3 = 2048 / (16 * 132)


def _row(heads: int, tokens: int) -> ModuleRow:
    leaf = rule_leaf(
        "x", "attn_core", "attention_core", batch=1, heads=heads, q_tokens=tokens, kv_tokens=tokens,
        head_dim=128, act_bytes=2,
    )  # fmt: skip
    return ModuleRow("x", None, 0, "leaf", "attn_core", "attention_core", leaf.cost, 1, leaf.dims)


def _seconds(row: ModuleRow, backend: str, table: KernelTable = HOPPER) -> float:
    plan = TimePlan("predicted", attrs.evolve(table, sms=132))
    return leaf_time(row, H100, plan, StageKernels("bf16", attention=backend)).compute_s


def test_wave_efficiency_by_hand() -> None:
    assert wave_efficiency(384, 264) == pytest.approx(384 / 528)  # 1.45 waves: the second half empty
    assert wave_efficiency(528, 264) == 1.0
    assert wave_efficiency(2048, 264) == pytest.approx(2048 / 2112)


def test_the_h100_has_132_sms_and_the_time_plan_reads_them() -> None:
    assert H100.sms == 132
    assert CFG.time.kernels is not None and CFG.time.kernels.sms == 132
    no_sms = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm", "device.sms=null"])
    assert no_sms.time.kernels is not None and no_sms.time.kernels.sms is None


def test_fa2_call_of_a_wave_and_a_half_pays_the_whole_second_wave() -> None:
    """12 heads × 4,096 queries = 12 × 32 = 384 CTAs of 128 rows on 264 slots: 1.45 waves."""
    row = _row(12, 4096)
    flops = 4 * 12 * 4096 * 4096 * 128
    expected = flops / (BF16_PEAK * FA2_4096 / BENCH_FA2 * (384 / 528))
    assert _seconds(row, "fa2") == pytest.approx(expected, rel=1e-9)
    # 1.33× the curve's time: a rule without waves (or FA2 at one CTA per SM: 384/396) misses it
    assert _seconds(row, "fa2") / (flops / (BF16_PEAK * FA2_4096)) == pytest.approx(1.3333, abs=1e-3)


def test_a_call_of_whole_waves_runs_faster_than_its_benchmark() -> None:
    """33 heads × 8 tiles = 264 CTAs: one full wave; the benchmark's 7.76 waves lost 3%."""
    row = _row(33, 1024)
    flops = 4 * 33 * 1024 * 1024 * 128
    fa2_1024 = 0.354
    assert _seconds(row, "fa2") == pytest.approx(flops / (BF16_PEAK * fa2_1024 / BENCH_FA2), rel=1e-9)


def test_fa3_persistent_tiles_take_the_sms_one_at_a_time() -> None:
    """12 heads × 16 tiles of 128 = 192 tiles over 132 persistent CTAs: 1.45 rounds."""
    row = _row(12, 2048)
    flops = 4 * 12 * 2048 * 2048 * 128
    expected = flops / (BF16_PEAK * FA3_2048 / BENCH_FA3 * (192 / 264))
    assert _seconds(row, "fa3") == pytest.approx(expected, rel=1e-9)
    assert ATTENTION_TILING["fa3"][128].ctas_per_sm == 1


def test_no_term_without_a_tiling_a_benchmark_shape_or_sms() -> None:
    """cuDNN's tiling is not read (as measured); a curve without ``bench`` (a calibration's, measured
    at the model's shapes) is read as measured; a device without SMs too."""
    row = _row(12, 4096)
    flops = 4 * 12 * 4096 * 4096 * 128
    assert _seconds(row, "cudnn") == pytest.approx(flops / (BF16_PEAK * 0.616), rel=1e-9)
    bare = attrs.evolve(HOPPER.attention["fa2"][128], bench=None)
    table = attrs.evolve(HOPPER, attention={**HOPPER.attention, "fa2": {128: bare}})
    assert _seconds(row, "fa2", table) == pytest.approx(flops / (BF16_PEAK * FA2_4096), rel=1e-9)
    plan = TimePlan("predicted", HOPPER)  # sms None
    t = leaf_time(row, H100, plan, StageKernels("bf16", attention="fa2")).compute_s
    assert t == pytest.approx(flops / (BF16_PEAK * FA2_4096), rel=1e-9)


def test_a_ring_rank_runs_each_call_at_its_own_heads_fused_and_eager() -> None:
    """Wan2.1 1.3B at 480p-81f (32,760 tokens), ring 8: each of a rank's 8 flash calls runs 12
    heads × 4,095 queries × 4,095 keys: 12 × ⌈4095/128⌉ = 384 CTAs, 1.45 waves of 264. The fused
    leaf (its heads count 12 per ring call) and the eager launches (heads from their FLOPs) agree."""
    cfg = load(["model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=h100-sxm"], "report")
    analysis, _ = analyze(cfg)
    rank = cfg.family.parallel(analysis, ParallelPlan(ring=8, gpus=8), cfg.offload)
    (row,) = [r for r in walk(rank.forward, expand=False) if r.module_id == "blocks.*.self_attn.attn_core"]
    assert dict(row.dims)["heads"] == 8 * 12 and dict(row.dims)["sp_ring"] == 8
    plan = TimePlan("predicted", attrs.evolve(HOPPER, sms=132))
    per_call = 4 * 12 * 4095 * 4095 * 128
    curve = HOPPER.attention["fa2"][128].at(4095)  # the FA2 bars at 2K and 4K, read between
    expected = 8 * per_call / (BF16_PEAK * curve / BENCH_FA2 * (384 / 528))
    sk = StageKernels("bf16", attention="fa2")
    assert leaf_time(row, H100, plan, sk).compute_s == pytest.approx(expected, rel=1e-9)
    calls = eager_calls("official", "dit", row.module_id, row.rule, dict(row.dims), "bf16")
    assert calls is not None
    (flash,) = [c for c in calls if c.kind == "attention"]
    assert flash.count == 8
    eager_sk = StageKernels("bf16", attention="fa2", flavour="official", stage="dit")
    launches = [(launch, n) for launch, _, n in eager_sk.calls(row) or () if launch.rule == "attention_core"]
    seconds = sum(kernel_time(launch, H100, plan, eager_sk).compute_s * n for launch, n in launches)
    assert seconds == pytest.approx(expected, rel=1e-9)


def test_a_cross_attention_call_counts_its_query_tiles() -> None:
    """40 heads × 75,600 queries over 512 text keys (the 14B's cross-attention at 720p): 40 × 591 =
    23,640 CTAs, 89.5 waves of 264; the curve read at 512 keys (its first point). Counting the
    tiles from the 512 keys (40 × 4 = 160 CTAs) would make it 0.61 of a wave."""
    leaf = rule_leaf(
        "x", "attn_core", "attention_core", batch=1, heads=40, q_tokens=75_600, kv_tokens=512,
        head_dim=128, act_bytes=2,
    )  # fmt: skip
    row = ModuleRow("x", None, 0, "leaf", "attn_core", "attention_core", leaf.cost, 1, leaf.dims)
    flops = 4 * 40 * 75_600 * 512 * 128
    fa2_512 = 0.312
    expected = flops / (BF16_PEAK * fa2_512 / BENCH_FA2 * (23_640 / (90 * 264)))
    assert _seconds(row, "fa2") == pytest.approx(expected, rel=1e-9)


def test_the_benchmark_keeps_its_own_boards_waves() -> None:
    """The RTX 4090's FA2 curve (SageAttention's bench: batch 4, 32 heads, on the 4090's 128 SMs:
    4 × 32 × 8 = 1,024 CTAs at 1K tokens, four whole waves of 256) read for the 4090 D's 114 SMs:
    a call of 12 heads × 8 tiles = 96 CTAs fills 96 / 228 of one wave there. The benchmark's waves
    are the 4090's (1.0), not what 1,024 CTAs would make of the 4090 D's 228 slots (0.898)."""
    table = kernel_table("rtx4090")
    bench = table.attention["fa2"][128].bench
    assert bench is not None and (bench.sms, bench.batch, bench.heads) == (128, 4, 32)
    curve = table.attention["fa2"][128].at(1024)
    fraction = attrs.evolve(table, sms=114).attention_fraction("fa2", 128, 1024, 1024, 12)
    assert fraction == pytest.approx(curve * 96 / 228, rel=1e-12)


def test_a_fraction_never_passes_the_peak() -> None:
    """A curve point near the peak over a benchmark's partial last wave (here 0.99 over 2,048 CTAs'
    0.97) stays at the peak for a call of whole waves."""
    near = attrs.evolve(HOPPER.attention["fa2"][128], fraction=(0.99,) * 6)
    table = attrs.evolve(HOPPER, attention={**HOPPER.attention, "fa2": {128: near}}, sms=132)
    assert table.attention_fraction("fa2", 128, 1024, 1024, 33) == 1.0


def test_an_eager_launch_without_queries_has_no_term() -> None:
    """An eager attention launch of no queries (0 FLOPs) times as before: nothing, no division."""
    assert call_batch_heads({"q_tokens": 0, "kv_tokens": 16, "head_dim": 128}, 0) == 0.0


def test_a_benchmark_shape_needs_one_batch_its_boards_sms_and_a_source() -> None:
    raw = HOPPER.as_mapping()
    curve = raw["attention"]["fa2"][128]
    assert curve["bench"]["batch_tokens"] == 16384 and curve["bench"]["heads"] == 16
    assert curve["bench"]["sms"] == 132
    curve["bench"] = {"heads": 16, "sms": 132, "batch": 4, "batch_tokens": 16384, "source": "x"}
    with pytest.raises(ConfigError, match=r"kernels\.attention\.fa2\.128\.bench\.batch"):
        KernelTable.from_mapping(raw)
    curve["bench"] = {"heads": 16, "batch": 4, "source": "x"}
    with pytest.raises(ConfigError, match=r"bench\.sms"):
        KernelTable.from_mapping(raw)
    curve["bench"] = {"heads": 16, "sms": 132, "batch": 4}
    with pytest.raises(ConfigError, match=r"bench\.source"):
        KernelTable.from_mapping(raw)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "abc", "5000"])
def test_a_bad_sm_count_names_the_field(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^device\.sms: "):
        load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm", f"device.sms={value}"])
