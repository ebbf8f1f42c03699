"""What-if methods (``methods.*``) and ``ditmeter whatif``: each mechanism by hand on a small case,
the command's rows against ``report`` with the same overrides, and the combinations refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ditmeter.analytic.methods import MagCacheModel, magcache_computed
from ditmeter.catalog import magcache_model
from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.commands.whatif import whatif
from ditmeter.commands.whatif_result import WhatifResult
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.reports.format import seconds

BASE = ["model=wan2.1-t2v-1.3b", "workload=w002-512p", "device=h100-sxm"]


def _view(*overrides: str):  # type: ignore[no-untyped-def]
    return analyze(load([*BASE, *overrides], "report"))


@pytest.fixture(scope="module")
def baseline():  # type: ignore[no-untyped-def]
    return _view()


def test_cache_skips_the_blocks_of_the_skipped_forwards_by_hand(baseline) -> None:  # type: ignore[no-untyped-def]
    a, v = baseline
    p = v.prediction
    forwards = a.forwards_per_video
    _, cached = _view("methods.cache=teacache", "methods.cache_skip=0.3")
    c = cached.prediction
    skipped = round(0.3 * forwards)
    # the residual pass: 2 reads + 1 write of tokens × dim fp32 (the official residual stream), at the
    # H100's 3350 GB/s × the element-wise share 0.75 (configs/kernels/hopper.yaml)
    elements = a.geometry.tokens * 1536
    residual_s = max(3 * elements * 4 / (3350e9 * 0.75), 5e-6)  # never below one launch
    outside_blocks = p.per_forward.predicted_s - p.modules["dit.blocks"].predicted_s
    by_hand = (forwards - skipped) * (p.per_forward.predicted_s + residual_s) + skipped * (
        outside_blocks + residual_s
    )
    assert c.forward_video_s == pytest.approx(by_hand, rel=1e-9)
    assert [(r.kind, r.count) for r in c.forward_runs] == [
        ("computed", forwards - skipped),
        ("cached", skipped),
    ]
    others = sum(s for k, s in p.stage_seconds.items() if k != "dit")
    assert cached.per_video_s == pytest.approx(by_hand + others, rel=1e-9)


def test_fbcache_also_runs_the_first_block_and_easycache_none_of_the_dit(baseline) -> None:  # type: ignore[no-untyped-def]
    _, v = baseline
    p = v.prediction
    runs = {}
    for method in ("teacache", "fbcache", "easycache"):
        _, view = _view(f"methods.cache={method}", "methods.cache_skip=0.5")
        runs[method] = view.prediction.forward_runs[1].timing.predicted_s
    block0 = p.modules["dit.blocks.0"].predicted_s
    assert runs["fbcache"] - runs["teacache"] == pytest.approx(block0, rel=1e-9)
    assert runs["easycache"] < runs["teacache"]  # the residual pass alone


@pytest.mark.parametrize(("method", "block0_runs"), [("teacache", "computed"), ("fbcache", "every")])
def test_a_cached_videos_layer_table_counts_only_the_forwards_that_run_each_layer(
    baseline,
    method: str,
    block0_runs: str,  # type: ignore[no-untyped-def]
) -> None:
    """The top-layers table (terminal, summary.md) under a step cache: a block's layer runs in the
    computed forwards only (FBCache's first block in every forward), the head in every forward;
    by hand from the uncached prediction's per-forward leaf times."""
    from ditmeter.reports.device_report import top_layers_by_time
    from ditmeter.reports.tables import modules_frame

    a, v = baseline
    p = v.prediction
    forwards = a.forwards_per_video
    cached_a, cached = _view(f"methods.cache={method}", "methods.cache_skip=0.5")
    computed = forwards - round(0.5 * forwards)
    layers = 30  # the 1.3B's blocks
    leaf = "self_attn.attn_core"
    one = p.modules[f"dit.blocks.1.{leaf}"].predicted_s  # every block's alike
    first = forwards if block0_runs == "every" else computed
    by_hand = one * (first + (layers - 1) * computed)
    table = top_layers_by_time(cached, modules_frame(cached_a, cached.prediction), 10_000)
    rows = {str(r.cells[0]): str(r.cells[4]) for r in table.rows}
    assert rows[f"dit.blocks.*.{leaf}"] == seconds(by_hand)
    assert rows["dit.head.head"] == seconds(p.modules["dit.head.head"].predicted_s * forwards)


def test_under_a_plan_the_layer_table_counts_the_gpus_computed_forwards() -> None:
    """One GPU of Ulysses 2 under TeaCache at half the forwards: a block's layer is counted in the
    GPU's computed forwards, at the GPU's own time of it (its sequence shard)."""
    from ditmeter.reports.device_report import top_layers_by_time
    from ditmeter.reports.tables import modules_frame

    a, v = _view("parallel.ulysses=2", "methods.cache=teacache", "methods.cache_skip=0.5")
    p = v.prediction
    (cached,) = [r for r in v.plan.estimate.forward_runs if r.kind == "cached"]
    computed = a.forwards_per_video - cached.count
    one = p.modules["dit.blocks.1.self_attn.attn_core"].predicted_s
    table = top_layers_by_time(v, modules_frame(a, p), 10_000)
    rows = {str(r.cells[0]): str(r.cells[4]) for r in table.rows}
    assert cached.count == 50 and rows["dit.blocks.*.self_attn.attn_core"] == seconds(one * 30 * computed)


def test_a_cached_plans_roofline_stays_below_its_time() -> None:
    """One GPU of Ulysses 8 under MagCache (36 of 100 forwards computed): the roofline counts the
    GPU's forwards by kind, so it stays the lower bound (it counted all 100 as computed: 38 s
    against a 35.5 s prediction)."""
    cfg = load(
        [
            "model=wan2.1-t2v-14b",
            "workload=480p-81f",
            "device=h100-sxm",
            "parallel.ulysses=8",
            "methods.cache=magcache",
        ],
        "report",
    )
    _, v = analyze(cfg)
    p, runs = v.prediction, v.plan.estimate.forward_runs
    others = sum(p.modules[s].roofline_s * n for s, n in p.stage_runs if s != p.forward_id)
    by_hand = others + p.transfer_s + sum(r.count * r.compute.roofline_s for r in runs)
    assert v.roofline_video_s == pytest.approx(by_hand, rel=1e-9)
    assert v.roofline_video_s < v.per_video_s


def test_cache_residuals_are_in_the_dit_phase(baseline) -> None:  # type: ignore[no-untyped-def]
    a, _ = baseline
    cached, _ = _view("methods.cache=magcache", "methods.cache_skip=0.2")
    dit = {ph.stage: ph.activation_bytes or 0 for ph in a.memory.phases}["dit"]
    dit_cached = {ph.stage: ph.activation_bytes or 0 for ph in cached.memory.phases}["dit"]
    assert dit_cached - dit == 2 * a.geometry.tokens * 1536 * 4  # cond and uncond, fp32
    assert any("Step cache (magcache" in n for n in cached.notes)


def test_cfg_free_few_steps_by_hand(baseline) -> None:  # type: ignore[no-untyped-def]
    a, _v = baseline
    few, fv = _view("methods.cfg_free=true", "workload.num_inference_steps=4")
    assert few.forwards_per_video == 4  # one forward per step
    assert few.per_video.tensor_flops == 4 * a.per_forward.tensor_flops
    stages = dict(fv.prediction.stage_runs)
    assert stages["text_encoder"] == 1  # no negative prompt to encode


def test_cfg_batch_is_one_forward_of_batch_two(baseline) -> None:  # type: ignore[no-untyped-def]
    a, _v = baseline
    b, bv = _view("methods.cfg_batch=true")
    assert b.forwards_per_video == a.forwards_per_video // 2
    assert b.per_forward.tensor_flops == 2 * a.per_forward.tensor_flops  # linear in the batch
    assert b.per_video.tensor_flops == a.per_video.tensor_flops
    dit = [{ph.stage: ph.activation_bytes or 0 for ph in x.memory.phases}["dit"] for x in (a, b)]
    assert dit[1] > dit[0]  # both branches' activations at once
    assert dict(bv.prediction.stage_runs)["text_encoder"] == 2  # both prompts still encoded


def test_cuda_graphs_replace_each_launch_by_a_graph_node(baseline) -> None:  # type: ignore[no-untyped-def]
    _, v = baseline
    _, g = _view("methods.cuda_graphs=true")
    # the overhead term counts launches: 5 us each from the stream (hopper.yaml), 0.875 us as graph
    # nodes (CUDA.jl's 70 us / 80)
    assert g.prediction.per_forward.overhead_s == pytest.approx(
        v.prediction.per_forward.overhead_s * 0.875 / 5, rel=1e-9
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["methods.cache=teacache"], "methods.cache_skip"),
        (["methods.cache_skip=0.3"], "methods.cache_skip"),
        (["methods.cache=teacache", "methods.cache_skip=0.99"], "methods.cache_skip"),
        (["methods.cfg_free=true", "methods.cfg_batch=true"], "methods.cfg_batch"),
        (["methods.cache=nocache"], "methods.cache"),
        (["methods.cfg_batch=true", "parallel.ulysses=2"], "methods.cfg_batch"),
        (["methods.cache=easycache", "methods.cache_skip=0.3", "parallel.ulysses=2"], "methods.cache"),
        (["methods.magcache_k=3"], "methods.magcache_k"),  # a MagCache rule key with no MagCache on
        (
            ["methods.cache=teacache", "methods.cache_skip=0.3", "methods.magcache_threshold=0.2"],
            "methods.magcache_threshold",
        ),
        (["methods.sparse_dense_steps=0.2"], "methods.sparse_dense_steps"),  # no sparse kernel on
    ],
)
def test_bad_methods_are_refused_naming_the_key(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        analyze(load([*BASE, *overrides], "report"))
    assert exc.value.field == field


@pytest.fixture(scope="module")
def result() -> WhatifResult:
    names = ("compile", "cuda_graphs", "fp8", "teacache")
    return whatif(names, [*BASE, "methods.cache_skip=0.4"])


def test_each_row_costs_what_report_gives(result: WhatifResult) -> None:
    frame = result.frame
    assert frame["whatif"].tolist() == [
        "baseline",
        "compile",
        "cuda_graphs",
        "fp8",
        "teacache",
        "all together",
    ]
    base_s = frame["per_video_s"].iloc[0]
    for _, row in frame.iterrows():
        overrides = row["overrides"].split()
        _, view = _view(*overrides)
        assert row["per_video_s"] == view.per_video_s, overrides
        assert row["speedup"] == pytest.approx(base_s / view.per_video_s, rel=1e-12)
    assert frame[PARTS].sum(axis=1).to_numpy() == pytest.approx(frame["per_video_s"].to_numpy(), rel=1e-9)
    assert (frame["comm_exposed_s"] == 0).all()  # one GPU
    together = frame.iloc[-1]["overrides"]
    assert "methods.cache_skip=0.4" in together and "gemm_dtype=fp8" in together


PARTS = [
    "dit_compute_bound_s",
    "dit_memory_bound_s",
    "dit_launch_bound_s",
    "comm_exposed_s",
    "other_stages_s",
    "offload_s",
]


def test_whatif_under_a_plan_costs_one_gpu_of_it_as_report_does() -> None:
    """``whatif`` with ``parallel.*``: each row is one GPU of the plan as ``report`` costs it under
    the same plan; CFG parallel halves each GPU's forwards (one per step here, by hand); a method
    the plan's code cannot run is a row with its reason and "all together" combines the others."""
    plan = ["parallel.ulysses=2", "parallel.cfg=2"]
    res = whatif(("magcache", "sage", "cfg_batch"), [*BASE, *plan])
    frame = res.frame.set_index("whatif")
    assert frame.index.tolist() == ["baseline", "magcache", "sage", "cfg_batch", "all together but cfg_batch"]
    assert not frame.loc["cfg_batch", "runs"] and "methods.cfg_batch" in frame.loc["cfg_batch", "reason"]
    runs = frame[frame["runs"].astype(bool)]
    steps = int(runs.loc["baseline", "steps"])
    assert (runs["forwards_per_video"] == steps).all()  # 2 forwards a step over cfg 2
    assert runs.loc["magcache", "forwards_computed"] < steps == runs.loc["sage", "forwards_computed"]
    for name, row in runs.iterrows():
        analysis, view = _view(*plan, *str(row["overrides"]).split())
        assert view.plan is not None, name
        assert row["per_video_s"] == view.per_video_s
        assert row["peak_per_gpu_bytes"] == analysis.memory.peak_per_gpu_bytes
        assert row["comm_exposed_s"] == view.plan.estimate.comm_video_s > 0
    assert runs[PARTS].sum(axis=1).to_numpy() == pytest.approx(runs["per_video_s"].to_numpy(), rel=1e-9)
    _, one = _view()
    assert runs.loc["baseline", "per_video_s"] < one.per_video_s / 2  # four GPUs


def test_whatif_cli_writes_its_files_and_refuses_conflicts(tmp_path: Path) -> None:
    argv = ["whatif", *BASE, "whatif=[compile,few_step]", f"output_root={tmp_path}", "run_id=w"]
    assert main(argv) == 0
    out = tmp_path / "w" / "static_analysis" / "whatif"
    assert sorted(p.name for p in out.iterdir()) == ["whatif.md", "whatif.parquet", "whatif.png"]
    frame = pd.read_parquet(out / "whatif.parquet")
    assert frame["whatif"].tolist() == ["baseline", "compile", "few_step", "all together"]
    assert "Quality is not modelled" in (out / "whatif.md").read_text()
    for bad in (
        "whatif=[cfg_batch,few_step]",  # both change the forwards per step
        "whatif=[teacache,magcache]",  # both set methods.cache
        "whatif=[fp9]",
        "whatif=[sage,svg]",  # both replace the attention kernel
    ):
        before = sorted(tmp_path.iterdir())
        assert main(["whatif", *BASE, bad, "methods.cache_skip=0.3", f"output_root={tmp_path}"]) == 2
        assert sorted(tmp_path.iterdir()) == before


def test_magcache_rule_by_hand() -> None:
    """Four steps, retention 0.25 (forwards 0 and 1 always compute), every later ratio 0.9,
    threshold 0.15, K 2: forward 2 (cond) has product 0.9, error 0.1 < 0.15, so it skips, as does 3
    (uncond); forward 4: product 0.81, error 0.1 + 0.19 = 0.29, so it computes and resets; 5 likewise;
    6 and 7 skip again."""
    model = MagCacheModel("hand", (0.9,) * 6, "wan2.1")
    assert magcache_computed(model, 4, 0.15, 2, 0.25) == [True, True, False, False, True, True, False, False]
    # K 1: after one skip the next forward computes whatever the error
    assert magcache_computed(model, 4, 10.0, 1, 0.25) == [True, True, False, False, True, True, False, False]
    assert magcache_computed(model, 4, 10.0, 3, 0.25) == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("model", "settings", "computed"),
    [  # the counts of Zehong-Ma/MagCache's scripts (@df81cb18) on their own ratios, simulated apart
        ("wan2.1-t2v-14b", (0.24, 6, 0.2), 36),
        ("wan2.1-t2v-1.3b", (0.12, 4, 0.2), 42),
        ("wan2.1-i2v-14b-720p", (0.12, 4, 0.2), 34),
        ("wan2.1-i2v-14b-480p", (0.24, 6, 0.2), 30),
        ("wan2.2-t2v-a14b", (0.06, 2, 0.4), 52),
        ("wan2.2-i2v-a14b", (0.06, 2, 0.1), 59),
        ("wan2.2-ti2v-5b", (0.06, 2, 0.2), 50),
    ],
)
def test_magcache_counts_of_the_published_configurations(model: str, settings: tuple, computed: int) -> None:  # type: ignore[type-arg]
    e, k, r = settings
    cfg = load([f"model={model}", "workload=480p-81f"], "report")
    mc = magcache_model(cfg.model)
    assert mc is not None
    assert sum(magcache_computed(mc, cfg.workload.num_inference_steps, e, k, r)) == computed


