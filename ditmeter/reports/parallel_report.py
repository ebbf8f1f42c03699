"""One video on many GPUs (``parallel.*``): report.json's ``parallel``, ``parallel.parquet`` (the
collectives one GPU issues), summary.md's "Many GPUs" section, the terminal line and the data of
``scaling.png`` (time and memory per GPU against the GPU count, for the plans that apply)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pandas as pd
import pyarrow as pa

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.collective_time import COLLECTIVE_STEP_S
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.memory import Timeline
from ditmeter.analytic.parallel import (
    FSDP_IN_FLIGHT,
    ParallelEstimate,
    ParallelPlan,
    RankPlan,
    estimate,
)
from ditmeter.analytic.timing import OFFLOAD_PHASE, Prediction, TimePlan, tree_time
from ditmeter.analytic.transfer import transfer_s
from ditmeter.errors import ConfigError
from ditmeter.reports.format import binary_bytes, percent, seconds, si
from ditmeter.reports.table_model import Column, Table, table, to_markdown

#: How the per-GPU time is put together (report.json ``parallel.model``, docs/parallel.md).
PARALLEL_MODEL = (
    "per GPU: the rank's share of each denoiser forward (the sequence shard's leaves at their own "
    "shapes, the leaves every rank repeats whole) at the kernel model's time, plus the collectives "
    "nothing hides: each at the achieved bus bandwidth of the device's fabric at its size "
    "(configs/fabric/, nccl-tests measurements: the bytes a rank sends over busbw, at least the "
    "fabric's smallest collective), or, for a device without one, (N-1)/N x bytes over one direction "
    f"of the GPU's NVLink (else PCIe) plus {COLLECTIVE_STEP_S * 1e6:g} us per step; a group that "
    "spans nodes also crosses the device's network (configs/network/: one NIC per GPU at its "
    "measured bandwidth; ring collectives over as many NICs as the group has GPUs on a node, an "
    "all-to-all's off-node share and the ring's peer-to-peer hop over one); FSDP's "
    "next-block gather hides under the current block, xDiT's ring K/V exchange under the "
    "attention, Ulysses all-to-alls, diffusers' ring all-gather and the output gather are waited "
    "for. Every other stage runs whole on each GPU "
    "(T5 and CLIP encode on every rank; rank 0 decodes while the others wait, or with "
    "methods.vae_parallel every rank decodes its tile of LightX2V's grid and the pieces are "
    "all-gathered)."
)

#: parallel.parquet: one row per kind of collective one GPU issues.
PARALLEL_SCHEMA = pa.schema(
    [
        pa.field("what", pa.string(), nullable=False),
        pa.field("op", pa.string(), nullable=False),
        pa.field("per", pa.string(), nullable=False),
        pa.field("group_size", pa.int32(), nullable=False),
        pa.field("input_bytes", pa.int64(), nullable=False),
        pa.field("output_bytes", pa.int64(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sent_bytes", pa.int64(), nullable=False),
        pa.field("call_s", pa.float64(), nullable=False),
        pa.field("total_s", pa.float64(), nullable=False),
        pa.field("exposed_s", pa.float64(), nullable=False),
        pa.field("overlap", pa.string(), nullable=False),
        pa.field("nodes", pa.int32(), nullable=False),
    ]
)


@attrs.frozen(eq=False)
class PlanView:
    """A plan's per-GPU estimate, the one-GPU memory it is set against, and the scaling of the
    strategies that apply (:func:`scaling_frame`)."""

    estimate: ParallelEstimate
    single_memory: Timeline
    scaling: pd.DataFrame


def plan_estimate(
    analysis: Analysis, device: DeviceSpec, time: TimePlan, stage_video_s: dict[str, float], rank: RankPlan
) -> ParallelEstimate:
    """The per-GPU time of ``analysis``'s video under ``rank``'s plan, from each selected stage's
    seconds per video on one GPU (``stage_video_s``); the one GPU's weight transfers replaced by
    those of the plan's placement (``rank.memory``)."""
    forward, w = analysis.forward, analysis.workload
    own = {  # the rank's own stages (a decode spread over the plan) at the kernel model's time
        s.name: s.runs_per_video
        * tree_time(s.tree, device, time, analysis.stage_kernels(s, time)).predicted_s
        for s in rank.stages
    }
    est = estimate(
        rank,
        device,
        time,
        analysis.stage_kernels(rank.forward_stage(forward), time),
        stage_video_s=stage_video_s,
        forward_stage=forward.name,
        forwards_per_step=w.guidance_forwards,
        steps=forward.runs_per_video // w.guidance_forwards,
        rank_stage_s=own,
    )
    moved = sum(transfer_s(t, device) for t in rank.memory.transfers())
    per_gpu = {k: v for k, v in est.stage_video_s.items() if k != OFFLOAD_PHASE}
    return attrs.evolve(est, stage_video_s=per_gpu | ({OFFLOAD_PHASE: moved} if moved else {}))


