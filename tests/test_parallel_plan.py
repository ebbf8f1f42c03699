"""Multi-GPU plans (``parallel.*``) per GPU: the keys and their errors, the official padding and
the per-GPU time by hand, the memory per GPU against a traced FSDP2 run, the artifacts and the
sweep's plan keys."""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from pathlib import Path

import attrs
import pyarrow.parquet as pq
import pytest

from ditmeter.analytic.parallel import ParallelPlan, rank_forward_time
from ditmeter.analytic.tree import walk
from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load
from ditmeter.reports.parallel_report import PARALLEL_SCHEMA, plan_estimate

REPO = Path(__file__).resolve().parents[1]
BIG = ["model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm"]
TINY = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"]


def _report(args: list[str], root: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["report", *args, f"output_root={root}"])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ([*TINY, "parallel.gpus=4", "parallel.ulysses=2"], "parallel.gpus"),
        ([*TINY, "parallel.cfg=3"], "parallel.cfg"),
        ([*TINY, "parallel.ring=128"], "parallel.ring"),  # beyond the largest NVLink domain (72)
        ([*TINY, "parallel.ring=12"], "parallel.gpus"),  # not whole H100 nodes of 8
        ([*TINY, "parallel.ulysses=true"], "parallel.ulysses"),
        ([*TINY, "parallel.dit_fsdp=2"], "parallel.dit_fsdp"),
        ([*TINY, "parallel.tp=2"], "parallel.tp"),
        ([*TINY, "parallel.ulysses=8"], "parallel.ulysses"),  # the 1.3B's 12 heads
        ([*TINY, "pipeline=diffusers", "parallel.ring=3"], "parallel"),  # 512 tokens; diffusers does not pad
        ([*TINY, "pipeline=diffusers", "workload.guidance_scale=1.0", "parallel.cfg=2"], "parallel.cfg"),
        (["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "parallel.ulysses=2"], "parallel"),  # no device
    ],
)
def test_a_bad_plan_is_one_line_exit_2_and_writes_nothing(
    args: list[str], field: str, tmp_path: Path
) -> None:
    rc, _, err = _report(args, tmp_path / "out")
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"ditmeter: error: {field}:"), line
    assert not (tmp_path / "out").exists()


def test_gpus_must_be_the_product_and_defaults_to_it() -> None:
    assert ParallelPlan.from_mapping({"ulysses": 4, "ring": 2}).gpus == 8
    assert ParallelPlan.from_mapping({"ulysses": 2, "cfg": 2, "gpus": 4}).name == "4 GPUs: ulysses 2 × cfg 2"
    assert ParallelPlan.from_mapping(None) == ParallelPlan()


def _plan(args: list[str]):  # type: ignore[no-untyped-def]
    cfg = load(args, "report")
    analysis, view = analyze(cfg)
    assert view.plan is not None
    return analysis, view.plan.estimate


def test_the_official_pads_the_sequence_and_computes_the_padding() -> None:
    """1.3B at w001-tiny: 256 tokens on ring 3 → padded to 258, 86 per GPU. By hand, one block's
    self-attention core on a GPU is 3 ring calls of 12 heads, 86 queries × 86 keys, head dim 128:
    4 × 3 × 12 × 86 × 86 × 128 FLOPs; the ring passes this GPU's K and V (2 × 86 × 12 × 128 bf16)."""
    _, est = _plan([*TINY, "parallel.ring=3"])
    rank = est.rank
    assert (rank.tokens, rank.padded_tokens) == (256, 258)
    assert any("padded to 258" in n for n in rank.notes)
    rows = {r.module_id: r for r in walk(rank.forward)}
    core = rows["blocks.0.self_attn.attn_core"]
    assert core.cost.tensor_flops == 4 * 3 * 12 * 86 * 86 * 128
    ring = next(t for t in est.comms if t.comm.spec.op == "send_recv")
    assert (ring.comm.spec.group_size, ring.comm.spec.input_bytes, ring.comm.spec.count) == (
        3,
        2 * 86 * 12 * 128 * 2,
        30,
    )
    # the padded tokens are work: one GPU's FFN runs 86 rows, not 256 / 3
    ffn = rows["blocks.0.ffn.0"]
    assert ffn.cost.tensor_flops == 2 * 86 * 1536 * 8960