def test_fp8_adds_a_per_token_quantize_kernel_before_each_matmul_by_hand() -> None:
    """Under gemm_dtype=fp8 (eager) each DiT linear first quantizes its activation per token
    (LightX2V's FP8 paths): bf16 in (2 bytes), FP8 out (1 byte), one fp32 scale per token; on the
    H100 a memory-bound pass at 3350 GB/s × 0.75 (hopper.yaml), never under one 5 us launch."""
    from ditmeter.analytic.timing import kernel_time
    from ditmeter.analytic.tree import walk

    a, v = _view("gemm_dtype=fp8")
    p = v.prediction
    sk = a.stage_kernels(a.forward, p.plan)
    row = next(r for r in walk(a.forward.tree, "dit") if r.module_id == "dit.blocks.0.ffn.0")
    calls = sk.calls(row)
    assert calls is not None
    quant, dtype, count = calls[0]
    tokens, features = a.geometry.tokens, 1536
    assert quant.cost.moved_bytes == tokens * features * 3 + tokens * 4 and (dtype, count) == ("bf16", 1)
    hand = max((tokens * features * 3 + tokens * 4) / (3350e9 * 0.75), 5e-6)
    assert kernel_time(quant, p.device, p.plan, sk, dtype).predicted_s == pytest.approx(hand, rel=1e-9)
    _, bf16 = _view()
    plain = a.stage_kernels(a.forward, bf16.prediction.plan).calls(row)
    # one quantize more, one weight cast fewer (the FP8 weights are stored as such)
    assert plain is not None and len(calls) == len(plain)
    assert [c[0].cost.moved_bytes for c in plain][:1] != [quant.cost.moved_bytes]