def collectives_frame(est: ParallelEstimate) -> pd.DataFrame:
    """parallel.parquet's rows: what one GPU sends, per forward, step or video."""
    rows = [
        {
            "what": t.comm.what,
            "op": t.comm.spec.op,
            "per": t.comm.per,
            "group_size": t.comm.spec.group_size,
            "input_bytes": t.comm.spec.input_bytes,
            "output_bytes": t.comm.spec.output_bytes,
            "count": t.comm.spec.count,
            "sent_bytes": t.sent_bytes * t.comm.spec.count,
            "call_s": t.call_s,
            "total_s": t.total_s,
            "exposed_s": t.exposed_s,
            "overlap": t.comm.overlap,
            "nodes": t.nodes,
        }
        for t in est.comms
    ]
    return pd.DataFrame(rows, columns=PARALLEL_SCHEMA.names)


def parallel_json(view: PlanView) -> dict[str, Any]:
    """report.json's ``parallel`` section."""
    est, rank = view.estimate, view.estimate.rank
    return {
        "plan": est.plan.as_dict(),
        "name": est.plan.name,
        "nodes": est.nodes,
        "node_gpus": est.node_gpus,
        "node_nics": est.node_nics,
        "tokens": rank.tokens,
        "padded_tokens": rank.padded_tokens,
        "tokens_per_gpu": rank.padded_tokens // est.plan.sequence.degree,
        "per_gpu": {
            "tensor_flops_per_forward": rank.forward.total.tensor_flops,
            "forward_compute_s": est.compute.predicted_s,
            "forward_comm_exposed_s": est.exposed_s("forward"),
            "per_forward_s": est.forward_s,
            "forwards_per_step": est.forwards_per_gpu_step,
            "per_step_s": est.step_s,
            "per_video_s": est.per_video_s,
            "stage_video_s": est.stage_video_s,
            "comm_exposed_per_video_s": est.comm_video_s,
            "comm_bytes_per_forward": est.comm_bytes("forward"),
            "comm_bytes_per_step": est.comm_bytes("step"),
            "comm_bytes_per_video": est.comm_bytes("video"),
            "peak_per_gpu_bytes": est.peak_per_gpu_bytes,
        },
        "single_gpu": {
            "per_video_s": est.single_video_s,
            "peak_per_gpu_bytes": view.single_memory.peak_per_gpu_bytes,
        },
        "speedup": est.speedup,
        "efficiency": est.efficiency,
        "collectives": collectives_frame(est).to_dict(orient="records"),
        "fsdp_blocks_in_flight": FSDP_IN_FLIGHT,
        "notes": list(rank.notes),
        "model": PARALLEL_MODEL,
    }


def plan_line(view: PlanView) -> str:
    """The terminal's line for the plan."""
    est = view.estimate
    single = binary_bytes(view.single_memory.peak_per_gpu_bytes)
    return (
        f"plan {est.plan.name}{nodes_text(est)}: {seconds(est.per_video_s)} per video, "
        f"{est.speedup:.2f}× over 1 GPU "
        f"({percent(est.efficiency, 1)} efficiency); communication {seconds(est.comm_video_s)} exposed per "
        f"video ({si(est.comm_bytes('forward'), 'B')} sent per forward); peak "
        f"{binary_bytes(est.peak_per_gpu_bytes)} per GPU (1 GPU: {single})"
    )


def nodes_text(est: ParallelEstimate) -> str:
    """`` on 2 nodes of 8`` where the plan spans nodes (``, 2 NICs each`` where the nodes have fewer
    NICs than GPUs), else nothing."""
    if est.nodes == 1:
        return ""
    nics = f", {est.node_nics} NIC{'s' if est.node_nics > 1 else ''} each" if est.node_nics else ""
    return f" on {est.nodes} nodes of {est.node_gpus}{nics}"


