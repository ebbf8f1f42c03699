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

:func:`achieved_cost` is the same collective at a measured bus bandwidth
(:mod:`ditmeter.analytic.fabric`): nccl-tests' busbw already folds the (N-1)/N (2 (N-1)/N for
an all-reduce) in, so the bytes a rank sends over the busbw at that size is the measured time,
latency and protocol overhead included; ``latency_s`` (the fabric's smallest collective) is a
floor, not a term added on top (adding it would count the latency twice at every tabled size).
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
    nodes: int = 1  # the nodes the group spans (more than one: over the device's network)


def collective_cost(
    op: str, *, ranks: int, tensor_bytes: int, link: float, latency_s: float
) -> CollectiveCost:
    """The cost of ``op`` over ``ranks`` GPUs on one rank's ``tensor_bytes`` (see the module docstring)."""
    sent = sent_bytes(op, ranks=ranks, tensor_bytes=tensor_bytes)
    _check(ranks=ranks, tensor_bytes=tensor_bytes, rate=("link", link), latency_s=latency_s)
    steps = (2 if op == "all_reduce" else 1) * (ranks - 1)
    return CollectiveCost(op, ranks, tensor_bytes, sent, sent / link + steps * latency_s)


def sent_bytes(op: str, *, ranks: int, tensor_bytes: int) -> int:
    """Bytes one rank sends (= receives): (N-1)/N of its tensor, twice for an all-reduce."""
    if op not in COLLECTIVES:
        raise ValueError(f"collective {op!r} not in {COLLECTIVES}")
    passes = 2 if op == "all_reduce" else 1
    return passes * (ranks - 1) * tensor_bytes // ranks


def achieved_cost(
    op: str, *, ranks: int, tensor_bytes: int, busbw: float, latency_s: float
) -> CollectiveCost:
    """``op`` at the achieved bus bandwidth ``busbw`` (bytes/s, nccl-tests' busbw at this size):
    max(sent / busbw, latency_s); a group of one costs nothing."""
    sent = sent_bytes(op, ranks=ranks, tensor_bytes=tensor_bytes)
    _check(ranks=ranks, tensor_bytes=tensor_bytes, rate=("busbw", busbw), latency_s=latency_s)
    return CollectiveCost(op, ranks, tensor_bytes, sent, 0.0 if ranks == 1 else max(sent / busbw, latency_s))


def _check(*, ranks: int, tensor_bytes: int, rate: tuple[str, float], latency_s: float) -> None:
    name, value = rate
    if ranks < 1 or tensor_bytes < 0 or value <= 0 or latency_s < 0:
        raise ValueError(
            f"need ranks >= 1, tensor_bytes >= 0, {name} > 0, latency_s >= 0; "
            f"got {ranks}, {tensor_bytes}, {value}, {latency_s}"
        )
