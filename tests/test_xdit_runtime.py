"""``parallel.runtime=xdit``: xDiT 0.4.5's ``USP`` patched onto the diffusers modules (the ML.ENERGY
benchmark's ``_parallelize_wan_transformer``). Its collectives, kernels and FLOPs by hand from the
code (docs/parallel.md, "xDiT's patch on the diffusers modules"), its refusals, and that it costs
what the pipeline's own plan does not."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path

import pytest

from ditmeter.analytic.eager import eager_calls
from ditmeter.analytic.parallel import CollectiveSpec, ParallelPlan
from ditmeter.analytic.tree import walk
from ditmeter.cli import main
from ditmeter.commands.report import analyze
from ditmeter.config import load

#: Wan2.1 T2V-1.3B at 480p: 32,760 tokens, dim 1,536 = 12 heads of 128, 30 blocks, 512 context
#: tokens, bf16.
BASE = ["model=wan2.1-t2v-1.3b", "pipeline=diffusers", "workload=480p-81f", "device=h100-sxm"]
TOKENS, DIM, HEADS, HEAD_DIM, LAYERS, CONTEXT, BF16 = 32_760, 1_536, 12, 128, 30, 512, 2


def _rank(runtime: str, ulysses: int = 2, ring: int = 2):  # type: ignore[no-untyped-def]
    cfg = load(BASE, "report")
    analysis, _ = analyze(cfg)
    plan = ParallelPlan(ulysses=ulysses, ring=ring, gpus=ulysses * ring, runtime=runtime)
    return cfg.family.parallel(analysis, plan, cfg.offload)


def _specs(rank) -> Counter[CollectiveSpec]:  # type: ignore[no-untyped-def]
    return Counter(c.spec for c in rank.comms)


def test_the_split_context_adds_the_cross_attentions_collectives() -> None:
    """Ulysses 2 × ring 2 (4 ranks): beside the pipeline's own plan, per forward, the cross-attention's
    q and output all-to-alls (the rank's 8,190 tokens × 1,536 × 2 bytes, 2 per block), the context's k
    and v all-to-alls (512 / 4 = 128 tokens × 1,536 × 2 bytes, 2 per block) and the all-gather of the
    context's K and V over the ring (2 × 256 tokens × 6 heads × 128 × 2 bytes in, twice that out, 1 per
    block)."""
    own, xdit = _specs(_rank("own")), _specs(_rank("xdit"))
    rank_tokens = TOKENS // 4
    added = Counter(
        {
            CollectiveSpec("all_to_all_single", 2, rank_tokens * DIM * BF16, rank_tokens * DIM * BF16, 60): 1,
            CollectiveSpec("all_to_all_single", 2, 128 * DIM * BF16, 128 * DIM * BF16, 60): 1,
            CollectiveSpec(
                "all_gather_into_tensor", 2, 2 * 256 * 6 * 128 * BF16, 4 * 256 * 6 * 128 * BF16, 30
            ): 1,
        }
    )
    assert xdit - own == added
    assert own - xdit == Counter()  # the self-attention's and the head's are the same


def test_each_rank_projects_only_its_chunk_of_the_context() -> None:
    """The cross-attention's K and V projections run on 128 of the 512 context tokens per rank; the
    attention FLOPs are the same split another way (6 heads × 2 ring calls × 16,380 queries × 256 keys
    against 12 heads × 8,190 queries × 512 keys)."""
    own, xdit = _rank("own").forward.total.tensor_flops, _rank("xdit").forward.total.tensor_flops
    projections = LAYERS * 2 * 2 * (CONTEXT - CONTEXT // 4) * DIM * DIM  # k and v, 2 FLOPs a MAC
    assert own - xdit == projections


def _cross_core(rank):  # type: ignore[no-untyped-def]
    (row,) = [r for r in walk(rank.forward, expand=False) if r.module_id == "blocks.*.cross_attn.attn_core"]
    calls = eager_calls("diffusers", "dit", row.module_id, row.rule, dict(row.dims), "bf16")
    assert calls is not None
    return calls


def test_the_cross_attention_through_ulysses_and_the_ring_by_hand() -> None:
    """One rank's cross-attention core, Ulysses 2 × ring 2, batch 1: E = 6 heads × 16,380 queries × 128
    (the rank's q), K = 6 × 256 × 128 (one ring call's context k). Before the all-to-alls q, k and v are
    copied twice each (contiguous, then the reshape: 6 heads per rank, so not a view); the ring builds
    cat(k, v) once (2 steps: every step but the last); two flash kernels of 256 keys; each step's
    output cast to fp32 and the result back; the output copied three times (flash writes it in q's
    head-major layout: the sequence-major contiguous() before its all-to-all, the reshape after it,
    the processor's flatten). 13 memory launches, 38E + 24K bytes."""
    e, k = 6 * 16_380 * 128, 6 * 256 * 128
    calls = _cross_core(_rank("xdit"))
    (flash,) = [c for c in calls if c.kind == "attention"]
    assert flash.count == 2
    memory = [c for c in calls if c.kind == "memory"]
    assert sum(c.count for c in memory) == 13
    assert sum(c.bytes * c.count for c in memory) == 38 * e + 24 * k  # bytes: 2 per bf16, 4 per fp32
    assert [(c.op, c.count, c.bytes) for c in memory] == [
        ("clone", 2, 4 * e),  # q: read and write 2E bytes
        ("clone", 4, 4 * k),  # k and v
        ("cat", 1, 8 * k),  # cat(k, v): 4K bytes in, 4K out
        ("_to_copy", 2, 6 * e),  # each step's output to fp32
        ("_to_copy", 1, 6 * e),  # the merged result back
        ("clone", 3, 4 * e),  # the output's contiguous(), reshape and flatten
    ]


def test_the_pipelines_own_plan_keeps_the_cross_attention_local() -> None:
    """The same leaf under diffusers' own plan: one flash kernel over the whole 512-token context, no
    copies."""
    calls = _cross_core(_rank("own"))
    assert [(c.kind, c.count) for c in calls] == [("attention", 1)]


def test_ring_plans_cost_the_cross_attentions_merges() -> None:
    """Ring 4 alone: the cross-attention gets a ring_merge leaf of 3 later steps over the rank's 8,190
    queries × 12 heads × 128 (fp32), and the rank's video is longer than under the own plan."""
    xdit = _rank("xdit", ulysses=1, ring=4)
    (merge,) = [
        r for r in walk(xdit.forward, expand=False) if r.module_id == "blocks.*.cross_attn.ring_merge"
    ]
    assert dict(merge.dims)["steps"] == 3
    assert dict(merge.dims)["elements"] == 3 * TOKENS // 4 * HEADS * HEAD_DIM
    own = _rank("own", ulysses=1, ring=4)
    assert not [r for r in walk(own.forward, expand=False) if r.module_id == "blocks.*.cross_attn.ring_merge"]


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["pipeline=official", "parallel.ulysses=2"], "parallel.runtime"),
        (["pipeline=official"], "parallel.runtime"),  # on one GPU too
        (["pipeline=diffusers", "model=wan2.1-i2v-14b-480p", "parallel.ulysses=2"], "parallel.runtime"),
        (["pipeline=diffusers", "parallel.ulysses=2", "parallel.cfg=2"], "parallel.cfg"),
        (["pipeline=diffusers", "parallel.ulysses=2", "parallel.dit_fsdp=true"], "parallel.dit_fsdp"),
    ],
)
def test_what_the_patch_does_not_run_is_refused(args: list[str], field: str, tmp_path: Path) -> None:
    model = [] if any(a.startswith("model=") for a in args) else ["model=wan2.1-t2v-1.3b"]
    base = [*model, "workload=480p-81f", "device=h100-sxm"]
    rc, out, err = _run("report", *base, *args, "parallel.runtime=xdit", f"output_root={tmp_path / 'o'}")
    assert rc == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"ditmeter: error: {field}:"), line
    assert not (tmp_path / "o").exists()


def test_an_unknown_runtime_names_the_allowed_values(tmp_path: Path) -> None:
    rc, _, err = _run(
        "report", *BASE, "parallel.ulysses=2", "parallel.runtime=yunchang", f"output_root={tmp_path}"
    )
    assert rc == 2
    assert err.strip() == "ditmeter: error: parallel.runtime: 'yunchang' not allowed; allowed: own, xdit"


def test_trace_refuses_the_patch_before_its_header(tmp_path: Path) -> None:
    rc, out, err = _run(
        "trace", *BASE[:3], "parallel.ulysses=2", "parallel.runtime=xdit", f"output_root={tmp_path}"
    )
    assert rc == 2 and out == ""
    assert err.startswith("ditmeter: error: parallel.runtime: xdit: trace runs")
    assert not any(tmp_path.iterdir())


def test_the_report_names_the_runtime(tmp_path: Path) -> None:
    rc, out, _ = _run(
        "report", *BASE, "parallel.ulysses=4", "parallel.runtime=xdit", f"output_root={tmp_path}"
    )
    assert rc == 0
    assert "plan 4 GPUs: ulysses 4, xDiT USP:" in out
