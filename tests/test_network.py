"""Plans beyond one node (``configs/network/``, ``ditmeter/analytic/network.py``): the rank layout
against the real diffusers code's process groups, a 16-GPU plan's per-GPU FLOPs against its
traced ranks, collectives across nodes by hand from the table, and refusals."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from ditmeter.analytic.collective_time import collective_time
from ditmeter.analytic.network import crossing_busbw, group_span
from ditmeter.analytic.parallel import ParallelPlan, comm_time
from ditmeter.catalog import network_table
from ditmeter.commands.report import analyze
from ditmeter.compare.parallel import collective_mismatches
from ditmeter.config import load
from ditmeter.errors import ConfigError
from ditmeter.models.wan21.builders import build_diffusers_dit, diffusers_dit_inputs, enable_context_parallel
from ditmeter.models.wan21.parallel import context_parallel_forward
from ditmeter.tracer.collectives import CollectiveRecorder, fake_rank

SMALL = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "model.num_layers=2", "pipeline=diffusers"]


def _device(name: str):  # type: ignore[no-untyped-def]
    d = load([*SMALL, f"device={name}"], "report").device
    assert d is not None
    return d


def test_group_span_by_hand() -> None:
    """16 GPUs on nodes of 8, ulysses 4 × ring 4: a Ulysses group (0-3) stays in node 0; a ring
    group (0, 4, 8, 12) spans 2 nodes with 2 members on each; the CFG halves of ulysses 8 × cfg 2
    (0 and 8) one on each node; FSDP over all 16: 8 per node. Ulysses 5 on 40 GPUs: the group
    5-9 straddles nodes 0 and 1 (3 + 2), and 15-19 puts rank 15 alone on node 1 (1 + 4): the
    fewest own-group ranks on a node is 1."""
    assert group_span(4, 1, 8, 16) == (1, 4)
    assert group_span(4, 4, 8, 16) == (2, 2)
    assert group_span(2, 8, 8, 16) == (2, 1)
    assert group_span(16, 1, 8, 16) == (2, 8)
    assert group_span(5, 1, 8, 40) == (2, 1)


def test_crossing_rules_by_hand() -> None:
    """Node busbw 360 GB/s, one NIC 48 GB/s. A ring all-gather with 8 of the group per node: min(360,
    8 × 48 = 384) = 360; with 2 per node: 96. An all-to-all of 16 over 2 nodes: 15 sent parts, 8 off
    the node over one NIC, 7 inside: 15 / max(8 / 48, 7 / 360) = 15 × 6 = 90 GB/s (nccl-tests#130's
    "2x network bandwidth per GPU" with its (n-1)/n). A peer-to-peer hop: 48."""
    kw = {"node_busbw": 360.0, "nic": 48.0}
    assert crossing_busbw("all_gather", p2p=False, size=16, local=8, **kw) == 360.0
    assert crossing_busbw("reduce_scatter", p2p=False, size=4, local=2, **kw) == 96.0
    assert crossing_busbw("all_to_all", p2p=False, size=16, local=8, **kw) == pytest.approx(90.0)
    assert crossing_busbw("all_gather", p2p=True, size=4, local=2, **kw) == 48.0


def _traced(rank: int, world: int, ulysses: int, ring: int):  # type: ignore[no-untyped-def]
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load(SMALL, "report")
    with fake_rank(rank, world), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_diffusers_dit(cfg.model, cfg.workload.dtype)  # type: ignore[arg-type]
        enable_context_parallel(model, ulysses, ring)
        inputs = {
            **diffusers_dit_inputs(cfg.model, cfg.workload, cfg.geometry),  # type: ignore[arg-type]
            "return_dict": False,
        }
        recorder, flops = CollectiveRecorder(), FlopCounterMode(display=False)
        with torch.no_grad(), flops, recorder:
            model(**inputs)
    return recorder.calls, flops.get_total_flops()


@pytest.mark.parametrize("rank", [0, 6, 13])
def test_a_16_gpu_two_node_plan_is_the_traced_split_and_layout(rank: int) -> None:
    """Ulysses 4 × ring 4 on 16 GPUs (2 nodes of 8), the real diffusers DiT under the fake process
    group: each rank's tensor FLOPs equal the plan's split, its collectives equal the plan's, and the
    process groups the code builds are the layout the network costs by: Ulysses groups contiguous
    (stride 1), ring groups ``ulysses`` apart (stride 4), so a ring group spans both nodes."""
    cfg = load(SMALL, "report")
    analysis, _ = analyze(cfg)
    plan = ParallelPlan(ulysses=4, ring=4, gpus=16)
    flops, collectives = context_parallel_forward(analysis, plan.sequence)
    rank_plan = cfg.family.parallel(analysis, plan, cfg.offload)
    assert rank_plan.forward.total.tensor_flops == flops
    calls, traced = _traced(rank, 16, 4, 4)
    assert traced == flops
    measured = [(c.op, c.group_size, c.input_bytes, c.output_bytes) for c in calls]
    assert collective_mismatches(collectives, measured) == []
    groups = {c.op: c.group_ranks for c in calls if c.group_size == 4}
    first = rank - rank % 4
    assert groups["all_to_all_single"] == tuple(range(first, first + 4))  # Ulysses: contiguous
    assert groups["all_gather_into_tensor"] == tuple(range(rank % 4, 16, 4))  # ring: 4 apart
    strides = {c.what.split(" (")[-1]: c.stride for c in rank_plan.comms}
    assert strides == {"Ulysses all-to-all)": 1, "ring all-gather)": 4, "all-gather)": 1}


def test_an_all_to_all_across_two_h100_nodes_by_hand() -> None:
    """Ulysses 16 over 2 H100 nodes, a 100 MiB (104,857,600 B) tensor: each rank sends 15/16 of it,
    98,304,000 B, of which 8/16 of the tensor (52,428,800 B) leaves the node over its one NIC. The
    NIC at 52,428,800 B sits log2(52,428,800 / 33,554,432) = 0.64386 of the 5 octaves from the
    table's 32 MiB (41.31 GB/s) to 1 GiB (46.0): 41.31 + 0.64386 / 5 × 4.69 = 41.9139 GB/s, so the
    off-node part takes 52,428,800 / 41.9139e9 = 1.2509 ms; the 7/16 inside the node at the
    fabric's 311.34 GB/s (held below 128 MiB) take 0.147 ms and hide under it."""
    ndr, h100 = network_table("ib-ndr400"), _device("h100-sxm")
    from ditmeter.catalog import fabric_table

    c = collective_time(
        "all_to_all", ranks=16, tensor_bytes=104_857_600, device=h100, fabric=fabric_table("nvswitch-hopper"),
        gpus=16, network=ndr,
    )  # fmt: skip
    nic = (41.31 + 0.643856 / 5 * 4.69) * 1e9
    assert c.sent_bytes == 98_304_000
    assert c.time_s == pytest.approx(52_428_800 / nic, rel=1e-5)  # 1.2509 ms


