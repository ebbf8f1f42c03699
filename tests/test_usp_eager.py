"""The eager kernels around one rank's self-attention under the official plans, by hand from the
code (xDiT's ``xFuserLongContextAttention`` over yunchang's all-to-alls for Wan2.1, Wan2.2's own
``distributed_attention``): docs/parallel.md, "The code around each call"."""

from __future__ import annotations

from ditmeter.analytic.eager import eager_calls
from ditmeter.analytic.parallel import ParallelPlan
from ditmeter.analytic.tree import walk
from ditmeter.commands.report import analyze
from ditmeter.config import load


def _leaf_calls(model: str, plan: ParallelPlan, leaf: str, *extra: str):  # type: ignore[no-untyped-def]
    cfg = load([f"model={model}", "workload=w003-720p", "device=h100-sxm", *extra], "report")
    analysis, _ = analyze(cfg)
    rank = cfg.family.parallel(analysis, plan, cfg.offload)
    (row,) = [r for r in walk(rank.forward, expand=False) if r.module_id == leaf]
    calls = eager_calls("official", "dit", row.module_id, row.rule, dict(row.dims), "bf16")
    assert calls is not None
    return rank, calls


def _e(rank, ulysses: int, ring: int = 1) -> int:  # type: ignore[no-untyped-def]
    """The rank's q elements, L·H·D / (U·R), with L the padded sequence and 40 heads of 128."""
    return int(rank.padded_tokens) * 40 * 128 // (ulysses * ring)


def test_xfuser_ulysses_8_adds_nine_copies_of_44_e_bytes() -> None:
    """Wan2.1 14B, Ulysses 8: half(q), half(k) (fp32 → bf16: 6E bytes each), the permute before each
    of the three input all-to-alls (4E each), the ring function's cast of its output to fp32 and back
    (6E each), the two permutes of the output all-to-all (4E each): 9 launches, 44E bytes, besides
    the flash kernel."""
    plan = ParallelPlan(ulysses=8, gpus=8)
    rank, calls = _leaf_calls("wan2.1-t2v-14b", plan, "blocks.*.self_attn.attn_core")
    copies = [c for c in calls if c.kind == "memory"]
    e = _e(rank, 8)
    assert sum(c.count for c in copies) == 9
    assert sum(c.bytes * c.count for c in copies) == 44 * e
    assert [c.op for c in calls if c.kind == "attention"] == ["flash_attention"]


def test_xfuser_ring_2_merges_once_fused() -> None:
    """Ulysses 4 × ring 2: no difference at the call but for the Ulysses degree (still 9 launches,
    44E); the merge of the second ring step: one fused kernel reading the fp32 running output (4E)
    and the bf16 block output (2E) and both log-sum-exps (E/128 fp32 each), writing 4E, and three
    small log-sum-exp kernels."""
    plan = ParallelPlan(ulysses=4, ring=2, gpus=8)
    rank, calls = _leaf_calls("wan2.1-t2v-14b", plan, "blocks.*.self_attn.attn_core")
    e = _e(rank, 4, 2)
    copies = [c for c in calls if c.kind == "memory"]
    assert sum(c.count for c in copies) == 9 and sum(c.bytes * c.count for c in copies) == 44 * e
    _, merge = _leaf_calls("wan2.1-t2v-14b", plan, "blocks.*.self_attn.ring_merge")
    lse = e // 128 * 4
    assert merge[0].bytes == 4 * e + 2 * e + 2 * lse + 4 * e and merge[0].count == 1
    assert sum(c.count for c in merge) == 4


def test_wan22_distributed_attention_copies() -> None:
    """Wan2.2 A14B, Ulysses 8 (its ``all_to_all``): half(q), half(k) (12E), each input's 8 head
    chunks made contiguous (24 launches, 4E per input) and concatenated (4E per input),
    ``flash_attention``'s ``cat`` of k and v over ``k_lens`` (4E each: the rank's 5 heads over the
    whole sequence), the output's ``cat`` (4E): 48E of large copies in 32 launches, besides the
    varlen offsets and the kernel."""
    plan = ParallelPlan(ulysses=8, gpus=8)
    rank, calls = _leaf_calls("wan2.2-t2v-a14b", plan, "blocks.*.self_attn.attn_core")
    e = _e(rank, 8)
    large = [c for c in calls if c.kind == "memory" and c.dtype != "i32"]  # not the varlen offsets
    assert sum(c.count for c in large) == 2 + 24 + 3 + 2 + 1  # 32 launches
    assert sum(c.bytes * c.count for c in large) == 48 * e


FULL = ("workload=720p-81f",)  # 21 latent frames of 45 × 80 tokens: 75,600


