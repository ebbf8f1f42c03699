"""Your own host's nccl-tests output as the device's fabric (``device.fabric=<file>``), by hand."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ditmeter.analytic.collective_time import collective_time
from ditmeter.analytic.nccl_tests import fabric_mapping, gpus_of
from ditmeter.catalog import device_fabric, fabric_table
from ditmeter.cli import main
from ditmeter.config import load

LOAD = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny"]

HEAD = """# nThread 1 nGpus 8 minBytes 8 maxBytes 134217728 step: 2(factor) warmup iters: 5 iters: 20
#
# Using devices
#  Rank  0 Group  0 Pid 1 on host device  0 [0x01] NVIDIA GeForce RTX 4090
#  Rank  1 Group  0 Pid 1 on host device  1 [0x11] NVIDIA GeForce RTX 4090
#  Rank  2 Group  0 Pid 1 on host device  2 [0x21] NVIDIA GeForce RTX 4090
#  Rank  3 Group  0 Pid 1 on host device  3 [0x31] NVIDIA GeForce RTX 4090
#  Rank  4 Group  0 Pid 1 on host device  4 [0x41] NVIDIA GeForce RTX 4090
#  Rank  5 Group  0 Pid 1 on host device  5 [0x51] NVIDIA GeForce RTX 4090
#  Rank  6 Group  0 Pid 1 on host device  6 [0x61] NVIDIA GeForce RTX 4090
#  Rank  7 Group  0 Pid 1 on host device  7 [0x71] NVIDIA GeForce RTX 4090
#
#                                                              out-of-place                       in-place
#  size  count  type  redop  root  time  algbw  busbw #wrong  time  algbw  busbw #wrong
#  (B)  (elements)  (us)  (GB/s)  (GB/s)  (us)  (GB/s)  (GB/s)
"""
#: rows of blog.chlc.cc's 8 RTX 4090s without P2P (the catalog's pcie-shm reads the same table)
ROWS = """  8  2  float  sum  -1  38.83  0.00  0.00  0  40.43  0.00  0.00  0
  1048576  262144  float  sum  -1  222.8  4.71  8.24  0  226.1  4.64  8.12  0
  67108864  16777216  float  sum  -1  7907.1  8.49  14.85  0  7905.3  8.49  14.86  0
  134217728  33554432  float  sum  -1  16253  8.26  14.45  0  16227  8.27  14.47  0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 4.85265
"""
#: a slower host: one row at 128 MiB, busbw 2.57 GB/s
SLOW = """  8  2  float  sum  -1  45.00  0.00  0.00  0  45.00  0.00  0.00  0
  134217728  33554432  float  sum  -1  91335  1.47  2.57  0  91335  1.47  2.57  0