def test_two_nics_per_node_share_them_by_hand() -> None:
    """The same Ulysses 16 all-to-all with two NICs per node of 8 (``device.nics_per_node=2``):
    every GPU sends its 52,428,800 B off the node at once, so each NIC carries four GPUs' bytes,
    209,715,200 B, at log2(6.25) = 2.643856 of the 5 octaves from 32 MiB: 41.31 + 2.643856 / 5 ×
    4.69 = 43.78994 GB/s, and each GPU gets a quarter of it: 52,428,800 / (43.78994e9 / 4) =
    4.789 ms, 3.8 times the one-NIC-per-GPU time. More NICs than the node's GPUs, or NICs on a
    board without a network, are refused naming the key."""
    import attrs

    from ditmeter.catalog import fabric_table

    h100 = attrs.evolve(_device("h100-sxm"), nics_per_node=2)
    c = collective_time(
        "all_to_all", ranks=16, tensor_bytes=104_857_600, device=h100, fabric=fabric_table("nvswitch-hopper"),
        gpus=16, network=network_table("ib-ndr400"),
    )  # fmt: skip
    nic = (41.31 + 2.643856 / 5 * 4.69) * 1e9
    assert c.time_s == pytest.approx(52_428_800 / (nic / 4), rel=1e-6)  # 4.789 ms
    with pytest.raises(ConfigError) as exc:
        load([*SMALL, "device=h100-sxm", "device.nics_per_node=9"], "report")
    assert exc.value.field == "device.nics_per_node" and "allowed: 1 to 8" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load([*SMALL, "device=rtx4090", "device.nics_per_node=1"], "report")
    assert exc.value.field == "device.nics_per_node"