def test_ulysses_8_on_h100_communication_by_hand() -> None:
    """T2V-14B 720p-81f, Ulysses 8 on H100 SXM (fabric nvswitch-hopper): each GPU holds 75,600 / 8
    = 9,450 tokens; per block 4 all-to-alls of 9,450 × 5,120 bf16 = 96,768,000 B, each sending 7/8
    of it; then one all-gather of the head's 9,450 × 64 bf16 output (9,676,800 B gathered). On the
    8-GPU curves (aiconfigurator's H100 rows): the all-to-all between 64 MiB (265.35 GB/s) and 128
    MiB (291.84), log2(96,768,000 / 67,108,864) = 0.52803 of the way: 279.34 GB/s; the all-gather
    between 8 MiB (163.62) and 16 MiB (213.19), log2(9,676,800 / 8,388,608) = 0.20610 of the way:
    173.84 GB/s (both above the 10.59 µs floor). Nothing hides either."""
    _, est = _plan([*BIG, "parallel.ulysses=8"])
    a2a = 7 / 8 * 96_768_000 / ((265.35 + 0.52803 * (291.84 - 265.35)) * 1e9)  # 303.1 µs
    gather = 7 / 8 * 8 * 9_450 * 64 * 2 / ((163.62 + 0.20610 * (213.19 - 163.62)) * 1e9)  # 48.7 µs
    assert est.exposed_s("forward") == pytest.approx(160 * a2a + gather, rel=1e-5)
    assert est.forward_s == pytest.approx(est.compute.predicted_s + 160 * a2a + gather, rel=1e-5)
    assert est.step_s == pytest.approx(2 * est.forward_s, rel=1e-12)  # official: 2 forwards per step
    assert est.comm_bytes("forward") == 160 * 7 * 96_768_000 // 8 + 7 * 8 * 9_450 * 64 * 2 // 8
    # the speedup over the one-GPU report of the same video (a run without a plan), per GPU
    one_gpu = analyze(load(BIG, "report"))[1].per_video_s
    assert one_gpu is not None and 1 < one_gpu / est.per_video_s < 8
    assert est.efficiency == pytest.approx(one_gpu / est.per_video_s / 8, rel=1e-12)


