"""The collectives a plan says one rank issues, against those a traced rank issued.

Measured collectives come as ``(op, group_size, input_bytes, output_bytes)`` tuples (one per
call, from :class:`ditmeter.tracer.collectives.CollectiveRecorder`); both sides are compared as
multisets, exactly: a missing, extra or differently sized collective is a mismatch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ditmeter.analytic.parallel import CollectiveSpec

Measured = tuple[str, int, int, int]


def as_specs(measured: Iterable[Measured]) -> list[CollectiveSpec]:
    """Traced calls grouped by kind and size, with their counts."""
    return sorted(CollectiveSpec(*key, count) for key, count in Counter(measured).items())


def collective_mismatches(expected: Sequence[CollectiveSpec], measured: Iterable[Measured]) -> list[str]:
    """One line per kind and size where the counts differ (empty: the plan is exact)."""
    want = {(c.op, c.group_size, c.input_bytes, c.output_bytes): c.count for c in expected}
    got = Counter(measured)
    lines = []
    for key in sorted(set(want) | set(got)):
        if want.get(key, 0) != got.get(key, 0):
            op, group, inp, out = key
            lines.append(
                f"{op} over {group} ranks, {inp:,} B in / {out:,} B out: "
                f"analytic {want.get(key, 0)}, traced {got.get(key, 0)}"
            )
    return lines
