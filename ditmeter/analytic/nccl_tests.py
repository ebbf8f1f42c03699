"""A fabric from your own host's nccl-tests output (``device.fabric=<file>``): the busbw the
collectives reach on the GPUs and the host you will run on, in place of the catalog's table.

On PCIe boards (RTX 4090, L20 without peer-to-peer; L40S where NCCL bounces through the host)
the collectives cross host memory, and the host's CPUs, memory and PCIe topology set their
bandwidth several-fold (``docs/parallel.md``): the catalog's table is one host's.
``all_reduce_perf -b 8 -e 512M -f 2 -g <GPUs>`` (or
``alltoall_perf``, ``all_gather_perf``, ``reduce_scatter_perf``) on your host prints a table
whose out-of-place ``busbw`` column is exactly what the cost model reads. The collective comes
from the file's ``# Collective test starting: <name>_perf`` line (nccl-tests 2.16.7 and later) or
else from the file's name (``all_reduce_perf.txt``); the other three collectives take its curve
(through host memory every collective moves each byte through the host once each way: 4 RTX 4090s
measured the same 18 GB/s in all-reduce and all-to-all, NVIDIA/nccl#1603; on NVLink too one file
stands in for all four). The columns are read by name from the table's header (``size ... time
algbw busbw``; out-of-place, the first of each), so ``-c 0``'s ``N/A`` and the layout without a
``root`` column read alike; a row whose fields do not match the header (``-S 1`` timestamps,
``-I 1``) is refused. The smallest nonzero size's time is the latency floor, so start the sweep
small (``-b 8``).
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
    if found:
        program = found.group(1)
        if program in PROGRAMS:
            return PROGRAMS[program]
        raise ConfigError(
            FIELD, f"{path.name} measured {program}; allowed: {', '.join(PROGRAMS)} (one collective per file)"
        )
    for program, op in PROGRAMS.items():
        if program in path.name:
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


def columns_of(text: str, path: Path) -> tuple[int, int, int] | None:
    """(fields per row, index of the out-of-place time, of its busbw) from the table's header line
    (``#  size  count  type  redop  root  time  algbw  busbw #wrong  time ...``); None: no header."""
    for line in text.splitlines():
        names = line.lstrip("#").split()
        if line.lstrip().startswith("#") and names[:1] == ["size"] and "busbw" in names:
            if "time" not in names:
                raise ConfigError(
                    FIELD, f"{path.name}: its header names no time column: {line.strip()[:120]}"
                )
            return len(names), names.index("time"), names.index("busbw")
    return None


def rows_of(text: str, path: Path) -> list[tuple[int, float, float, str]]:
    """(size bytes, out-of-place time µs, out-of-place busbw GB/s, the row as printed) of every
    data row: a line not starting with ``#`` whose first field is the size. Its columns are the
    header's (:func:`columns_of`); without a header, the last eight are taken as the out-of-place
    and in-place time, algbw, busbw and #wrong (nccl-tests' layout)."""
    columns = columns_of(text, path)
    rows: list[tuple[int, float, float, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.lstrip().startswith("#") or not fields[0].isdigit():
            continue
        if columns is None:
            if len(fields) < 10:
                continue
            at_time, at_busbw = len(fields) - 8, len(fields) - 6
        else:
            if len(fields) != columns[0]:
                raise ConfigError(
                    FIELD,
                    f"{path.name}: a row has {len(fields)} fields where its header names {columns[0]} "
                    f"(run nccl-tests without -S or -I): {' '.join(fields)[:120]}",
                )
            at_time, at_busbw = columns[1], columns[2]
        time_us, busbw = _number(fields[at_time]), _number(fields[at_busbw])
        if time_us is None or busbw is None:
            continue
        rows.append((int(fields[0]), time_us, busbw, " ".join(fields)))
    return rows


def fabric_mapping(text: str, path: Path, link_gbps: float, *, nvlink: bool = False) -> dict[str, Any]:
    """The ``configs/fabric/`` mapping of one nccl-tests output, for a device whose one-way link
    over the run's GPUs is ``link_gbps`` (its own: the busbw is taken as measured, not rescaled;
    ``nvlink``: that link is NVLink, where an NVLS all-reduce's busbw can exceed it)."""
    op = collective_of(text, path)
    rows = rows_of(text, path)
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
        hint = (
            "an all-reduce through NVLS can be: give all_gather_perf's output"
            if nvlink
            else "is the file this device's (device=)?"
        )
        raise ConfigError(
            FIELD,
            f"{path.name}: busbw {over[0][2]:g} GB/s at {over[0][0]:,} B is above the device's one-way "
            f"link ({link_gbps:g} GB/s); {hint}",
        )
    timed = [r for r in rows if r[0] > 0]
    if not timed or min(r[1] for r in timed) <= 0:
        raise ConfigError(
            FIELD, f"{path.name}: a nonzero size's time is 0 us or none is given; times must be positive"
        )
    latency = min(r[1] for r in timed)
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
    smallest = min(timed, key=lambda r: r[1])
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