def _self_attention_calls(device: str, *overrides: str):  # type: ignore[no-untyped-def]
    from ditmeter.analytic.tree import walk

    a, v = analyze(
        load(["model=wan2.1-t2v-1.3b", "workload=480p-81f", f"device={device}", *overrides], "report")
    )
    p = v.prediction
    sk = a.stage_kernels(a.forward, p.plan)
    row = next(r for r in walk(a.forward.tree, "dit") if r.module_id == "dit.blocks.0.self_attn.attn_core")
    calls = sk.calls(row)
    assert calls is not None
    return a, p, sk, calls


def test_sage_attention_on_the_int8_peak_with_its_quantize_passes_by_hand() -> None:
    """attention=sage on an H100: the kernel at the hopper table's Sage curve of the INT8 peak
    (1,979 TOPS dense); 32,760 tokens sit between the 16K (0.48: SageAttention's H100 figure,
    871/339 of its FA2 bar, x the FA3 paper's 370 TFLOP/s FA2) and 32K (0.486: 882/339 x 370) points,
    linear in log2; before it K smoothed (2 passes over K in bf16), Q and K to INT8, V to FP8."""
    import math

    from ditmeter.analytic.timing import kernel_time

    a, p, sk, calls = _self_attention_calls("h100-sxm", "attention=sage")
    at = next(i for i, (row, _, _) in enumerate(calls) if row.rule == "attention_core")
    smooth, qk, vq, kernel = (c[0] for c in calls[at - 3 : at + 1])  # the passes right before the kernel
    tokens, heads, d = a.geometry.tokens, 12, 128
    elems = tokens * heads * d
    assert smooth.cost.moved_bytes == 2 * elems * 2
    assert qk.cost.moved_bytes == 2 * elems * 3 and vq.cost.moved_bytes == elems * 3
    t = (math.log2(tokens) - 14) / (15 - 14)
    at_16k, at_32k = 871 / 339 * 370 / 1979, 882 / 339 * 370 / 1979
    assert at_16k == pytest.approx(0.48, abs=6e-4) and at_32k == pytest.approx(0.486, abs=6e-4)
    fraction = 0.48 + t * (0.486 - 0.48)
    flops = 4 * tokens * tokens * d * heads
    assert kernel.cost.tensor_flops == flops
    timing = kernel_time(kernel, p.device, p.plan, sk, calls[at][1])
    assert timing.compute_s == pytest.approx(flops / (1979e12 * fraction), rel=1e-9)
    assert timing.roofline_s == pytest.approx(flops / 1979e12, rel=1e-9)
    _, _, _, plain = _self_attention_calls("h100-sxm")
    assert len(calls) == len(plain) + 3  # no quantize passes with FlashAttention


