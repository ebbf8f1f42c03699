"""The network between nodes (``configs/network/<name>.yaml``): what one GPU's NIC achieves, by
message size, each point with its source, and how a collective whose group spans nodes runs on it.

A device names its scale-out network (``network:`` in ``configs/device/``; none: plans stay in
one node). Nodes hold :func:`~ditmeter.analytic.parallel.domain_gpus` GPUs each; a plan's ranks
are laid out as the parallel code lays them (diffusers' device mesh ``(ring, ulysses)`` and
xDiT's ``tp-sp-pp-cfg-dp`` order both make Ulysses the innermost, contiguous ranks, then the
ring, then the CFG halves), so a group of ``size`` ranks ``stride`` apart spans
:func:`group_span` nodes.

A collective whose group spans nodes (``docs/parallel.md``, "Beyond one node"):

- **ring collectives** (all-gather, reduce-scatter, all-reduce): NCCL's rings each cross every
  node boundary once; with ``local`` of the group's GPUs on a node, as many channels cross at
  once over as many NICs, so the bus bandwidth is the smaller of the node's own (the fabric's
  busbw) and ``local`` × one NIC's achieved bandwidth, times the measured decline of a ring's
  busbw with the nodes it spans where the network has one (``ring_nodes``: the busbw at each
  node count over the first's, linear in log(nodes) between them, 1 below the first);
- **all-to-all**: each GPU sends (size − local)/size of its tensor off the node over its own
  NIC (an all-to-all cannot aggregate NICs: NVIDIA/nccl-tests#267) while the rest moves inside
  the node, both at once: the slower of the two;
- **peer to peer** (xDiT's ring K/V exchange): R - 1 hops of one chunk each, every hop waiting
  for the one that crosses a node boundary: the chunk over one NIC at the chunk's size, the floor
  per hop.

The NIC's achieved bandwidth at a size is linear in log(size) between tabled points and held
at the nearest end outside them, read at the bytes the NIC carries in the collective (an
all-to-all's whole off-node share, not its per-peer pieces; a ring collective's share per NIC;
a ring hop's chunk); ``latency_s`` (the smallest collective measured across nodes) is a floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ditmeter.analytic.fabric import known_keys, measured_points, positive_field, text_field
from ditmeter.analytic.kernels import log_linear
from ditmeter.errors import ConfigError

#: The ring collectives NCCL spreads over one channel per NIC.
RING_OPS = ("all_gather", "reduce_scatter", "all_reduce")


@attrs.frozen
class NicPoint:
    """One measured point: the bytes one GPU sends across nodes and the GB/s (10⁹) its NIC reached."""

    message_bytes: int
    gbps: float


@attrs.frozen
class NetworkTable:
    """One GPU's NIC between nodes: its line rate one way, its achieved bandwidth by message size,
    and the smallest collective across nodes (a floor)."""

    name: str
    display_name: str
    nic_gbps: float  # one direction of one NIC's line rate, GB/s
    latency_s: float
    points: tuple[NicPoint, ...]
    #: (nodes, busbw GB/s) of a ring collective at growing node counts (``ring_nodes``); empty: none
    ring_nodes: tuple[tuple[int, float], ...] = ()

    def ring_fraction(self, nodes: int) -> float:
        """A ring collective's busbw over ``nodes`` nodes against the table's first node count
        (1 there and below, and without a table; the last figure's beyond it)."""
        if not self.ring_nodes or nodes <= self.ring_nodes[0][0]:
            return 1.0
        counts = [n for n, _ in self.ring_nodes]
        busbw = [b for _, b in self.ring_nodes]
        return log_linear(counts, busbw, nodes) / busbw[0]

    def nic_bytes_per_s(self, message_bytes: int) -> float:
        """What one NIC achieves carrying ``message_bytes``, bytes/s (log-linear, clamped)."""
        sizes = [p.message_bytes for p in self.points]
        return log_linear(sizes, [p.gbps for p in self.points], max(message_bytes, 1)) * 1e9

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> NetworkTable:
        """Validate a ``configs/network/*.yaml`` entry; errors name the field (``network.nic_gbps``)."""
        known = (
            "name", "display_name", "nic_gbps", "nic_source", "latency_us", "latency_source",
            "latency_quote", "assumptions", "points", "ring_nodes",
        )  # fmt: skip
        known_keys(raw, known, "network")
        for key in ("name", "display_name", "nic_source", "latency_source", "latency_quote", "assumptions"):
            text_field(raw, key, "network")
        nic = positive_field(raw, "nic_gbps", "network")
        latency = positive_field(raw, "latency_us", "network")
        return cls(
            str(raw["name"]),
            str(raw["display_name"]),
            nic,
            latency * 1e-6,
            _points(raw.get("points"), nic),
            _ring_nodes(raw["ring_nodes"]) if "ring_nodes" in raw else (),
        )


def group_span(size: int, stride: int, node_gpus: int, gpus: int | None = None) -> tuple[int, int]:
    """(nodes, local) of the plan's groups of ``size`` ranks ``stride`` apart on nodes of
    ``node_gpus`` consecutive ranks, over ``gpus`` ranks (default: one group's extent): the most
    nodes any group spans and the fewest ranks any member has of its own group on its node (the
    member that sends the most off its node)."""
    gpus = gpus or size * stride
    nodes, local = 1, size
    for base in range(gpus):
        if (base // stride) % size:
            continue  # not the first member of its group
        ranks = [base + i * stride for i in range(size)]
        where = [r // node_gpus for r in ranks]
        nodes = max(nodes, len(set(where)))
        local = min(local, *(where.count(n) for n in where))
    return nodes, local


def crossing_busbw(
    op: str, *, p2p: bool, size: int, local: int, node_busbw: float, nic: float, ring_fraction: float = 1.0
) -> float:
    """The bus bandwidth (bytes/s, nccl-tests' definition: sent bytes / time) of ``op`` over a group
    of ``size`` ranks that spans nodes with ``local`` ranks per node, given the node's own busbw at
    this size, one NIC's achieved bandwidth and a ring's decline with the nodes it spans
    (:meth:`NetworkTable.ring_fraction`; the module docstring)."""
    if p2p:
        return min(node_busbw, nic)
    if op in RING_OPS:
        return min(node_busbw, local * nic) * ring_fraction
    if op != "all_to_all":
        raise ValueError(f"collective {op!r} has no rule across nodes")
    # sent (size-1)/size of the tensor; (size-local)/size of it over the NIC, (local-1)/size inside
    off_node = (size - local) / nic
    on_node = (local - 1) / node_busbw
    return (size - 1) / max(off_node, on_node)


def _points(rows: Any, nic_gbps: float) -> tuple[NicPoint, ...]:
    """Sizes increasing, each achieved figure within the line rate, each with a source and quote."""
    points = measured_points(rows, "network", "gbps", ("NIC's line rate", nic_gbps))
    return tuple(NicPoint(size, gbps) for size, gbps in points)


def _ring_nodes(raw: Any) -> tuple[tuple[int, float], ...]:
    """``ring_nodes``: ``{source, quote, reason, points: [{nodes, busbw_gbps}, ...]}``, node counts
    above 1 and increasing, each busbw positive."""
    where = "network.ring_nodes"
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping of source, quote, reason and points")
    known_keys(raw, ("source", "quote", "reason", "points"), where)
    for key in ("source", "quote", "reason"):
        text_field(raw, key, where)
    rows = raw.get("points")
    if not isinstance(rows, list) or len(rows) < 2:
        raise ConfigError(f"{where}.points", "must be a list of at least two {nodes, busbw_gbps}")
    out: list[tuple[int, float]] = []
    for i, row in enumerate(rows):
        at = f"{where}.points[{i}]"
        if not isinstance(row, Mapping):
            raise ConfigError(at, f"must be a mapping, got {row!r}")
        known_keys(row, ("nodes", "busbw_gbps"), at)
        nodes = row.get("nodes")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 2:
            raise ConfigError(f"{at}.nodes", f"must be a whole number of nodes, at least 2, got {nodes!r}")
        if out and nodes <= out[-1][0]:
            raise ConfigError(f"{at}.nodes", f"{nodes} does not increase on {out[-1][0]}")
        out.append((nodes, positive_field(row, "busbw_gbps", at)))
    return tuple(out)