def test_a_ring_hop_across_nodes_is_the_measured_two_node_row() -> None:
    """xDiT's ring of 2 with ulysses 8 on 16 GPUs: ranks 0 and 8, one on each node. A 64 MiB
    gathered K/V (32 MiB sent) crosses one NIC at the table's 32 MiB point: 33,554,432 / 41.31e9 =
    812.3 µs, nccl-tests#232's own time for that size. An A100 over HDR: the flat 24 GB/s."""
    from ditmeter.catalog import fabric_table

    kw: dict[str, Any] = {"ranks": 2, "tensor_bytes": 67_108_864, "stride": 8, "gpus": 16, "p2p": True}
    hop = collective_time(
        "all_gather", device=_device("h100-sxm"), fabric=fabric_table("nvswitch-hopper"),
        network=network_table("ib-ndr400"), **kw,
    )  # fmt: skip
    assert hop.time_s == pytest.approx(33_554_432 / 41.31e9, rel=1e-9)  # 812.3 µs
    a100 = collective_time(
        "all_gather", device=_device("a100-sxm-80gb"), fabric=fabric_table("nvswitch-ampere"),
        network=network_table("ib-hdr200"), **kw,
    )  # fmt: skip
    assert a100.time_s == pytest.approx(33_554_432 / 24e9, rel=1e-9)
    inside = collective_time(
        "all_gather", device=_device("h100-sxm"), fabric=fabric_table("nvswitch-hopper"),
        network=network_table("ib-ndr400"), **{**kw, "stride": 4},
    )  # fmt: skip
    assert inside.time_s < hop.time_s / 5  # ranks 0 and 4: one node, NVLink


def test_a_ring_collective_slows_with_the_nodes_it_spans_by_the_measured_decline() -> None:
    """nccl#1229's H100 reduce-scatter busbw: 360 GB/s at 4 nodes, 345 at 8, 320 at 16. An FSDP
    all-gather of 2 GiB over every GPU, bandwidth-bound: over 4 nodes (32 GPUs) as without the
    table; over 8 (64) 360 / 345 = 1.0435 times slower; over 9 (72) the busbw is linear in
    log2(nodes) between 8 and 16, 345 - 25 × log2(9/8) = 340.752, so 360 / 340.752 slower. An
    all-to-all across 8 nodes keeps its one-NIC figure (no measured decline)."""
    import attrs

    from ditmeter.catalog import fabric_table

    ndr = network_table("ib-ndr400")
    flat = attrs.evolve(ndr, ring_nodes=())
    assert ndr.ring_fraction(2) == ndr.ring_fraction(4) == 1.0
    assert ndr.ring_fraction(8) == pytest.approx(345 / 360)
    assert ndr.ring_fraction(9) == pytest.approx((345 - 25 * 0.169925) / 360, rel=1e-6)
    kw: dict[str, Any] = {"device": _device("h100-sxm"), "fabric": fabric_table("nvswitch-hopper")}

    def ratio(op: str, gpus: int) -> float:
        t = collective_time(op, ranks=gpus, tensor_bytes=2**31, gpus=gpus, network=ndr, **kw).time_s
        return t / collective_time(op, ranks=gpus, tensor_bytes=2**31, gpus=gpus, network=flat, **kw).time_s

    assert ratio("all_gather", 32) == pytest.approx(1.0)
    assert ratio("all_gather", 64) == pytest.approx(360 / 345)
    assert ratio("reduce_scatter", 72) == pytest.approx(360 / (345 - 25 * 0.169925), rel=1e-6)
    assert ratio("all_to_all", 64) == pytest.approx(1.0)