def test_the_official_ring_hides_its_kv_under_the_attention_by_hand() -> None:
    """T2V-14B 720p-81f, ring 2 on H100 SXM (fabric nvswitch-hopper): each GPU holds 75,600 / 2 =
    37,800 tokens. Per block the ring passes this GPU's K and V, 2 × 37,800 × 40 heads × 128 bf16 =
    774,144,000 B (costed as an all-gather of 1,548,288,000 B on 2 GPUs: beyond the 2-GPU curve's
    largest size, 512 MiB, held at its 258.47 GB/s: 2.995 ms), under the attention of the chunk
    before it (4 × 2 calls × 40 × 37,800² × 128 = 5.85e13 FLOPs: 59 ms at the 989.4 TFLOP/s peak,
    more at the rate FA3 reaches); only the head's all-gather, 1/2 × 2 × 37,800 × 64 bf16, is waited
    for: on the 2-GPU curve between 8 MiB (115.64 GB/s) and 16 MiB (149.80), log2(9,676,800 /
    8,388,608) = 0.20610 of the way, 122.68 GB/s: 39.44 µs a forward. diffusers' ring all-gathers
    the same K and V and waits: 40 × 2.995 ms more."""
    ring_call = 774_144_000 / 258.47e9
    head = 37_800 * 64 * 2 / ((115.64 + 0.20610 * (149.80 - 115.64)) * 1e9)
    _, official = _plan([*BIG, "parallel.ring=2"])
    (ring,) = [t for t in official.comms if t.comm.spec.op == "send_recv"]
    assert (ring.sent_bytes, ring.comm.spec.count) == (774_144_000, 40)
    assert ring.call_s == pytest.approx(ring_call, rel=1e-5) and ring.exposed_s == 0
    assert official.exposed_s("forward") == pytest.approx(head, rel=1e-5)  # 39.44 µs
    _, diffusers = _plan([*BIG, "parallel.ring=2", "pipeline=diffusers"])
    assert diffusers.exposed_s("forward") == pytest.approx(40 * ring_call + head, rel=1e-5)  # 119.8 ms


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        # 37,800 rows: 4 × 37,800 × 5120 bf16 + the norm's 37,800 × (5120 × 3 + 1) fp32 = 3,870,871,200,
        # and the all-to-all's second q, k and v: 3 × 37,800 × 5120 bf16
        (["parallel.ulysses=2"], 3_870_871_200 + 3 * 37_800 * 5120 * 2),
        # official ring 2: K and V of two chunks in flight, each 37,800 × 5120 bf16
        (["parallel.ring=2"], 3_870_871_200 + 2 * 2 * 37_800 * 5120 * 2),
        # 18,900 rows: 1,935,435,600; q, k, v twice: 3 × 18,900 × 5120; two chunks of K and V
        # of 37,800 tokens × 20 heads × 128
        (
            ["parallel.ulysses=2", "parallel.ring=2"],
            1_935_435_600 + 3 * 18_900 * 5120 * 2 + 4 * 37_800 * 2560 * 2,
        ),
        # diffusers ring 4: the whole gathered K and V, 2 × 75,600 × 5120 bf16
        (["parallel.ring=4", "pipeline=diffusers"], 1_935_435_600 + 2 * 75_600 * 5120 * 2),
    ],
    ids=["ulysses-2", "official-ring-2", "ulysses-2-ring-2", "diffusers-ring-4"],
)
def test_the_self_attention_phase_holds_the_exchanged_tensors_by_hand(plan: list[str], expected: int) -> None:
    """One GPU's live activations in the self-attention phase of a 14B 720p-81f block: its rows'
    q, k, v and output (bf16), the RMSNorm's fp32 copies, plus what the plan's exchange holds."""
    _, est = _plan([*BIG, *plan])
    assert est.rank.footprint.stage_bytes["self_attention"] == expected


def test_cfg_parallel_halves_the_forwards_of_a_step() -> None:
    """ulysses 4 × cfg 2 runs the forward of ulysses 4 (the same shard) once a step instead of
    twice, and the two halves exchange their noise predictions: 16 × 21 × 90 × 160 bf16 latents,
    all-gathered over 2 GPUs (half of 2 × 9,676,800 B sent: on nvswitch-hopper's 2-GPU curve between
    16 MiB, 149.80 GB/s, and 32 MiB, 180.59, log2(19,353,600 / 16,777,216) = 0.20610 of the way)."""
    _, four = _plan([*BIG, "parallel.ulysses=4"])
    _, cfg2 = _plan([*BIG, "parallel.ulysses=4", "parallel.cfg=2"])
    assert cfg2.forwards_per_gpu_step == 1 and four.forwards_per_gpu_step == 2
    exchange = 9_676_800 / ((149.80 + 0.20610 * (180.59 - 149.80)) * 1e9)  # 61.97 µs
    assert cfg2.step_s == pytest.approx(four.step_s / 2 + exchange, rel=1e-9)
    assert cfg2.per_video_s < four.per_video_s


def test_fsdp_gathers_hide_under_the_block_unless_the_block_is_shorter() -> None:
    """The first block's gather is waited for, each next one only beyond the block before it: at
    14B 720p a 703 MB bf16 block gathers in ~1.4 ms under a ~30 ms block; at the tiny workload on
    PCIe (an RTX 4090) it does not hide."""
    _, big = _plan([*BIG, "parallel.ulysses=8", "parallel.dit_fsdp=true"])
    (blocks,) = [t for t in big.comms if t.comm.overlap == "block"]
    assert blocks.exposed_s == pytest.approx(blocks.call_s, rel=1e-12)
    assert blocks.comm.spec.output_bytes == pytest.approx(2 * 351e6, rel=0.01)  # about 703 MB
    tiny_plan = [*TINY[:2], "device=rtx4090", "parallel.ulysses=2", "parallel.dit_fsdp=true"]
    _, tiny = _plan([*tiny_plan, "time.execution=compiled"])  # the fused blocks: shortest
    (blocks,) = [t for t in tiny.comms if t.comm.overlap == "block"]
    assert blocks.exposed_s > 10 * blocks.call_s