def test_rtx4090_flash_attention_2_is_the_boards_own_measurement() -> None:
    """FlashAttention-2 on an RTX 4090 at hd128 and 16K+ tokens runs at 164 of 165.2 TFLOP/s
    (SageAttention's kernel benchmark of the board), not Ampere's 204 of 312 (the same benchmark's
    A100 figure); Ada's other boards take Ampere's."""
    from ditmeter.catalog import kernel_table

    assert kernel_table("rtx4090").attention_fraction("fa2", 128, 32768) == pytest.approx(
        164 / 165.2, abs=1e-3
    )
    assert kernel_table("ada").attention_fraction("fa2", 128, 32768) == pytest.approx(204 / 312, abs=1e-3)
    assert kernel_table("ampere").attention_fraction("sdpa_flash", 128, 75600) == pytest.approx(
        204 / 312, abs=1e-3
    )


def test_sage_is_refused_where_no_curve_or_no_int8_peak() -> None:
    with pytest.raises(ConfigError) as exc:
        load(["model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=b200", "attention=sage"], "report")
    assert exc.value.field == "attention" and "does not run on b200" in exc.value.message


def test_sparse_attention_by_hand() -> None:
    """methods.sparse=vsa at density 0.25 on 2 of the 1.3B's 30 blocks dense: the self-attention
    computes (2 + 28 × 0.25) / 30 of its FLOPs at 0.85 × the dense kernel's rate (VSA's abstract);
    cross-attention is untouched; with a dense share of 0.5 of 50 steps, 50 of the 100 forwards run
    dense (the same prediction without the method) and 50 sparse."""
    from ditmeter.analytic.timing import kernel_time

    base = ["methods.sparse=vsa", "methods.sparse_density=0.25", "methods.sparse_dense_layers=2"]
    a, p, sk, calls = _self_attention_calls("h100-sxm", *base)
    _, p0, sk0, dense_calls = _self_attention_calls("h100-sxm")
    at = next(i for i, (row, _, _) in enumerate(calls) if row.rule == "attention_core")
    density = (2 + 28 * 0.25) / 30
    sparse_t = kernel_time(calls[at][0], p.device, p.plan, sk, calls[at][1])
    dense_t = kernel_time(dense_calls[at][0], p0.device, p0.plan, sk0, dense_calls[at][1])
    assert sk.computed(calls[at][0]).cost.tensor_flops == round(calls[at][0].cost.tensor_flops * density)
    assert sparse_t.compute_s == pytest.approx(dense_t.compute_s * density / 0.85, rel=1e-6)
    cross = next(r for r in walk_rows(a) if r.module_id == "dit.blocks.0.cross_attn.attn_core")
    assert not sk.is_sparse(cross)
    _, mixed = _view("methods.sparse=vsa", "methods.sparse_density=0.25", "methods.sparse_dense_steps=0.5")
    _, sparse = _view("methods.sparse=vsa", "methods.sparse_density=0.25")
    _, dense = _view()
    runs = {r.kind: (r.count, r.timing.predicted_s) for r in mixed.prediction.forward_runs}
    assert runs["dense"] == (50, pytest.approx(dense.prediction.per_forward.predicted_s))
    assert runs["sparse"] == (50, pytest.approx(sparse.prediction.per_forward.predicted_s))