def test_a_16_gpu_report_names_the_nodes_each_collective_spans() -> None:
    """Ulysses 8 × ring 2 with DiT FSDP on 16 H100s: the Ulysses all-to-alls stay in a node, the
    ring exchange (ranks 8 apart) and FSDP's gathers over all 16 span both."""
    cfg = load(
        ["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm", "parallel.ulysses=8",
         "parallel.ring=2", "parallel.dit_fsdp=true"], "report",
    )  # fmt: skip
    _, view = analyze(cfg)
    assert view.plan is not None
    est = view.plan.estimate
    assert (est.nodes, est.node_gpus) == (2, 8)
    nodes = {t.comm.what: t.nodes for t in est.comms}
    assert nodes["q, k, v and the attention output (Ulysses all-to-all)"] == 1
    assert nodes["K and V around the ring (peer to peer, under the attention)"] == 2
    assert nodes["DiT block weights (FSDP all-gather)"] == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nic_gbps": -1}, "network.nic_gbps"),
        ({"points": [{"bytes": 1024, "gbps": 60.0, "source": "x", "quote": "y"}]}, "network.points[0].gbps"),
        ({"latency_quote": ""}, "network.latency_quote"),
        ({"speed": 3}, "network.speed"),
        (
            {
                "ring_nodes": {
                    "source": "x",
                    "quote": "y",
                    "reason": "z",
                    "points": [{"nodes": 8, "busbw_gbps": 345}, {"nodes": 4, "busbw_gbps": 360}],
                }
            },
            "network.ring_nodes.points[1].nodes",
        ),
        ({"ring_nodes": {"source": "x", "quote": "y", "points": []}}, "network.ring_nodes.reason"),
    ],
)
def test_a_bad_network_table_names_its_field(change: dict, field: str) -> None:  # type: ignore[type-arg]
    import yaml

    from ditmeter.analytic.network import NetworkTable
    from ditmeter.catalog import config_dir

    raw = yaml.safe_load((config_dir() / "network" / "ib-ndr400.yaml").read_text(encoding="utf-8"))
    with pytest.raises(ConfigError) as exc:
        NetworkTable.from_mapping({**raw, **change})
    assert exc.value.field == field


def test_a_ulysses_group_that_straddles_nodes_crosses_the_network() -> None:
    """14B, Ulysses 5 × ring 8 on 40 H100s (5 nodes of 8): the Ulysses group of ranks 5-9 spans
    nodes 0 and 1 (its extent alone, 5 ranks from rank 0, would stay in node 0). The estimate
    passes the plan's 40 GPUs: its Ulysses all-to-all spans 2 nodes and takes longer than the same
    collective costed inside one node."""
    cfg = load(
        ["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm", "parallel.ulysses=5",
         "parallel.ring=8"], "report",
    )  # fmt: skip
    _, view = analyze(cfg)
    assert view.plan is not None and cfg.device is not None
    (ulysses,) = [t for t in view.plan.estimate.comms if "Ulysses" in t.comm.what]
    assert ulysses.nodes == 2
    kw = {"block_s": 0.0, "attention_s": 0.0, "fabric": cfg.time.fabric, "network": cfg.time.network}
    inside = comm_time(ulysses.comm, cfg.device, **kw)  # type: ignore[arg-type]
    assert inside.nodes == 1 and inside.call_s < ulysses.call_s


def test_the_plan_line_names_shared_nics() -> None:
    """Ulysses 8 × CFG 2 on 16 H100s with two NICs per node: the plan line says so, and the CFG
    exchange and FSDP gathers that cross take longer than with a NIC per GPU."""
    from ditmeter.reports.parallel_report import nodes_text

    plan = ["model=wan2.1-t2v-14b", "workload=w003-720p", "device=h100-sxm", "parallel.ulysses=8",
            "parallel.cfg=2", "parallel.dit_fsdp=true"]  # fmt: skip
    views = {}
    for nics in ("null", "2"):
        _, view = analyze(load([*plan, f"device.nics_per_node={nics}"], "report"))
        assert view.plan is not None
        views[nics] = view.plan.estimate
    assert nodes_text(views["null"]) == " on 2 nodes of 8"
    assert nodes_text(views["2"]) == " on 2 nodes of 8, 2 NICs each"
    assert views["2"].comm_video_s > views["null"].comm_video_s
