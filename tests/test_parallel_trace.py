"""The real diffusers context-parallel DiT, rank by rank under the fake process group: its
collectives by hand, and its FLOPs per rank against the analytic single-GPU leaves.

Groundwork for the multi-GPU plans (docs/parallel.md): the measured side of their gate.
"""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch

from ditmeter.analytic.parallel import CollectiveSpec, ContextParallel, ParallelPlan
from ditmeter.commands.report import analyze
from ditmeter.compare.parallel import collective_mismatches
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.builders import build_diffusers_dit, diffusers_dit_inputs, enable_context_parallel
from ditmeter.models.wan21.parallel import context_parallel_forward
from ditmeter.tracer.collectives import CollectiveRecorder, cpu_flash_attention, fake_rank

LAYERS = 2
#: Leaves every rank runs whole under context parallelism (before the sequence split, or over the
#: context): the condition embedder, the patch embedding, cross-attention's K and V projections.
REPEATED = ("dit.patch_embedding", "dit.time_embedding", "dit.time_projection", "dit.text_embedding")


def _small(workload: str = "w001-tiny", model: str = "wan2.1-t2v-1.3b"):  # type: ignore[no-untyped-def]
    # diffusers semantics: the plan of the code traced here (the official pads, xDiT's ring is P2P)
    overrides = [f"model={model}", f"workload={workload}", f"model.num_layers={LAYERS}", "pipeline=diffusers"]
    cfg = load(overrides, "report")
    analysis, _ = analyze(cfg)
    return cfg, analysis


@pytest.fixture(scope="module")
def small():  # type: ignore[no-untyped-def]
    return _small()


def _run(cfg, rank: int, world: int, ring: int, ulysses: int):  # type: ignore[no-untyped-def]
    from torch.utils.flop_counter import FlopCounterMode

    with fake_rank(rank, world), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_diffusers_dit(cfg.model, cfg.workload.dtype)
        enable_context_parallel(model, ulysses, ring)  # _native_flash; the device-count workaround
        inputs = {**diffusers_dit_inputs(cfg.model, cfg.workload, cfg.geometry), "return_dict": False}
        recorder, flops = CollectiveRecorder(), FlopCounterMode(display=False)
        with torch.no_grad(), flops, recorder:
            model(**inputs)
    return recorder.calls, flops.get_total_flops()


@pytest.mark.parametrize(("ring", "ulysses"), [(1, 2), (2, 1)])
def test_context_parallel_collectives_by_hand(small, ring: int, ulysses: int) -> None:  # type: ignore[no-untyped-def]
    """Ulysses 2: 4 all-to-alls per block (q, k, v, out), each this rank's [1, L/2, 12 heads, 128] bf16;
    Ring 2: 1 all-gather per block of this rank's K and V; both end with one all-gather of the
    output. The 1.3B at w001-tiny has L = 512 tokens (diffusers rounds 4 frames up to 5: 2 latent frames)."""
    cfg, analysis = small
    tokens, heads, head_dim = analysis.geometry.tokens, 12, 128
    assert tokens == 512
    calls, _ = _run(cfg, 0, 2, ring, ulysses)
    ops = Counter(c.op for c in calls)
    shard = tokens // 2 * heads * head_dim * 2  # bytes of q (or k, v, out) on one rank
    if ulysses == 2:
        assert ops == {"all_to_all_single": 4 * LAYERS, "all_gather_into_tensor": 1}
        a2a = [c for c in calls if c.op == "all_to_all_single"]
        assert {(c.input_bytes, c.output_bytes, c.group_size, c.dtype) for c in a2a} == {
            (shard, shard, 2, "bfloat16")
        }
    else:
        assert ops == {"all_gather_into_tensor": LAYERS + 1}
        kv = calls[0]
        assert (kv.input_bytes, kv.output_bytes, kv.group_size) == (2 * shard, 4 * shard, 2)