"""


def _device(*over: str) -> Any:
    d = load([*LOAD, "device=rtx4090", *over], "report").device
    assert d is not None
    return d


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_all_reduce_output_becomes_every_collective_s_curve_by_hand(tmp_path: Path) -> None:
    """Ulysses 4 on RTX 4090s, a 100 MB all-to-all: each rank sends 75,000,000 B. On the file's
    all-reduce rows 14.85 GB/s at 64 MiB and 14.45 at 128 MiB, log2(100e6 / 67,108,864) = 0.57548 of
    the way: 14.6198 GB/s, 75e6 / 14.6198e9 = 5.130 ms (the catalog's pcie-shm, the same host's
    table, gives the same); the latency floor is its 8 B row, 38.83 us. On the slower host's one row,
    2.57 GB/s: 75e6 / 2.57e9 = 29.18 ms, 5.7 times as long."""
    path = _write(tmp_path, "all_reduce_perf.txt", HEAD + ROWS)
    device = _device(f"device.fabric={path}")
    fabric = device_fabric(device)
    assert fabric is not None and fabric.latency_s == pytest.approx(38.83e-6)
    assert fabric.curves["all_to_all"] == fabric.curves["all_reduce"] == fabric.curves["all_gather"]
    c = collective_time("all_to_all", ranks=4, tensor_bytes=100_000_000, device=device, fabric=fabric)
    assert c.time_s == pytest.approx(75e6 / 14.6198e9, rel=1e-4)
    catalog = collective_time(
        "all_to_all", ranks=4, tensor_bytes=100_000_000, device=_device(), fabric=fabric_table("pcie-shm")
    )
    assert catalog.time_s == pytest.approx(c.time_s, rel=1e-9)
    slow = device_fabric(_device(f"device.fabric={_write(tmp_path, 'all_reduce_perf.log', HEAD + SLOW)}"))
    s = collective_time("all_to_all", ranks=4, tensor_bytes=100_000_000, device=device, fabric=slow)
    assert s.time_s == pytest.approx(75e6 / 2.57e9, rel=1e-12)  # 29.18 ms
    assert s.time_s > 5 * c.time_s


def test_the_collective_comes_from_the_starting_line_before_the_file_name(tmp_path: Path) -> None:
    """nccl-tests 2.16.7+ names its program in a header line; it wins over the file's name. The
    file's 8 GPUs are its 8 Rank lines."""
    text = "# Collective test starting: alltoall_perf\n" + HEAD + SLOW
    raw = fabric_mapping(text, Path("all_reduce_perf.txt"), 32.0)
    assert "points" in raw["collectives"]["all_to_all"]
    assert raw["collectives"]["all_reduce"]["same_as"] == "all_to_all"
    assert gpus_of(text) == 8 and "(8 GPUs)" in raw["collectives"]["all_to_all"]["points"][0]["source"]
    named = fabric_mapping(HEAD + SLOW, Path("all_reduce_perf.txt"), 32.0)
    assert "points" in named["collectives"]["all_reduce"]


def test_columns_are_read_by_the_header_s_names() -> None:
    """-c 0 prints N/A for #wrong, and older nccl-tests print no root column: both read the
    out-of-place time and busbw; the floor is the smallest nonzero size's time, not a 0 B row's."""
    no_check = (
        HEAD + "  134217728  33554432  float  sum  -1  16253  8.26  14.45  N/A  16227  8.27  14.47  N/A\n"
    )
    raw = fabric_mapping(no_check, Path("all_reduce_perf.txt"), 32.0)
    assert raw["collectives"]["all_reduce"]["points"][0]["busbw_gbps"] == 14.45
    old = (
        "#  size  count  type  redop  time  algbw  busbw  error  time  algbw  busbw  error\n"
        "  0  0  float  sum  1.00  0.00  0.00  0e+00  1.00  0.00  0.00  0e+00\n"
        "  8  2  float  sum  38.83  0.00  0.00  0e+00  40.43  0.00  0.00  0e+00\n"
        "  134217728  33554432  float  sum  16253  8.26  14.45  0e+00  16227  8.27  14.47  0e+00\n"
    )
    raw = fabric_mapping(old, Path("all_reduce_perf.txt"), 32.0)
    assert raw["collectives"]["all_reduce"]["points"][0]["busbw_gbps"] == 14.45
    assert raw["latency_us"] == 38.83


def test_a_file_on_a_board_whose_link_depends_on_the_group_is_read_as_measured(tmp_path: Path) -> None:
    """An H100 PCIe pair talks over its NVLink bridge, 4 or 8 of them over PCIe: a file measured on
    8 of them at 40 GB/s is 40 GB/s for groups of 2, 4 and 8 alike (not scaled by link / link)."""
    rows = (
        "  8  2  float  none  -1  20.00  0.00  0.00  0  20.00  0.00  0.00  0\n"
        "  134217728  16777216  float  none  -1  2936  45.71  40.00  0  2936  45.71  40.00  0\n"
    )
    path = _write(tmp_path, "all_gather_perf.txt", HEAD + rows)
    device = load([*LOAD, "device=h100-pcie", f"device.fabric={path}"], "report").device
    fabric = device_fabric(device)
    assert fabric is not None and not fabric.rescale
    for ranks in (2, 4, 8):
        c = collective_time("all_gather", ranks=ranks, tensor_bytes=134_217_728, device=device, fabric=fabric)
        assert c.time_s == pytest.approx(c.sent_bytes / 40e9, rel=1e-12), ranks


