"""Achieved collective bandwidth of one fabric (``configs/fabric/<name>.yaml``): nccl-tests' bus
bandwidth against the message size, per collective, each point with its source.

nccl-tests prints ``busbw`` = algbw × (N-1)/N for all-gather, reduce-scatter and all-to-all and
algbw × 2(N-1)/N for all-reduce (``doc/PERFORMANCE.md``), the very factors
:mod:`ditmeter.analytic.collectives` multiplies the bytes by: the bytes a rank sends over the
achieved busbw at that message size is the measured time. Between two tabled sizes the busbw
is linear in log(size); outside the table it is held at the nearest end's.

A collective may also give curves measured on groups of fewer GPUs (``by_ranks``: 2, 4, 8): a
group takes the curve of the largest tabled group size not above its own (3 GPUs the 2-GPU curve),
and a group larger than every tabled size, or a collective without them, the main ``points``. On a
fabric whose GPUs share the host's links (``shared_host: true``, PCIe) the curve is read for the
plan's GPUs on the node instead: every group of the plan talks through the same host at once.
A device names its fabric (``fabric:`` in ``configs/device/``); one whose own link
(:meth:`~ditmeter.analytic.device.DeviceSpec.link_for`) differs from the fabric's ``link_gbps``
gets the fabric's achieved fraction of its link: busbw × device link / ``link_gbps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ditmeter.analytic.collectives import COLLECTIVES
from ditmeter.analytic.kernels import log_linear
from ditmeter.errors import ConfigError


@attrs.frozen
class BusbwPoint:
    """One measured point: nccl-tests' ``size`` column (bytes) and its ``busbw`` (GB/s, 10⁹)."""

    message_bytes: int
    busbw_gbps: float


@attrs.frozen
class FabricTable:
    """Per collective, the achieved busbw against the message size (sizes increasing), the
    smallest time a collective takes (``latency_s``) and the one-way link it ran over."""

    name: str
    link_gbps: float  # one direction of the datasheet link the points were measured over
    latency_s: float
    curves: dict[str, tuple[BusbwPoint, ...]]  # every one of COLLECTIVES, derived ones resolved
    #: per collective, curves measured on groups of that many GPUs (``by_ranks``; derived resolved)
    group_curves: dict[str, dict[int, tuple[BusbwPoint, ...]]] = attrs.field(factory=dict)
    #: the GPUs share the host's links (PCIe): the curves are read for the plan's GPUs on the node
    shared_host: bool = False
    #: False: the busbw was measured on this very device (``device.fabric=<file>``): taken as is,
    #: not scaled by the device's link over ``link_gbps``
    rescale: bool = True
    #: where a table read from a file came from: its resolved path and sha256 (None: the catalog's)
    origin: str | None = None

    @property
    def link_bytes_per_s(self) -> float:
        return self.link_gbps * 1e9

    def curve(self, op: str, ranks: int | None = None) -> tuple[BusbwPoint, ...]:
        """The curve a group of ``ranks`` GPUs reads for ``op``: the largest ``by_ranks`` size not
        above ``ranks``, else the main one (None: the main one)."""
        groups = self.group_curves.get(op)
        if ranks is None or not groups or ranks > max(groups):
            return self.curves[op]
        return groups[max((n for n in groups if n <= ranks), default=min(groups))]

    def busbw_bytes_per_s(self, op: str, message_bytes: int, ranks: int | None = None) -> float:
        """The achieved busbw of ``op`` at ``message_bytes`` on a group of ``ranks`` GPUs, bytes/s
        (log-linear, clamped; :meth:`curve` picks the curve)."""
        points = self.curve(op, ranks)
        sizes, busbw = [p.message_bytes for p in points], [p.busbw_gbps for p in points]
        return log_linear(sizes, busbw, message_bytes) * 1e9

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> FabricTable:
        """Validate a ``configs/fabric/*.yaml`` entry; errors name the field (``fabric.link_gbps``)."""
        known = (
            "name", "display_name", "link_gbps", "link_source", "latency_us", "latency_source",
            "latency_quote", "assumptions", "collectives", "shared_host",
        )  # fmt: skip
        known_keys(raw, known, "fabric")
        for key in ("name", "link_source", "latency_source", "latency_quote"):
            text_field(raw, key, "fabric")
        link = positive_field(raw, "link_gbps", "fabric")
        latency = positive_field(raw, "latency_us", "fabric")
        given = raw.get("collectives")
        if not isinstance(given, Mapping) or set(given) != set(COLLECTIVES):
            raise ConfigError("fabric.collectives", f"must give every one of {', '.join(COLLECTIVES)}")
        where = {op: f"fabric.collectives.{op}" for op in COLLECTIVES}
        measured = {op: _points(c, where[op], link) for op, c in given.items() if "points" in c}
        curves = {op: measured.get(op) or _derived(c, where[op], measured) for op, c in given.items()}
        groups = {op: _by_ranks(c, where[op], link) for op, c in given.items()}
        for op, c in given.items():  # a derived curve takes its base's group curves too
            base = c.get("same_as") if isinstance(c, Mapping) else None
            if not groups[op] and isinstance(base, str):
                groups[op] = groups[base]
        shared = raw.get("shared_host", False)
        if not isinstance(shared, bool):
            raise ConfigError("fabric.shared_host", f"must be true or false, got {shared!r}")
        by_ranks = {op: g for op, g in groups.items() if g}
        return cls(str(raw["name"]), link, latency * 1e-6, curves, by_ranks, shared)