def test_flops_per_rank_are_the_split_work_plus_what_every_rank_repeats(small) -> None:  # type: ignore[no-untyped-def]
    """Per rank: (single − repeated) / 2 + repeated, exactly, with single and repeated from the
    analytic leaves (the condition embedder, patch embedding and cross-attention K/V projections run
    whole on every rank); Ring and Ulysses the same."""
    cfg, analysis = small
    rows = analysis.forward.rows()
    single = analysis.per_forward.tensor_flops
    repeated = sum(
        r.cost.tensor_flops
        for r in rows
        if r.kind == "leaf"
        and (r.module_id.startswith(REPEATED) or r.module_id.endswith(("cross_attn.k", "cross_attn.v")))
    )
    assert 0 < repeated < single
    for ring, ulysses in ((1, 2), (2, 1)):
        for rank in range(2):
            _, flops = _run(cfg, rank, 2, ring, ulysses)
            assert flops == (single - repeated) // 2 + repeated, (ring, ulysses, rank)


@pytest.mark.parametrize("workload", ["w001-tiny", "w002-512p"])
@pytest.mark.parametrize(
    ("model", "ulysses", "ring"),
    [
        ("wan2.1-t2v-1.3b", 2, 1),
        ("wan2.1-t2v-1.3b", 4, 1),
        ("wan2.1-t2v-14b", 8, 1),  # 40 heads: the 1.3B's 12 do not split 8 ways
        ("wan2.1-t2v-1.3b", 1, 2),
        ("wan2.1-t2v-1.3b", 1, 4),
        ("wan2.1-t2v-1.3b", 2, 2),
    ],
)
def test_the_context_parallel_plan_is_exact_on_every_rank(
    workload: str, model: str, ulysses: int, ring: int
) -> None:
    """The gate of the plan: on every rank, traced tensor FLOPs and every collective (op, group,
    bytes in and out, count) equal the analytic plan exactly (models/wan21/parallel.py), both as
    the split of the single-GPU leaves and as the per-rank cost tree the per-GPU time is taken from
    (``rank_plan``: the sequence shard's leaves at their own shapes)."""
    cfg, analysis = _small(workload, model)
    plan = ParallelPlan(gpus=ulysses * ring, ulysses=ulysses, ring=ring)
    flops, collectives = context_parallel_forward(analysis, plan.sequence)
    rank_plan = cfg.family.parallel(analysis, plan, cfg.offload)
    assert rank_plan.forward.total.tensor_flops == flops
    assert sorted(c.spec for c in rank_plan.comms) == collectives
    for rank in range(ulysses * ring):
        calls, traced = _run(cfg, rank, ulysses * ring, ring, ulysses)
        measured = [(c.op, c.group_size, c.input_bytes, c.output_bytes) for c in calls]
        assert collective_mismatches(collectives, measured) == [], (rank, measured)
        assert traced == flops, rank


def test_a_wrong_communication_rule_fails_the_gate(small) -> None:  # type: ignore[no-untyped-def]
    """Three all-to-alls per block instead of four (the output's forgotten): the gate names it."""
    cfg, analysis = small
    _, collectives = context_parallel_forward(analysis, ContextParallel(ulysses=2))
    wrong = [attrs_evolve(c, count=3 * LAYERS) if c.op == "all_to_all_single" else c for c in collectives]
    calls, _ = _run(cfg, 0, 2, 1, 2)
    measured = [(c.op, c.group_size, c.input_bytes, c.output_bytes) for c in calls]
    (line,) = collective_mismatches(wrong, measured)
    assert line.startswith("all_to_all_single over 2 ranks") and "analytic 6, traced 8" in line


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        (ContextParallel(ulysses=5), "parallel.ulysses"),
        (ContextParallel(ring=3), "parallel"),
        (ContextParallel(ulysses=0), "parallel.ulysses"),
    ],
)
def test_plans_the_code_refuses_are_refused(small, plan: ContextParallel, field: str) -> None:  # type: ignore[no-untyped-def]
    """12 heads do not split 5 ways; 512 tokens do not split 3 ways."""
    _, analysis = small
    with pytest.raises(ConfigError) as err:
        context_parallel_forward(analysis, plan)
    assert err.value.field == field


