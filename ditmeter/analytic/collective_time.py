"""One collective on one device (``docs/parallel.md``): at its interconnect's achieved bus
bandwidth (``configs/fabric/``) or its datasheet link, and across nodes over its network
(``configs/network/``, :mod:`ditmeter.analytic.network`); the plan (:mod:`ditmeter.analytic.parallel`)
says which collectives a rank issues, this module what one of them costs."""

from __future__ import annotations

from ditmeter.analytic.collectives import CollectiveCost, achieved_cost, collective_cost, sent_bytes
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.fabric import FabricTable
from ditmeter.analytic.network import NetworkTable, crossing_busbw, group_span
from ditmeter.errors import ConfigError

#: GPUs of one node where a device's datasheet names no larger NVLink domain (an 8-GPU HGX board, or
#: 8 PCIe boards in one host).
NODE_GPUS = 8
#: Seconds per algorithm step of a collective on a device without a fabric table (NCCL's per-hop
#: latency within a node; an estimate of the order nccl-tests show for small messages on NVLink,
#: a few microseconds per step).
COLLECTIVE_STEP_S = 5e-6


def domain_gpus(device: DeviceSpec) -> int:
    """The GPUs of one node of ``device``: its NVLink domain (``nvlink_gpus``, a GB200 NVL72's 72)
    where larger than a node, else :data:`NODE_GPUS`. A plan beyond it crosses the device's
    ``network`` between nodes."""
    return max(NODE_GPUS, device.nvlink_gpus or 0)


def collective_time(
    op: str,
    *,
    ranks: int,
    tensor_bytes: int,
    device: DeviceSpec,
    fabric: FabricTable | None,
    stride: int = 1,
    gpus: int | None = None,
    network: NetworkTable | None = None,
    p2p: bool = False,
) -> CollectiveCost:
    """One collective on ``device``: at its fabric's achieved busbw at this size (on the curve of
    the group's size within a node where the fabric has one), scaled by the
    device's link over the fabric's (``configs/fabric/``), else at the datasheet link the group
    talks over (:meth:`DeviceSpec.link_for`) plus :data:`COLLECTIVE_STEP_S` per step. A group of
    ranks ``stride`` apart that spans nodes also crosses the device's ``network`` (``p2p``: the
    ring's peer-to-peer exchange; :func:`ditmeter.analytic.network.crossing_busbw`) over a plan of
    ``gpus`` (default: the group's extent), each GPU at its share of a NIC where the node has fewer
    NICs than GPUs (``device.nics_per_node``)."""
    link = device.link_for(min(ranks, domain_gpus(device)))
    if link is None:
        raise ConfigError("device", f"{device.name} has no nvlink_gbps or pcie_gbps in the catalog")
    nodes, local = group_span(ranks, stride, domain_gpus(device), gpus)
    if nodes > 1 and network is None:
        raise ConfigError(
            "parallel.gpus",
            f"the plan spans {nodes} nodes of {device.name}, which has no network in the catalog",
        )
    if fabric is None:
        single = collective_cost(
            op, ranks=ranks, tensor_bytes=tensor_bytes, link=link, latency_s=COLLECTIVE_STEP_S
        )
        if nodes == 1:
            return single
        node_busbw = single.sent_bytes / single.time_s if single.time_s else link
        latency = COLLECTIVE_STEP_S
    else:
        # the fabric's curve for the group's GPUs on a node, or (a shared host) the plan's there
        within = ranks if nodes == 1 else local
        if fabric.shared_host:
            within = min(max(gpus or ranks, ranks), domain_gpus(device))
        node_busbw = fabric.busbw_bytes_per_s(op, tensor_bytes, within)
        if fabric.rescale:  # a catalog table measured on another board's link
            node_busbw *= link / fabric.link_bytes_per_s
        latency = fabric.latency_s
        if nodes == 1:
            return achieved_cost(
                op, ranks=ranks, tensor_bytes=tensor_bytes, busbw=node_busbw, latency_s=latency
            )
    assert network is not None
    sent = sent_bytes(op, ranks=ranks, tensor_bytes=tensor_bytes)
    floor = max(latency, network.latency_s)
    # what one NIC carries: a ring hop's chunk, the off-node share of a rank's bytes (an
    # all-to-all), or its share of the channels crossing over ``local`` NICs (ring collectives)
    if p2p:
        per_nic = tensor_bytes // ranks
    elif op == "all_to_all":
        per_nic = sent * (ranks - local) // max(ranks - 1, 1)
    else:
        per_nic = sent // local
    # fewer NICs than GPUs (``nics_per_node``): every GPU of the node crosses at once, so each NIC
    # carries node GPUs / nics GPUs' bytes and each GPU gets that share of it
    share = min(1.0, device.nics_per_node / domain_gpus(device)) if device.nics_per_node else 1.0
    rate = crossing_busbw(
        op,
        p2p=p2p,
        size=ranks,
        local=local,
        node_busbw=node_busbw,
        nic=network.nic_bytes_per_s(round(per_nic / share)) * share,
        ring_fraction=network.ring_fraction(nodes),
    )
    if p2p:  # R - 1 hops of one chunk each, every hop waiting for the one that crosses a node
        time_s = (ranks - 1) * max(per_nic / rate, floor)
    else:
        time_s = achieved_cost(op, ranks=ranks, tensor_bytes=tensor_bytes, busbw=rate, latency_s=floor).time_s
    return CollectiveCost(op, ranks, tensor_bytes, sent, time_s, nodes)
