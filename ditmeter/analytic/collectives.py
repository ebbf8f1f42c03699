"""Collective communication cost on N GPUs: a bandwidth term and a latency term (issue 13's model).

For a group of ``ranks`` GPUs linked at ``link`` bytes/s in one direction per GPU
(:attr:`~ditmeter.analytic.device.DeviceSpec.link_bytes_per_s`: half the
bidirectional NVLink or PCIe figure datasheets print) and ``latency_s`` per
algorithm step, with the ring and pairwise algorithms NCCL uses for large
messages::

    all_gather      (N-1)/N × output_bytes / link + (N-1) × latency
    reduce_scatter  (N-1)/N × input_bytes  / link + (N-1) × latency
    all_reduce      2 (N-1)/N × bytes      / link + 2 (N-1) × latency
    all_to_all      (N-1)/N × input_bytes  / link + (N-1) × latency

``*_bytes`` are one rank's tensor (the gathered output of an all-gather, the
full input of a reduce-scatter or all-to-all). Each rank sends and receives
(N-1)/N of it; the link carries both directions at once, so the time is the
bytes one way over one direction's bandwidth. A group of one costs nothing.

NB: no topology (every pair of ranks at the same link speed, as within one
NVLink/NVSwitch node), no protocol overhead, no overlap with compute here (what
overlaps is the plan's business).
"""

from __future__ import annotations

import attrs

COLLECTIVES = ("all_gather", "reduce_scatter", "all_reduce", "all_to_all")


@attrs.frozen
class CollectiveCost:
    """One collective on one rank: bytes it sends (= receives) and its seconds."""

    op: str
    ranks: int
    tensor_bytes: int
    sent_bytes: int
    time_s: float


def collective_cost(
    op: str, *, ranks: int, tensor_bytes: int, link: float, latency_s: float
) -> CollectiveCost:
    """The cost of ``op`` over ``ranks`` GPUs on one rank's ``tensor_bytes`` (see the module docstring)."""
    if op not in COLLECTIVES:
        raise ValueError(f"collective {op!r} not in {COLLECTIVES}")
    if ranks < 1 or tensor_bytes < 0 or link <= 0 or latency_s < 0:
        raise ValueError(
            "need ranks >= 1, tensor_bytes >= 0, link > 0, latency_s >= 0; "
            f"got {ranks}, {tensor_bytes}, {link}, {latency_s}"
        )
    passes = 2 if op == "all_reduce" else 1
    sent = passes * (ranks - 1) * tensor_bytes // ranks
    steps = passes * (ranks - 1)
    return CollectiveCost(op, ranks, tensor_bytes, sent, sent / link + steps * latency_s)