def attrs_evolve(spec: CollectiveSpec, **changes: int) -> CollectiveSpec:
    import attrs

    return attrs.evolve(spec, **changes)


@pytest.mark.parametrize("model", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p"])
def test_the_block_parameter_list_is_the_analytic_block(model: str) -> None:
    from ditmeter.models.wan21.parallel import block_parameters

    cfg = load([f"model={model}", "workload=w001-tiny"], "report")
    analysis, _ = analyze(cfg)
    block = next(r for r in analysis.forward.rows() if r.module_id == "dit.blocks.0")
    assert sum(numel for _, numel in block_parameters(cfg.model)) == block.cost.params


@pytest.mark.parametrize("ranks", [2, 4])
def test_fsdp2_gathers_each_block_as_the_plan_says(small, ranks: int) -> None:  # type: ignore[no-untyped-def]
    """FSDP2 ``fully_shard`` per block with bf16 mixed precision, run under FakeTensorMode (FSDP2
    refuses meta parameters; docs/parallel.md): one all-gather per block per forward, the block's
    bf16 parameters with every dim 0 padded to the rank count, exactly as models/wan21/parallel.py."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ditmeter.models.wan21.parallel import fsdp_block_gather

    cfg, _ = small
    with fake_rank(0, ranks), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mode = FakeTensorMode()
        with mode:
            model = build_diffusers_dit(cfg.model, cfg.workload.dtype, device="cpu")
            inputs = {
                **diffusers_dit_inputs(cfg.model, cfg.workload, cfg.geometry, "cpu"),
                "return_dict": False,
            }
        model.requires_grad_(False)  # NB: FSDP2 refuses mixed bf16/fp32 parameters that train
        mesh = init_device_mesh("cpu", (ranks,))  # outside the fake mode
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
        recorder = CollectiveRecorder()
        with mode:
            for block in model.blocks:
                fully_shard(block, mesh=mesh, mp_policy=policy)
            with torch.no_grad(), recorder:
                model(**inputs)
    measured = [(c.op, c.group_size, c.input_bytes, c.output_bytes) for c in recorder.calls]
    assert collective_mismatches([fsdp_block_gather(cfg.model, ranks)], measured) == []
    assert {c.dtype for c in recorder.calls} == {"bfloat16"}


def _gloo_rank(rank: int, world: int, port: int, queue, ulysses: int, ring: int) -> None:  # type: ignore[no-untyped-def]
    """One real process of a gloo run: the DiT under ``ulysses`` × ``ring`` on CPU, fp32 (random
    weights), with diffusers' ``_native_flash`` backend (a CPU kernel lent by cpu_flash_attention)."""
    import os

    import torch.distributed as dist

    warnings.simplefilter("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        cfg, _ = _small_fp32()
        model = build_diffusers_dit(cfg.model, "fp32", device="cpu")
        enable_context_parallel(model, ulysses, ring)
        inputs = {**diffusers_dit_inputs(cfg.model, cfg.workload, cfg.geometry, "cpu"), "return_dict": False}
        recorder = CollectiveRecorder()
        with cpu_flash_attention(), torch.no_grad(), recorder:
            model(**inputs)
        queue.put((rank, [(c.op, c.group_size, c.input_bytes, c.output_bytes) for c in recorder.calls]))
    except Exception as exc:  # say it, or the other ranks' wait hides it
        queue.put((rank, repr(exc)))
        raise
    finally:
        dist.destroy_process_group()


def _small_fp32():  # type: ignore[no-untyped-def]
    cfg = load(
        ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "workload.dtype=fp32", f"model.num_layers={LAYERS}"],
        "report",
    )
    analysis, _ = analyze(cfg)
    return cfg, analysis


@pytest.mark.parametrize(("ulysses", "ring"), [(2, 1), (1, 2), (2, 2)])
def test_a_real_multi_process_gloo_run_sends_what_the_plan_says(ulysses: int, ring: int) -> None:
    """Real CPU processes (gloo, torchrun-style: 2, 2 and 4 of them), Ulysses 2, Ring 2 and 2 × 2:
    every collective of each rank, op, group and bytes, equals the analytic plan the fake-group
    gate checks."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = ulysses * ring
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_gloo_rank, args=(r, world, port, queue, ulysses, ring)) for r in range(world)
    ]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    try:
        while len(results) < world:
            rank, got = queue.get(timeout=300)
            assert not isinstance(got, str), f"rank {rank}: {got}"  # the others would wait forever
            results[rank] = got
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    _, analysis = _small_fp32()
    _, collectives = context_parallel_forward(analysis, ContextParallel(ulysses=ulysses, ring=ring))
    for rank in range(world):
        assert collective_mismatches(collectives, results[rank]) == [], rank  # type: ignore[arg-type]


def _rank_kernels(small, ulysses: int, ring: int):  # type: ignore[no-untyped-def]
    """(recipes, launches) of rank 0's ``blocks.1`` under the plan: the rank tree's recipes against
    the real context-parallel DiT's launches, collectives left out."""
    from ditmeter.analytic.tree import walk
    from ditmeter.commands.trace import COLLECTIVE_LAUNCHES
    from ditmeter.compare.kernels import KernelCheck, launched, recipe_launches
    from ditmeter.compare.mapping import ZERO_OPS
    from ditmeter.tracer.kernels import eager_launches, under

    cfg, analysis = small
    plan = ParallelPlan(gpus=ulysses * ring, ulysses=ulysses, ring=ring)
    rank = cfg.family.parallel(analysis, plan, cfg.offload)
    analytic = recipe_launches(walk(rank.forward, expand=False), "blocks.*", "diffusers", "dit", "bf16")
    with fake_rank(0, ulysses * ring), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_diffusers_dit(cfg.model, cfg.workload.dtype)
        enable_context_parallel(model, ulysses, ring)
        inputs = {**diffusers_dit_inputs(cfg.model, cfg.workload, cfg.geometry), "return_dict": False}
        launches = eager_launches(lambda: model(**inputs), ZERO_OPS)
    ops = ((x.op, x.dtype, x.bytes) for x in under(launches, "blocks.1") if x.op not in COLLECTIVE_LAUNCHES)
    return KernelCheck("blocks.1", analytic, launched(ops))


@pytest.mark.parametrize(("ulysses", "ring"), [(2, 1), (4, 1), (1, 2), (2, 2), (1, 4)])
def test_a_ranks_eager_kernels_are_its_plans_recipes(small, ulysses: int, ring: int) -> None:  # type: ignore[no-untyped-def]
    """Every launch of rank 0's block under diffusers' ``ContextParallelConfig`` (the copies around
    its all-to-alls, each ring call's kernel, log-sum-exp and merge) equals the rank tree's recipes
    (models/wan21/eager_parallel.py ``cp_attention``, ``_ring_merge_diffusers``), op, dtype and bytes."""
    check = _rank_kernels(small, ulysses, ring)
    assert check.mismatches() == [] and check.launches > 90


def test_a_missing_copy_in_a_plan_recipe_fails_the_kernel_check(small, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The Ulysses layouts' five copies forgotten: the check names the bf16 clones."""
    import ditmeter.models.wan21.eager as eager

    real = eager.cp_attention

    def fewer(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls = real(*args, **kwargs)
        return tuple(
            attrs.evolve(c, count=c.count - 5) if c.op == "clone" and c.dtype == "bf16" else c for c in calls
        )

    import attrs

    monkeypatch.setattr(eager, "cp_attention", fewer)
    (line,) = _rank_kernels(small, 2, 1).mismatches()
    assert "clone bf16" in line and "× 4 in the recipes, × 9 launched" in line