def test_vsa_runs_its_gate_projection_tiling_and_pooled_attention_by_hand() -> None:
    """methods.sparse=vsa adds, around the 1.3B's sparse self-attention at 480P (32,760 tokens on a
    21 x 30 x 52 patch grid, dim 1,536, 12 heads of 128), the kernels FastVideo's VSA code launches:
    the gate projection Linear(1536, 1536) over every token (2 x 32,760 x 1,536^2 FLOPs); q, k, v
    and the gate concatenated (8 x 32,760 x 1,536 x 2 bytes), the padded tensor zeroed at
    6 x 8 x 13 = 624 tiles of 64 tokens (4 x 39,936 x 1,536 x 2 bytes), gathered and put in place;
    the pooled attention over the 624 tiles (two matmuls of 2 x 12 x 624^2 x 128 FLOPs). Compiled,
    the leaf is one fused kernel and the same VSA kernels follow it: FastVideo's attention function
    is excluded from torch.compile."""
    vsa = ["methods.sparse=vsa", "methods.sparse_density=0.25"]
    _, _, _, plain = _self_attention_calls("h100-sxm")
    _, _, sk, calls = _self_attention_calls("h100-sxm", *vsa)
    extra = calls[len(plain) :]
    assert [r.rule for r, _, _ in calls[: len(plain)]] == [r.rule for r, _, _ in plain]
    gemms = [(r.cost.tensor_flops, n) for r, _, n in extra if r.rule == "linear"]
    pooled = 2 * 12 * 624 * 624 * 128
    assert gemms == [(2 * 32760 * 1536 * 1536, 1), (pooled, 1), (pooled, 1)]
    e, ep = 32760 * 1536, 624 * 64 * 1536
    tiling = [(r.cost.moved_bytes, n) for r, _, n in extra if r.rule is None][:4]
    assert tiling == [
        (8 * e * 2, 1),
        (4 * ep * 2, 1),
        (8 * e * 2, 1),
        (8 * e * 2, 1),
    ]  # cat, zeros, gather, put
    at = next(r for r, _, _ in calls if r.rule == "attention_core")
    assert sk.computed(at).cost.tensor_flops == round(at.cost.tensor_flops * 0.25)  # only the kernel
    assert all(sk.computed(r) is r for r, _, _ in extra)
    _, _, sk_c, fused = _self_attention_calls("h100-sxm", *vsa, "time.execution=compiled")
    assert fused[0][0].rule == "attention_core" and len(fused) == 1 + len(extra)
    assert [(r.rule, r.cost, n) for r, _, n in fused[1:]] == [(r.rule, r.cost, n) for r, _, n in extra]
    assert sk_c.calls(fused[2][0]) is None  # VSA's kernels are not themselves sparse