def collectives_table(est: ParallelEstimate) -> Table:
    columns = (
        Column("collective", "left"),
        Column("op", "left", code=True),
        Column("group"),
        Column("per call"),
        Column("calls", "left"),
        Column("time per call"),
        Column("exposed"),
    )
    rows = [
        (
            t.comm.what,
            t.comm.spec.op,
            f"{t.comm.spec.group_size}" + (f" on {t.nodes} nodes" if t.nodes > 1 else ""),
            binary_bytes(t.comm.spec.output_bytes),
            f"{t.comm.spec.count} per {t.comm.per}",
            seconds(t.call_s),
            seconds(t.exposed_s),
        )
        for t in est.comms
    ]
    return table("collectives one GPU issues", columns, rows)


def summary_lines(view: PlanView, device_name: str) -> list[str]:
    """summary.md's "Many GPUs" section."""
    est = view.estimate
    columns = (Column(""), Column("per GPU under the plan"), Column("one GPU"))
    rows = [
        ("per video", seconds(est.per_video_s), seconds(est.single_video_s)),
        (
            "peak memory per GPU",
            binary_bytes(est.peak_per_gpu_bytes),
            binary_bytes(view.single_memory.peak_per_gpu_bytes),
        ),
        ("DiT forward", seconds(est.forward_s), ""),
        ("  of it communication nothing hides", seconds(est.exposed_s("forward")), ""),
    ]
    return [
        f"**{est.plan.name}**{nodes_text(est)} on {device_name}: **{est.speedup:.2f}×** over one GPU, "
        f"{percent(est.efficiency, 1)} parallel efficiency.",
        "",
        *to_markdown(table("the plan", columns, rows)),
        "",
        *[f"- {n}" for n in est.rank.notes],
        *to_markdown(collectives_table(est)),
        "",
        PARALLEL_MODEL,
        "",
        "Everything in this report is one GPU's under the plan (rank 0): the DiT rows of "
        "modules.parquet, the categories and the per-forward totals are its share of each forward "
        "(their times without communication, which is above); the memory is rank 0's.",
        "",
        "![scaling](scaling.png)",
    ]


#: The strategies scaling.png draws (the plan keys each sets for n GPUs; T5 FSDP where the
#: pipeline has it and T5 is on the GPU).
STRATEGIES: dict[str, Callable[[int, bool], dict[str, Any]]] = {
    "Ulysses": lambda n, t5: {"ulysses": n},
    "Ring": lambda n, t5: {"ring": n},
    "Ulysses + FSDP": lambda n, t5: {"ulysses": n, "dit_fsdp": True, "t5_fsdp": t5},
}
SCALING_GPUS = (1, 2, 4, 8)


def scaling_frame(
    analysis: Analysis, p: Prediction, rank_of: Callable[[ParallelPlan], RankPlan]
) -> pd.DataFrame:
    """Per GPU time and peak memory of each strategy at 1, 2, 4 and 8 GPUs, where its code runs it
    (a plan the code refuses, such as Ulysses degrees that do not divide the heads, is left out, and
    a strategy the code never runs beyond one GPU, such as Ring under Wan2.2's generate.py)."""
    rows: list[dict[str, object]] = []
    t5 = analysis.workload.pipeline == "official" and not analysis.memory.t5_cpu
    for name, keys in STRATEGIES.items():
        start = len(rows)
        for n in SCALING_GPUS:
            plan = ParallelPlan.from_mapping(keys(n, t5)) if n > 1 else ParallelPlan()  # one GPU: no plan
            try:
                est = plan_estimate(analysis, p.device, p.plan, p.stage_seconds, rank_of(plan))
            except ConfigError:
                continue
            rows.append(
                {
                    "strategy": name,
                    "gpus": n,
                    "per_video_s": est.per_video_s,
                    "speedup": est.speedup,
                    "peak_per_gpu_bytes": est.peak_per_gpu_bytes,
                }
            )
        if all(r["gpus"] == 1 for r in rows[start:]):
            del rows[start:]
    return pd.DataFrame(rows)