RING_FSDP_4090 = [
    "model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=rtx4090",
    "parallel.ring=8", "parallel.dit_fsdp=true",
]  # fmt: skip


RING_FSDP_H100 = [
    "model=wan2.1-t2v-14b", "workload=720p-81f", "device=h100-sxm",
    "parallel.ring=8", "parallel.dit_fsdp=true",
]  # fmt: skip


def _ring_fsdp(slow_attention: float = 1.0, args: list[str] = RING_FSDP_4090):  # type: ignore[no-untyped-def]
    """(the estimate, one block's compute, its attention's) of a ring + FSDP plan (the 4090 cell by
    default), every attention curve scaled by ``slow_attention`` (below 1: each call slower)."""
    cfg = load(args, "report")
    analysis, view = analyze(cfg)
    assert view.plan is not None and cfg.device is not None and cfg.time.kernels is not None
    kernels = cfg.time.kernels
    scaled = {
        b: {d: attrs.evolve(c, fraction=tuple(f * slow_attention for f in c.fraction)) for d, c in cs.items()}
        for b, cs in kernels.attention.items()
    }
    time = attrs.evolve(cfg.time, kernels=attrs.evolve(kernels, attention=scaled))
    rank = view.plan.estimate.rank
    est = plan_estimate(analysis, cfg.device, time, dict(view.plan.estimate.stage_video_s), rank)
    stage = analysis.stage_kernels(rank.forward_stage(analysis.forward), time)
    _, block_s, attention_s = rank_forward_time(rank, cfg.device, time, stage)
    return est, block_s, attention_s


@pytest.mark.parametrize(
    ("args", "blocks", "exchange_longer"), [(RING_FSDP_4090, 30, True), (RING_FSDP_H100, 40, False)]
)
def test_the_rings_exchange_and_the_weight_gather_share_one_link(
    args: list[str], blocks: int, exchange_longer: bool
) -> None:
    """Ring 8 with DiT FSDP: the ring's K/V exchange hides under each block's attention and the next
    block's weight gather under the block, but both cross the same link, so the gather hides only
    under the block's compute the exchange left free. By hand from the estimate's own call times:
    per block, the ring hides min(exchange, attention); the gather's cover is the block less that.
    On 8 RTX 4090s (the Wan2.1 README's 1.3B cell, through host memory) the exchange outlasts the
    attention; on 8 H100s (14B, NVLink) the attention outlasts the exchange."""
    est, block_s, attention_s = _ring_fsdp(args=args)
    (ring,) = [t for t in est.comms if t.comm.overlap == "attention"]
    (gather,) = [t for t in est.comms if t.comm.overlap == "block" and t.comm.per == "forward"]
    assert ring.comm.spec.count == gather.comm.spec.count == blocks  # one of each per block
    assert (ring.call_s > attention_s) is exchange_longer
    cover = block_s - (attention_s if exchange_longer else ring.call_s)
    assert gather.hidden_s == pytest.approx(cover, rel=1e-12)
    later = (blocks - 1) * max(0.0, gather.call_s - cover)
    assert gather.exposed_s == pytest.approx(gather.call_s + later, rel=1e-12)
    assert ring.exposed_s == pytest.approx(blocks * max(0.0, ring.call_s - attention_s), rel=1e-12)


def test_a_slower_attention_never_makes_a_ring_with_fsdp_faster() -> None:
    """Halving every attention curve (each call twice as slow) cannot shorten the step: counting the
    attention as cover for both transfers (the exchange and the gather, each against its own
    compute) did, by up to the attention's growth."""
    base, _, attention = _ring_fsdp()
    slower, _, slow_attention = _ring_fsdp(0.5)
    assert slow_attention > 1.5 * attention
    assert slower.step_s >= base.step_s * (1 - 1e-12)