def test_a_report_reads_the_host_s_own_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same Ulysses-4 plan (1.3B, 480p: all-to-alls of tens of MB) on a slower host's table
    exposes more communication than on the catalog's, and report.json names the file, its resolved
    path and its sha256 as the fabric."""
    slow = _write(tmp_path, "alltoall_perf.txt", HEAD + SLOW)
    args = ["model=wan2.1-t2v-1.3b", "workload=480p-81f", "device=rtx4090", "parallel.ulysses=4",
            f"output_root={tmp_path}"]  # fmt: skip
    assert main(["report", *args, "run_id=catalog"]) == 0
    assert main(["report", *args, f"device.fabric={slow}", "run_id=host"]) == 0
    out = capsys.readouterr().out
    exposed = [line for line in out.splitlines() if line.startswith("plan 4 GPUs")]
    assert len(exposed) == 2

    def comm(line: str) -> float:
        value, unit = line.split("communication ")[1].split(" exposed")[0].split()[:2]
        return float(value) * {"s": 1.0, "ms": 1e-3, "µs": 1e-6}[unit]

    assert comm(exposed[1]) > 3 * comm(exposed[0])
    report = json.loads((tmp_path / "host" / "static_analysis" / "wan2_1" / "report.json").read_text())
    digest = hashlib.sha256(slow.read_bytes()).hexdigest()
    assert report["time"]["fabric"] == {
        "name": "alltoall_perf.txt",
        "origin": f"{slow.resolve()} (sha256 {digest})",
    }
    catalog = json.loads((tmp_path / "catalog" / "static_analysis" / "wan2_1" / "report.json").read_text())
    assert catalog["time"]["fabric"] == {"name": "pcie-shm", "origin": None}


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("run.txt", HEAD + ROWS, "cannot tell which collective"),
        ("all_reduce_perf.txt", HEAD, "no nccl-tests data rows"),
        ("all_reduce_perf.txt", HEAD + SLOW + SLOW, "do not increase"),
        (
            "all_reduce_perf.txt",
            HEAD + "   134217728   33554432  float  sum  -1  1000  134.2  40.00  0  1000  134.2  40.00  0\n",
            "above the device's one-way link (32 GB/s)",
        ),
        ("run.txt", "# Collective test starting: sendrecv_perf\n" + HEAD + ROWS, "measured sendrecv_perf"),
        (
            "all_reduce_perf.txt",
            HEAD
            + "  8  2  float  sum  -1  2025-06-03 10:00:00  38.83  0.00  0.00  0  40.43  0.00  0.00  0\n",
            "fields where its header names 13",
        ),
        (
            "all_reduce_perf.txt",
            HEAD + "   8   2  float  sum  -1  40.0  0.00  0.00  0  40.0  0.00  0.00  0\n",
            "every row's busbw is 0",
        ),
    ],
)
def test_a_bad_output_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, words: str
) -> None:
    path = _write(tmp_path, name, text)
    rc = main(["report", *LOAD, "device=rtx4090", "parallel.ulysses=2", f"device.fabric={path}",
               f"output_root={tmp_path / 'out'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "device.fabric" in err and words in err, err
    assert not (tmp_path / "out").exists()


def test_only_a_regular_file_of_bounded_size_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory, a missing file and a file over 1 MiB are refused with exit 2 and nothing written."""
    big = _write(tmp_path, "all_reduce_perf.txt", HEAD + ROWS + "#" * (1024 * 1024))
    fifo = tmp_path / "all_gather_perf.txt"
    os.mkfifo(fifo)
    for path in (tmp_path, tmp_path / "none_perf.txt", big, fifo):
        rc = main(["report", *LOAD, "device=rtx4090", "parallel.ulysses=2", f"device.fabric={path}",
                   f"output_root={tmp_path / 'out'}"])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and "device.fabric" in err, (path, err)
    assert not (tmp_path / "out").exists()