def known_keys(raw: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    """Refuse a key of ``raw`` not in ``known``, naming it (``fabric.speed``)."""
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}.{key}", f"not a known key; allowed: {', '.join(known)}")


def text_field(raw: Mapping[str, Any], key: str, where: str) -> str:
    """``raw[key]``, a non-empty string (a source or a quote), else a ConfigError naming it."""
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}", "missing: every figure needs its source and quote")
    return value


def positive_field(raw: Mapping[str, Any], key: str, where: str) -> float:
    """``raw[key]``, a positive finite number, else a ConfigError naming it."""
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{where}.{key}", f"must be a positive number, got {value!r}")
    return float(value)


def measured_points(
    rows: Any, where: str, value_key: str, limit: tuple[str, float]
) -> list[tuple[int, float]]:
    """(bytes, value) of a measured curve's rows ``{bytes, <value_key>, source, quote}``: sizes
    increasing, each value within ``limit`` (its name and GB/s), each with its source and quote."""
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}.points", f"must be a list of {{bytes, {value_key}, source, quote}}")
    out: list[tuple[int, float]] = []
    for i, row in enumerate(rows):
        at = f"{where}.points[{i}]"
        if not isinstance(row, Mapping):
            raise ConfigError(at, f"must be a mapping, got {row!r}")
        size = row.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"{at}.bytes", f"must be a positive whole number of bytes, got {size!r}")
        if out and size <= out[-1][0]:
            raise ConfigError(f"{at}.bytes", f"{size} does not increase on {out[-1][0]}")
        value = positive_field(row, value_key, at)
        if value > limit[1]:
            raise ConfigError(f"{at}.{value_key}", f"{value:g} GB/s is above the {limit[0]} {limit[1]:g}")
        text_field(row, "source", at)
        text_field(row, "quote", at)
        out.append((size, value))
    return out


def _points(curve: Any, where: str, link_gbps: float) -> tuple[BusbwPoint, ...]:
    """A measured curve: sizes increasing, each busbw within the link, each with a source."""
    rows = curve.get("points") if isinstance(curve, Mapping) else None
    points = measured_points(rows, where, "busbw_gbps", ("fabric's link_gbps", link_gbps))
    return tuple(BusbwPoint(size, busbw) for size, busbw in points)


def _by_ranks(curve: Any, where: str, link_gbps: float) -> dict[int, tuple[BusbwPoint, ...]]:
    """A collective's ``by_ranks`` curves: {group size (2 to 72): {points: [...]}}, each as
    :func:`_points` checks it."""
    given = curve.get("by_ranks") if isinstance(curve, Mapping) else None
    if given is None:
        return {}
    if not isinstance(given, Mapping) or not given:
        raise ConfigError(f"{where}.by_ranks", "must map group sizes to {points: [...]}")
    out: dict[int, tuple[BusbwPoint, ...]] = {}
    for ranks, sub in given.items():
        if isinstance(ranks, bool) or not isinstance(ranks, int) or not 2 <= ranks <= 72:
            raise ConfigError(f"{where}.by_ranks", f"{ranks!r} is not a group size; allowed: 2 to 72")
        out[ranks] = _points(sub, f"{where}.by_ranks.{ranks}", link_gbps)
    return out


def _derived(
    curve: Any, where: str, measured: Mapping[str, tuple[BusbwPoint, ...]]
) -> tuple[BusbwPoint, ...]:
    """A curve taken from another collective's measured one, with the reason it may be."""
    base = curve.get("same_as") if isinstance(curve, Mapping) else None
    if not isinstance(base, str) or base not in measured:
        raise ConfigError(
            f"{where}.same_as", f"{base!r} is not a measured curve; allowed: {', '.join(sorted(measured))}"
        )
    text_field(curve, "reason", where)
    return measured[base]