def test_memory_per_gpu_falls_with_fsdp_as_the_traced_fsdp2_run_holds_it() -> None:
    """FSDP2 ``fully_shard`` per block and at the root, under FakeTensorMode at 2 and 4 ranks: the
    bytes of the parameter shards one rank holds (the real module's, in their dtypes) equal the
    analytic sharded DiT weights within the padding (FSDP2 pads every parameter's dim 0, the
    analytic share is FSDP1's flat 1/N: 0.11% apart at 4 ranks of this small model), and fall as
    the ranks grow; the analytic peak per GPU falls with them."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ditmeter.analytic.parallel import fsdp_weight_bytes
    from ditmeter.models.wan21.builders import build_diffusers_dit
    from ditmeter.tracer.collectives import fake_rank

    cfg = load([*TINY, "pipeline=diffusers", "model.num_layers=2"], "report")
    analysis, _ = analyze(cfg)
    traced = {}
    for ranks in (2, 4):
        with fake_rank(0, ranks), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mode = FakeTensorMode()
            with mode:
                model = build_diffusers_dit(cfg.model, cfg.workload.dtype, device="cpu")
            model.requires_grad_(False)
            mesh = init_device_mesh("cpu", (ranks,))
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
            with mode:
                for block in model.blocks:
                    fully_shard(block, mesh=mesh, mp_policy=policy)
                fully_shard(model, mesh=mesh, mp_policy=policy)
            traced[ranks] = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    tree, weights = analysis.forward.tree, analysis.footprint.weights_by_dtype
    for ranks, held in traced.items():
        sharded = sum(fsdp_weight_bytes(tree, weights, ranks)[0].values())
        assert sharded == pytest.approx(held, rel=2e-3), ranks
    assert traced[4] < traced[2] < sum(weights.values())
    peaks = [
        _plan([*BIG, f"parallel.ulysses={n}", "parallel.dit_fsdp=true", "parallel.t5_fsdp=true"])[
            1
        ].peak_per_gpu_bytes
        for n in (2, 4, 8)
    ]
    assert peaks[0] > peaks[1] > peaks[2]


def test_a_plan_report_keeps_per_gpu_figures_and_writes_its_files(tmp_path: Path) -> None:
    rc, out, _ = _report(
        [*BIG, "parallel.ulysses=8", "parallel.dit_fsdp=true", "parallel.t5_fsdp=true"], tmp_path
    )
    assert rc == 0
    assert re.search(r"plan 8 GPUs: ulysses 8, DiT FSDP, T5 FSDP: .* per video, \d\.\d\d× over 1 GPU", out)
    (folder,) = tmp_path.glob("*/static_analysis/wan2_1")
    report = json.loads((folder / "report.json").read_text())
    par = report["parallel"]
    assert (
        report["time"]["per_video_s"]
        == par["per_gpu"]["per_video_s"]
        < report["time"]["single_gpu_per_video_s"]
    )
    assert report["memory"]["peak_per_gpu_bytes"] == par["per_gpu"]["peak_per_gpu_bytes"]
    assert par["speedup"] == pytest.approx(par["single_gpu"]["per_video_s"] / par["per_gpu"]["per_video_s"])
    table = pq.read_table(folder / "parallel.parquet")
    assert table.schema.names == PARALLEL_SCHEMA.names
    assert table.schema.metadata[b"ditmeter.table"] == b"parallel"
    assert len(table) == len(par["collectives"]) and (folder / "scaling.png").stat().st_size > 10_000
    assert "## Many GPUs" in (folder / "summary.md").read_text()


def test_parallel_parquet_and_section_are_documented() -> None:
    text = (REPO / "docs" / "artifacts.md").read_text()
    section = text[text.index("## `parallel.parquet`") :].split("\n## ")[0]
    names = [
        re.findall(r"`([^`]+)`", line.split(" | ")[0])[0]
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    assert names == PARALLEL_SCHEMA.names


def test_the_sweep_takes_plan_keys_and_agrees_with_report() -> None:
    from ditmeter.commands.sweep import sweep

    result = sweep([*BIG, "parallel.ulysses=[1,2,8]", "parallel.dit_fsdp=true"])
    frame = result.frame
    assert list(frame["gpus"]) == [1, 2, 8]
    assert frame["speedup"].iloc[0] == 1.0 and frame["speedup"].is_monotonic_increasing
    _, est = _plan([*BIG, "parallel.ulysses=8", "parallel.dit_fsdp=true"])
    row = frame.iloc[2]
    assert row["per_video_s"] == pytest.approx(est.per_video_s, rel=1e-9)
    assert row["peak_per_gpu_bytes"] == est.peak_per_gpu_bytes
    # one GPU's whole-video split would read as the plan's (its roofline above the plan's time):
    # null on the plan rows, kept on the one-GPU row
    from ditmeter.reports.sweep_table import ONE_GPU_COLUMNS

    one, planned = frame.iloc[0], frame.iloc[1:]
    assert one["roofline_per_video_s"] > row["per_video_s"]  # what a plan row used to show
    assert all(one[c] > 0 for c in ONE_GPU_COLUMNS)
    assert planned[list(ONE_GPU_COLUMNS)].isna().all().all()


TRACE = [
    "model=wan2.1-t2v-1.3b",
    "workload=w001-tiny",
    "device=h100-sxm",
    "pipeline=diffusers",
    "stages=[dit]",
]


def _trace(args: list[str], root: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["trace", *args, f"output_root={root}"])
    return rc, out.getvalue()


def test_trace_under_a_plan_gates_rank_0_on_the_real_parallel_code(tmp_path: Path) -> None:
    """``trace`` runs rank 0 of diffusers' own context-parallel DiT under the fake process group:
    its per-module FLOPs equal the per-GPU cost tree, exactly, and its collectives, captured as
    graph nodes beside the compute nodes, equal the plan; ``compare`` re-reads both."""
    rc, out = _trace([*TRACE, "parallel.ulysses=2", "parallel.ring=2"], tmp_path)
    assert rc == 0, out
    assert "collectives of the traced rank: 3 kinds, exactly the plan's" in out and "gate: PASS" in out
    (folder,) = tmp_path.glob("*/static_analysis/wan2_1")
    report = json.loads((folder / "report.json").read_text())
    assert report["compare"]["max_rel_error"] == 0 and report["compare"]["collectives"]["passed"]
    nodes = pq.read_table(folder / "nodes.parquet").to_pandas()
    a2a = nodes[nodes["op"] == "_c10d_functional.all_to_all_single.default"]
    assert len(a2a) == 4 * 30 and set(a2a["module_id"]) == {f"dit.blocks.{i}.self_attn" for i in range(30)}
    # one rank's share: 512 tokens split 4 ways
    assert report["parallel"]["tokens_per_gpu"] == 512 // 4
    out2 = io.StringIO()
    with contextlib.redirect_stdout(out2):
        assert main(["compare", f"output_root={tmp_path}", "compare.tolerance=0"]) == 0
    assert "exactly the plan's" in out2.getvalue()


def test_a_wrong_communication_rule_fails_the_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three all-to-alls per block instead of four: exit 1, and the verdict says the collectives differ."""
    import attrs

    from ditmeter.models.wan21 import parallel

    right = parallel.reference_collectives

    def wrong(analysis, cp):  # type: ignore[no-untyped-def]
        return [
            attrs.evolve(c, count=c.count * 3 // 4) if c.op == "all_to_all_single" else c
            for c in right(analysis, cp)
        ]

    monkeypatch.setattr(parallel, "reference_collectives", wrong)
    rc, out = _trace([*TRACE, "parallel.ulysses=2"], tmp_path)
    assert rc == 1
    assert "all_to_all_single over 2 ranks" in out and "analytic 90, traced 120" in out
    assert "collectives differ from the plan" in out


def test_trace_refuses_a_plan_the_reference_cannot_run(tmp_path: Path) -> None:
    """The official pipeline pads 256 tokens to 258 for ring 3 (report costs it); the traced
    diffusers code needs an exact split: exit 2, nothing left."""
    rc, _ = _trace(
        ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm", "stages=[dit]", "parallel.ring=3"],
        tmp_path / "out",
    )
    assert rc == 2 and not (tmp_path / "out").exists()


def test_cfg_parallel_counts_one_gpus_forwards_per_video() -> None:
    """Under cfg 2 a GPU runs half the forwards of the video: its roofline stays below its
    predicted time and its DiT runs are 50 of 100."""
    cfg = load([*BIG, "parallel.ulysses=4", "parallel.cfg=2"], "report")
    analysis, view = analyze(cfg)
    assert analysis.forward.runs_per_video == 50
    assert view.prediction is not None and view.per_video_s is not None
    assert view.prediction.roofline_video_s < view.per_video_s


def test_stages_without_the_dit_still_report_and_trace(tmp_path: Path) -> None:
    """Regression: stages=[text_encoder] with a device (the time breakdown falls back to the stage
    shown) and traced (no DiT, so no collectives to read)."""
    args = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "stages=[text_encoder]"]
    assert _report([*args, "device=h100-sxm"], tmp_path / "r")[0] == 0
    assert _trace(args, tmp_path / "t")[0] == 0