def test_the_official_rope_builds_the_whole_grids_table_on_every_rank() -> None:
    """``rope_apply`` under the official plans (Wan2.1 ``xdit_context_parallel.py``, Wan2.2
    ``sequence_parallel.py``), per q and k: the ``cat`` of the complex128 table for the whole grid,
    75,600 tokens × 64 values × 16 B = 77,414,400 B read and written whatever the rank's share;
    ``pad_freqs`` then ``torch.ones`` of the padding and a second ``cat`` to the padded length. At
    Ulysses 8 the 75,600 tokens split evenly (9,450 each): no ``ones``, the ``cat`` copies the
    table. At Ulysses 8 × ring 4 they pad to 75,616 (2,363 each): ``ones`` writes 16 × 1,024 =
    16,384 B and the ``cat`` reads 77,430,784 B and writes as many. The product reads the rank's
    rows only (2,363 × 1,024 B). One GPU: one table ``cat`` and no padding."""
    table = 75_600 * 64 * 16
    for model in ("wan2.1-t2v-14b", "wan2.2-t2v-a14b"):
        _, calls = _leaf_calls(model, ParallelPlan(ulysses=8, gpus=8), "blocks.*.self_attn.rope", *FULL)
        e = 9_450 * 40 * 128
        assert [(c.op, c.bytes, c.count) for c in calls] == [
            ("_to_copy", 12 * e, 2),  # fp32 -> float64
            ("cat", 2 * table, 2),  # the whole grid's table
            ("cat", 2 * table, 2),  # pad_freqs: nothing to pad, still a copy
            ("mul", 8 * e + 9_450 * 1024 + 8 * e, 2),  # the rank's rows of it
            ("cat", 16 * e, 2),
            ("stack", 16 * e, 2),
            ("_to_copy", 12 * e, 2),
        ], model
    rank, calls = _leaf_calls(
        "wan2.1-t2v-14b", ParallelPlan(ulysses=8, ring=4, gpus=32), "blocks.*.self_attn.rope", *FULL
    )
    assert rank.padded_tokens == 75_616
    padded = 75_616 * 64 * 16
    assert [(c.bytes, c.count) for c in calls if c.op == "ones"] == [(16 * 1024, 2)]
    assert [(c.bytes, c.count) for c in calls if c.op == "cat"][:2] == [
        (2 * table, 2),
        (table + 16 * 1024 + padded, 2),
    ]
    (mul,) = [c for c in calls if c.op == "mul"]
    e = 2_363 * 40 * 128
    assert mul.bytes == 8 * e + 2_363 * 1024 + 8 * e
    cfg = load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm", *FULL], "report")
    analysis, _ = analyze(cfg)
    (row,) = [
        r for r in walk(analysis.forward.tree, expand=False) if r.module_id == "blocks.*.self_attn.rope"
    ]
    one = eager_calls("official", "dit", row.module_id, row.rule, dict(row.dims), "bf16") or ()
    assert [c.bytes for c in one if c.op == "cat"] == [2 * table, 16 * 75_600 * 40 * 128]
    assert not [c for c in one if c.op == "ones"]


def test_one_gpu_keeps_the_one_gpu_kernels() -> None:
    """Without a plan the leaf has no sequence-parallel dims and its kernels are flash_attention's."""
    cfg = load(["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm"], "report")
    analysis, _ = analyze(cfg)
    rows = walk(analysis.forward.tree, expand=False)
    (row,) = [r for r in rows if r.module_id == "blocks.*.self_attn.attn_core"]
    assert "sp_ulysses" not in dict(row.dims)


def test_diffusers_plans_name_their_own_code() -> None:
    """A diffusers plan's attention leaf carries the plan's degrees and not xDiT's path: its kernels
    are diffusers' own (checked against its real launches in tests/test_parallel_trace.py)."""
    plan = ParallelPlan(ulysses=8, gpus=8)
    cfg = load(["model=wan2.1-t2v-14b", "workload=w003-720p", "pipeline=diffusers"], "report")
    analysis, _ = analyze(cfg)
    rank = cfg.family.parallel(analysis, plan, cfg.offload)
    rows = walk(rank.forward, expand=False)
    (row,) = [r for r in rows if r.module_id == "blocks.*.self_attn.attn_core"]
    dims = dict(row.dims)
    assert (dims["sp_ulysses"], dims["sp_ring"], dims["sp_xfuser"]) == (8, 1, False)


def _weight_casts(rank) -> int:  # type: ignore[no-untyped-def]
    """Weight-cast launches in one forward of the rank's blocks (each leaf's eager calls × its count)."""
    n = 0
    for row in walk(rank.forward, expand=False):
        if not row.module_id.startswith("blocks.*.") or row.kind != "leaf" or row.rule is None:
            continue
        calls = eager_calls("official", "dit", row.module_id, row.rule, dict(row.dims), "bf16") or ()
        n += sum(c.count for c in calls if c.kind == "memory" and c.operand == "weight") * row.copies
    return n


def test_fsdp_ranks_run_on_bf16_weights_with_no_per_call_cast() -> None:
    """``--dit_fsdp`` wraps the fp32 model with ``MixedPrecision(param_dtype=bf16)``
    (``wan/distributed/fsdp.py``): the blocks compute with the gathered bf16 weights, so the 10
    Linears of each of the 40 blocks (q, k, v, o of both attentions, the FFN's two) launch no
    weight cast; without FSDP each casts its fp32 weight every call (400 per forward, by hand).
    The rank still stores its fp32 shard: the same peak either way but for the gathered units."""
    plain, _ = _leaf_calls("wan2.1-t2v-14b", ParallelPlan(ulysses=8, gpus=8), "blocks.*.self_attn.q")
    fsdp, _ = _leaf_calls(
        "wan2.1-t2v-14b", ParallelPlan(ulysses=8, dit_fsdp=True, gpus=8), "blocks.*.self_attn.q"
    )
    assert _weight_casts(plain) == 10 * 40
    assert _weight_casts(fsdp) == 0
    fp32_params = plain.memory.components["dit"]["fp32"]
    assert fsdp.memory.components["dit"]["fp32"] == -(-fp32_params // 8)  # the fp32 shard stored
