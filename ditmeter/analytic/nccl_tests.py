"""A fabric from your own host's nccl-tests output (``device.fabric=<file>``): the busbw the
collectives reach on the GPUs and the host you will run on, in place of the catalog's table.

On PCIe boards without peer-to-peer (RTX 4090, L40S, L20) every collective crosses host memory,
and the host's CPUs, memory and PCIe topology set its bandwidth several-fold (``docs/parallel.md``):
the catalog's table is one host's. ``all_reduce_perf -b 8 -e 512M -f 2 -g <GPUs>`` (or
``alltoall_perf``, ``all_gather_perf``, ``reduce_scatter_perf``) on your host prints a table
whose out-of-place ``busbw`` column is exactly what the cost model reads. The collective comes
from the file's ``# Collective test starting: <name>_perf`` line (nccl-tests 2.13 and later) or
else from the file's name (``all_reduce_perf.txt``); the other three collectives take its curve
(through host memory every collective moves each byte through the host once each way: 4 RTX 4090s
measured the same 18 GB/s in all-reduce and all-to-all, NVIDIA/nccl#1603). The smallest size's
time is the latency floor, so start the sweep small (``-b 8``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ditmeter.analytic.collectives import COLLECTIVES
from ditmeter.errors import ConfigError

FIELD = "device.fabric"
#: nccl-tests' program names and the collective each measures
PROGRAMS = {
    "all_reduce_perf": "all_reduce",
    "all_gather_perf": "all_gather",
    "reduce_scatter_perf": "reduce_scatter",
    "alltoall_perf": "all_to_all",
}
_STARTING = re.compile(r"^#\s*Collective test starting:\s*(\S+)", re.MULTILINE)
_NGPUS = re.compile(r"^#\s*nThread\s+(\d+)\s+nGpus\s+(\d+)", re.MULTILINE)
_RANK = re.compile(r"^#\s+Rank\s+\d+\s", re.MULTILINE)


def is_file_name(name: str) -> bool:
    """``device.fabric`` names a file (a path, or a name with a suffix), not a catalog table."""
    return "/" in name or "\\" in name or bool(Path(name).suffix)


def collective_of(text: str, path: Path) -> str:
    """The collective a file measured: its ``Collective test starting`` line, else its name."""
    found = _STARTING.search(text)
    names = [found.group(1)] if found else []
    names += [path.name]
    for name in names:
        for program, op in PROGRAMS.items():
            if program in name:
                return op
    raise ConfigError(
        FIELD,
        f"{path.name}: cannot tell which collective it measured (no 'Collective test starting' line); "
        f"name the file after the program, one of {', '.join(PROGRAMS)}",
    )


def gpus_of(text: str) -> int | None:
    """The GPUs the run used: one ``#  Rank`` line each, else nThread × nGpus of the header."""
    ranks = len(_RANK.findall(text))
    if ranks:
        return ranks
    head = _NGPUS.search(text)
    return int(head.group(1)) * int(head.group(2)) if head else None


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def rows_of(text: str) -> list[tuple[int, float, float, str]]:
    """(size bytes, out-of-place time µs, out-of-place busbw GB/s, the row as printed) of every
    data row: a line not starting with ``#`` whose first field is the size and whose last eight
    are the out-of-place and in-place time, algbw, busbw and #wrong (nccl-tests' column layout)."""
    rows: list[tuple[int, float, float, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.lstrip().startswith("#") or len(fields) < 10 or not fields[0].isdigit():
            continue
        time_us, busbw = _number(fields[-8]), _number(fields[-6])
        if time_us is None or busbw is None:
            continue
        rows.append((int(fields[0]), time_us, busbw, " ".join(fields)))
    return rows


def fabric_mapping(text: str, path: Path, link_gbps: float) -> dict[str, Any]:
    """The ``configs/fabric/`` mapping of one nccl-tests output, for a device whose one-way link
    is ``link_gbps`` (its own: the busbw is taken as measured, not rescaled)."""
    op = collective_of(text, path)
    rows = rows_of(text)
    if not rows:
        raise ConfigError(FIELD, f"{path.name} holds no nccl-tests data rows (size count type ... busbw)")
    sizes = [r[0] for r in rows]
    if sizes != sorted(set(sizes)):
        raise ConfigError(FIELD, f"{path.name}: the sizes do not increase row by row (one run per file)")
    points = [r for r in rows if r[2] > 0]
    if not points:
        raise ConfigError(FIELD, f"{path.name}: every row's busbw is 0; sweep to larger sizes (-e 512M)")
    over = [r for r in points if r[2] > link_gbps]
    if over:
        raise ConfigError(
            FIELD,
            f"{path.name}: busbw {over[0][2]:g} GB/s at {over[0][0]:,} B is above the device's one-way "
            f"link ({link_gbps:g} GB/s); an all-reduce through NVLS can be: give all_gather_perf's output",
        )
    latency = min(r[1] for r in rows)
    if latency <= 0:
        raise ConfigError(FIELD, f"{path.name}: a row's time is {latency:g} us; times must be positive")
    gpus = gpus_of(text)
    source = f"{path.name} ({gpus} GPUs)" if gpus else path.name
    measured = {
        "points": [
            {"bytes": size, "busbw_gbps": busbw, "source": source, "quote": row}
            for size, _, busbw, row in points
        ]
    }
    reason = (
        f"one nccl-tests output given ({op}); through host memory each collective moves every byte "
        "through the host once each way (NVIDIA/nccl#1603: all-reduce and all-to-all alike)"
    )
    collectives = {c: measured if c == op else {"same_as": op, "reason": reason} for c in COLLECTIVES}
    smallest = min(rows, key=lambda r: r[1])
    return {
        "name": path.name,
        "display_name": f"nccl-tests output {path.name}",
        "link_gbps": link_gbps,
        "link_source": "the device's own one-way link (the output was measured on it)",
        "latency_us": latency,
        "latency_source": str(path),
        "latency_quote": smallest[3],
        "collectives": collectives,
    }