def test_fsdp_memory_is_live_only_while_its_component_runs() -> None:
    """The gathered DiT blocks and root are counted while the DiT runs, not at the VAE decode."""
    _, est = _plan([*BIG, "parallel.ulysses=8", "parallel.dit_fsdp=true", "parallel.t5_fsdp=true"])
    phases = {p.stage: p for p in est.rank.memory.phases}
    resident = phases["vae_decode"].resident["dit"]
    assert resident == pytest.approx(14_288_491_584 * 4 / 8, rel=1e-3)  # the fp32 share, no gathered blocks


def test_wan21_official_plans_attend_with_xfusers_fa2_by_hand() -> None:
    """Wan2.1's official USP calls xDiT's xFuserLongContextAttention() at its default
    AttnType.FA (FlashAttention-2) even where one GPU takes FA3 (built). T2V-14B 720p-81f, Ulysses 8
    on H100 SXM, fused leaves: each GPU attends 40 / 8 = 5 heads over all 75,600 tokens, head dim
    128: 4 × 5 × 75,600² × 128 FLOPs per block at FA2's 0.374 of 989.4 TFLOP/s (hopper.yaml, beyond
    16k tokens), in waves (docs/eager.md): 5 × ⌈75,600 / 128⌉ = 2,955 CTAs are 11.2 waves of the
    H100's 132 SMs × 2, the benchmark's 2,048 are 7.76; Wan2.2's own distributed_attention keeps
    flash_attention's kernel (FA3 at 0.655; 40 × 591 tiles over 132 persistent CTAs)."""
    flops = 4 * 5 * 75_600**2 * 128
    fa2 = 0.374 / (2048 / (8 * 264)) * (2955 / (12 * 264))
    fa3 = 0.655 / (2048 / (16 * 132)) * (23_640 / (180 * 132))
    plan = ["parallel.ulysses=8", "time.execution=compiled"]
    _, v = analyze(load([*BIG, *plan], "report"))
    assert v.prediction is not None and v.prediction.backends["dit"] == "fa2"
    core = v.prediction.modules["dit.blocks.0.self_attn.attn_core"]
    assert core.compute_s == pytest.approx(flops / (989.4e12 * fa2), rel=1e-9)
    _, one = analyze(load([*BIG, "time.execution=compiled", "attention=fa3"], "report"))
    assert one.prediction is not None and one.prediction.backends["dit"] == "fa3"  # one GPU, FA3 built
    _, user = analyze(load([*BIG, *plan, "attention=fa3"], "report"))  # the user's choice wins
    assert user.prediction is not None and user.prediction.backends["dit"] == "fa3"
    a14b = ["model=wan2.2-t2v-a14b", "workload=720p-81f", "device=h100-sxm"]
    _, wan22 = analyze(load([*a14b, *plan, "attention=fa3"], "report"))
    assert wan22.prediction is not None and wan22.prediction.backends["dit"] == "fa3"
    _, wan22_fa2 = analyze(load([*a14b, *plan], "report"))  # auto: what requirements.txt installs
    assert wan22_fa2.prediction is not None and wan22_fa2.prediction.backends["dit"] == "fa2"
    _, est = _plan([*BIG, *plan])
    one_gpu_core = one.prediction.modules["dit.blocks.0.self_attn.attn_core"].compute_s
    assert one_gpu_core == pytest.approx(8 * flops / (989.4e12 * fa3), rel=1e-9)
    assert est.rank.attention_impl == "fa2"