def walk_rows(a):  # type: ignore[no-untyped-def]
    from ditmeter.analytic.tree import walk

    return walk(a.forward.tree, "dit")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["whatif=[teacache]", "methods.cache_skip=nan"], "methods.cache_skip: must be a finite number"),
        (["whatif=[teacache]", "methods.cache_skip=0.99"], "methods.cache_skip: must be a finite number"),
        (["whatif=[svg]", "methods.sparse_density=1.5"], "methods.sparse_density: must be a finite number"),
        (["whatif=[svg]", "methods.sparse_density=0.2", "methods.sparse_dense_layers=1000"], "exceeds"),
        (["whatif=[fp8,"], "whatif: '[fp8,' is not a list"),
        (["whatif=[fp8,,teacache]", "methods.cache_skip=0.3"], "has an empty item"),
    ],
)
def test_whatif_refuses_the_users_bad_values_and_keys_it_would_drop(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row's own key out of range was a row that "cannot run" (exit 0, "nan" in the tables); a list
    missing its bracket or with an empty item ran. Each is exit 2 naming the key, and nothing is
    written."""
    assert main(["whatif", *BASE, *argv, f"output_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "nan" not in err.replace("got nan", "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["whatif=[fp8]", "gemm_dtype=fp8_block"], "fp8 replaces the baseline's gemm_dtype=fp8_block"),
        ([], "sage replaces the baseline's attention=fa3 with attention=sage"),  # the default list
        (["whatif=[compile]", "time.execution=compiled"], "as the baseline already does"),
    ],
)
def test_a_what_if_over_a_key_the_user_gave_says_so(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline keeps the user's value and the row replaces it (the row's overrides say which):
    a comparison, said on the terminal and in whatif.md, not refused."""
    extra = [] if argv else ["attention=fa3"]
    assert main(["whatif", *BASE, *argv, *extra, f"output_root={tmp_path}", "run_id=w"]) == 0
    assert says in capsys.readouterr().out
    assert says in (tmp_path / "w" / "static_analysis" / "whatif" / "whatif.md").read_text()


def test_whatif_keeps_the_baselines_own_method_keys_and_its_rows_that_cannot_run() -> None:
    """The baseline's own sparse kernel with its density: its keys stay the baseline's, and the sage
    row (which cannot replace a sparse kernel) is a row that says why, not bad input."""
    rows = whatif(("sage",), [*BASE, "methods.sparse=radial", "methods.sparse_density=0.2"]).frame
    sage = rows.set_index("whatif").loc["sage"]
    assert not sage["runs"] and "cannot combine with attention=sage" in sage["reason"]
    assert rows.set_index("whatif").loc["baseline", "runs"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["methods.sparse=svg"], "methods.sparse_density"),
        (["methods.sparse_density=0.3"], "methods.sparse"),
        (["methods.sparse=nope", "methods.sparse_density=0.3"], "methods.sparse"),
        (["methods.sparse=svg", "methods.sparse_density=0"], "methods.sparse_density"),
        (
            ["methods.sparse=svg", "methods.sparse_density=0.3", "methods.sparse_dense_layers=31"],
            "methods.sparse_dense_layers",
        ),
        (["methods.sparse=svg", "methods.sparse_density=0.3", "attention=sage"], "methods.sparse"),
    ],
)
def test_bad_sparse_settings_are_refused(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        analyze(load([*BASE, *overrides], "report"))
    assert exc.value.field == field


@pytest.mark.parametrize(
    "names", [("sage", "svg"), ("cfg_batch", "few_step"), ("teacache", "magcache"), ("svg", "vsa")]
)
def test_methods_that_cannot_combine_are_named(names: tuple[str, str]) -> None:
    from ditmeter.commands.whatif import combined

    with pytest.raises(ConfigError) as exc:
        combined(names)
    assert exc.value.field == "whatif" and all(n in exc.value.message for n in names)


def test_sweep_takes_method_keys_as_axes_and_costs_each_point_as_report() -> None:
    """Every point of a sweep over caches, CUDA graphs and sparse attention kernels equals ``report``
    with the same overrides (the cache's memory included)."""
    from ditmeter.commands.sweep import sweep

    base = ["model=wan2.1-t2v-1.3b", "workload=w002-512p"]
    grids = [
        ["device=[h100-sxm,h20]", "gemm_dtype=[null,fp8]", "methods.cache=[null,magcache]"],
        ["device=[h100-sxm,rtx4090]", "methods.cache=[null,magcache]", "methods.cuda_graphs=[false,true]"],
        [
            "device=h100-sxm",
            "methods.sparse=[svg,vsa]",
            "methods.sparse_density=0.3",
            "methods.sparse_dense_steps=0.2",
        ],
    ]
    for axes in grids:
        frame = sweep([*base, *axes]).frame
        keys = [a.split("=")[0] for a in axes if a.startswith(("methods.", "gemm_dtype")) and "[" in a]
        fixed = [a for a in axes if a.startswith("methods.") and "[" not in a]
        for _, row in frame.iterrows():
            values = {k: row[k] for k in keys}
            point = [*base, f"device={row['device']}", *fixed]
            point += [f"{k}={'null' if v is None else str(v).lower()}" for k, v in values.items()]
            a, view = analyze(load(point, "report"))
            assert row["per_video_s"] == pytest.approx(view.per_video_s, rel=1e-9), point
            assert row["peak_per_gpu_bytes"] == a.memory.peak_per_gpu_bytes, point


def test_fp8_weights_are_one_byte_each_and_lose_their_per_call_cast() -> None:
    """gemm_dtype=fp8: every nn.Linear's weight in the real official 1.3B DiT's blocks (built on the
    meta device) holds one byte an element plus one fp32 scale per output channel, its bias, the
    embeddings, the head and the rest keep fp32 (the official DiT's weights; LightX2V quantizes the
    blocks only); the timeline's DiT weights shrink by as much; an official
    linear no longer casts its weight to bf16 each call and its GEMM reads the FP8 weight and the FP8
    activation (one byte an element, one fp32 scale per token and per output channel)."""
    import torch

    from ditmeter.models.wan21.builders import build_official_dit

    a, _ = _view()
    f8, _ = _view("gemm_dtype=fp8")
    module = build_official_dit(a.model)
    named = module.named_modules()
    linears = [m for n, m in named if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    assert 0 < len(linears) < sum(isinstance(m, torch.nn.Linear) for m in module.modules())
    linear = sum(m.weight.numel() for m in linears)
    scales = sum(4 * m.out_features for m in linears)
    total = sum(p.numel() for p in module.parameters())
    assert f8.footprint.weights_by_dtype == {"fp8": linear + scales, "fp32": 4 * (total - linear)}
    assert a.footprint.weights_by_dtype == {"fp32": 4 * total}
    resident = [{ph.stage: ph.resident.get("dit", 0) for ph in x.memory.phases}["dit"] for x in (a, f8)]
    assert resident[0] - resident[1] == 3 * linear - scales
    from ditmeter.analytic.tree import walk

    a8, v8 = _view("gemm_dtype=fp8")
    sk8 = a8.stage_kernels(a8.forward, v8.prediction.plan)
    row = next(r for r in walk(a8.forward.tree, "dit") if r.module_id == "dit.blocks.0.ffn.0")
    calls = sk8.calls(row)
    assert calls is not None
    d = dict(row.dims)
    weights = int(d["in_features"]) * int(d["out_features"])
    sizes = [c[0].cost.moved_bytes for c in calls]
    assert weights * 6 not in sizes  # no fp32 -> bf16 weight cast
    gemm = next(c[0] for c in calls if c[0].rule == "linear")
    _, bf = _view()
    plain = a.stage_kernels(a.forward, bf.prediction.plan).calls(row)
    assert plain is not None
    assert any(c[0].cost.moved_bytes == weights * 6 for c in plain)
    plain_gemm = next(c[0] for c in plain if c[0].rule == "linear")
    tokens, k, n = a8.geometry.tokens, int(d["in_features"]), int(d["out_features"])
    # bf16 activation and weight (2 bytes) read as FP8 (1 byte) with their fp32 scales
    assert plain_gemm.cost.moved_bytes - gemm.cost.moved_bytes == tokens * k + weights - 4 * tokens - 4 * n
    # outside the blocks (the time embedding) the linear runs as without fp8: its cast, no quantize kernel
    embedding = next(r for r in walk(a8.forward.tree, "dit") if r.module_id == "dit.time_embedding.0")
    assert sk8.calls(embedding) == a.stage_kernels(a.forward, bf.prediction.plan).calls(embedding)


def test_cuda_graphs_under_a_plan_replace_each_ranks_launches() -> None:
    """Ulysses 2 on H100s: one rank's forward under CUDA graphs has its launch overhead at 0.875 of
    the 5 µs per launch (the same ratio as on one GPU), its collectives unchanged."""

    def estimate(*extra: str):  # type: ignore[no-untyped-def]
        _, view = analyze(load([*BASE, "parallel.ulysses=2", *extra], "report"))
        assert view.plan is not None
        return view.plan.estimate

    plain, graphs = estimate(), estimate("methods.cuda_graphs=true")
    assert graphs.compute.overhead_s == pytest.approx(plain.compute.overhead_s * 0.875 / 5, rel=1e-9)
    assert graphs.comm_video_s == plain.comm_video_s


def test_a_rounded_share_is_said_per_row() -> None:
    """w001-tiny runs 1 step of 2 guidance forwards: a 0.95 share is 1.9 forwards, of which 1 is
    skipped (the first always computes). The TeaCache row and the combined row say so; the FP8
    row, which caches nothing, does not; at 0.5 (exactly 1) nothing is said."""
    base = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]
    result = whatif(["teacache", "fp8"], [*base, "methods.cache_skip=0.95"])
    said = (
        "methods.cache_skip=0.95 of 2 forwards is 1.9: 1 skipped, whole forwards, the first always computed"
    )
    assert result.rounded == (f"teacache: {said}", f"all together: {said}")
    assert "_rounded" not in result.frame.columns
    assert whatif(["teacache"], [*base, "methods.cache_skip=0.5"]).rounded == ()
