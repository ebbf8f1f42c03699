"""Collectives at the achieved bus bandwidth of nccl-tests measurements (``configs/fabric/``), by hand."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ditmeter.analytic.collective_time import collective_time
from ditmeter.analytic.collectives import COLLECTIVES
from ditmeter.analytic.fabric import FabricTable
from ditmeter.catalog import choices, config_dir, fabric_table
from ditmeter.cli import main
from ditmeter.config import load
from ditmeter.errors import ConfigError

LOAD = ["model=wan2.1-t2v-1.3b", "workload=w001-tiny"]


def _device(name: str) -> Any:
    d = load([*LOAD, f"device={name}"], "report").device
    assert d is not None
    return d


def _raw(name: str) -> dict[str, Any]:
    with open(config_dir() / "fabric" / f"{name}.yaml") as f:
        raw = yaml.safe_load(f)
    assert isinstance(raw, dict)
    return raw


def test_an_all_to_all_on_nvswitch_hopper_by_hand() -> None:
    """Ulysses 4 on H100 SXM, 14B 720p: one rank's bf16 q of 18,900 tokens × 5,120 = 193,536,000 B,
    on the 4-GPU all-to-all curve (aiconfigurator's H100 rows, num_gpus 4) between 128 MiB
    (134,217,728 B in 0.36476 ms: 134,217,728 / 364.76 µs × 3/4 = 275.97 GB/s) and 256 MiB
    (268,435,456 B in 0.70229 ms: 286.67 GB/s). log2(193,536,000 / 134,217,728) = 0.52803 of the
    way: busbw = 275.97 + 0.52803 × (286.67 − 275.97) = 281.62 GB/s. Each rank sends 3/4 of it,
    145,152,000 B: 145,152,000 / 281.62e9 = 515.4 µs (over the 10.59 µs floor). An H800 (NVLink
    400: 200 one way) keeps the fraction: busbw × 200 / 450."""
    assert pytest.approx(275.97, abs=0.005) == 134_217_728 / 364.76e-6 * 3 / 4 / 1e9
    assert pytest.approx(286.67, abs=0.005) == 268_435_456 / 702.29e-6 * 3 / 4 / 1e9
    busbw = (275.97 + 0.52803 * (286.67 - 275.97)) * 1e9
    hopper = fabric_table("nvswitch-hopper")
    c = collective_time(
        "all_to_all", ranks=4, tensor_bytes=193_536_000, device=_device("h100-sxm"), fabric=hopper
    )
    assert c.sent_bytes == 145_152_000
    assert c.time_s == pytest.approx(145_152_000 / busbw, rel=1e-5)  # 515.4 µs
    h800 = collective_time(
        "all_to_all", ranks=4, tensor_bytes=193_536_000, device=_device("h800"), fabric=hopper
    )
    assert h800.time_s == pytest.approx(145_152_000 / (busbw * 200 / 450), rel=1e-5)  # 1.160 ms
    # a tiny message: the floor
    tiny = collective_time(
        "all_to_all", ranks=8, tensor_bytes=1024, device=_device("h100-sxm"), fabric=hopper
    )
    assert tiny.time_s == pytest.approx(10.59e-6)


def test_at_a_tabled_size_the_time_is_the_measured_time() -> None:
    """8 H100s, a 16 MiB all-to-all (aiconfigurator: message_size 8,388,608 halves in 0.07566 ms):
    each rank sends 7/8 of 16,777,216 B = 14,680,064 B at the table's 194.03 GB/s, 75.66 µs."""
    c = collective_time(
        "all_to_all", ranks=8, tensor_bytes=16_777_216, device=_device("h100-sxm"),
        fabric=fabric_table("nvswitch-hopper"),
    )  # fmt: skip
    assert c.time_s == pytest.approx(75.66e-6, rel=1e-4)


def test_a_group_reads_the_curve_of_its_size() -> None:
    """A group of 2 or 3 reads the 2-GPU curve, 4 to 7 the 4-GPU one, 8 the 8-GPU one; a GB200
    group of 16 (one NVL72 domain) the main curve (Azure's 4-GPU ring all-reduce, as before the
    group curves). At 16 MiB 2 H100s reach 158.13 GB/s all-to-all, 8 reach 194.03; the main curve
    held at its 128 MiB figure would give 311.34 (what a group of 2 read before)."""
    hopper = fabric_table("nvswitch-hopper")
    a2a = {n: hopper.busbw_bytes_per_s("all_to_all", 16_777_216, n) / 1e9 for n in (2, 3, 4, 7, 8)}
    assert a2a[2] == a2a[3] == pytest.approx(158.13)
    assert a2a[4] == a2a[7] == pytest.approx(182.55)
    assert a2a[8] == pytest.approx(194.03)
    assert hopper.busbw_bytes_per_s("all_to_all", 16_777_216) / 1e9 == pytest.approx(311.34)
    blackwell = fabric_table("nvswitch-blackwell")
    assert (
        blackwell.curve("all_to_all", 16)
        == blackwell.curve("all_reduce", 16)
        == blackwell.curves["all_reduce"]
    )
    assert blackwell.curve("all_to_all", 8) != blackwell.curves["all_reduce"]


def test_a_4090_plan_through_host_memory_is_far_slower_than_its_pcie_link() -> None:
    """Ulysses 4 on RTX 4090s, a 100 MB all-to-all: each rank sends 75,000,000 B. Through host
    memory (pcie-shm: the all-reduce curve of blog.chlc.cc's 8 RTX 4090s with P2P off, 14.85 GB/s
    at 64 MiB and 14.45 at 128 MiB) log2(100e6 / 67,108,864) = 0.57548 of the way between them:
    14.6198 GB/s, 75e6 / 14.6198e9 = 5.130 ms; at the datasheet's PCIe 4.0 link (32e9 B/s one way)
    and 3 steps of 5 us: 75e6 / 32e9 + 15 us = 2.359 ms, 2.17 times less."""
    device = _device("rtx4090")
    assert device.fabric == "pcie-shm"
    rows = {int(p["bytes"]): p["busbw_gbps"] for p in _raw("pcie-shm")["collectives"]["all_reduce"]["points"]}
    assert (rows[67_108_864], rows[134_217_728]) == (14.85, 14.45)
    shm = collective_time(
        "all_to_all", ranks=4, tensor_bytes=100_000_000, device=device, fabric=fabric_table("pcie-shm")
    )
    datasheet = collective_time("all_to_all", ranks=4, tensor_bytes=100_000_000, device=device, fabric=None)
    assert shm.time_s == pytest.approx(5.1300e-3, rel=1e-4)
    assert datasheet.time_s == pytest.approx(75e6 / 32e9 + 3 * 5e-6, rel=1e-12)  # 2.359 ms
    assert shm.time_s > 2 * datasheet.time_s


def test_an_l40s_group_of_4_reads_its_own_host_curve() -> None:
    """Ulysses 4 on L40S, a 100 MB all-to-all: on pcie-l40s' 4-GPU curve (aiconfigurator's L40S
    rows: 64 MiB in 10.907 ms, 67,108,864 / 10.907 ms × 3/4 = 4.61 GB/s; 128 MiB in 21.947 ms, 4.59)
    between them log2(100e6 / 67,108,864) = 0.57548 of the way: 4.5985 GB/s; each rank sends 75e6 B:
    16.31 ms. Eight L40S on the same host: 8× slower per byte than 2 (about 1.2 against 20 GB/s)."""
    device, table = _device("l40s"), fabric_table("pcie-l40s")
    assert device.fabric == "pcie-l40s"
    rows = {
        int(p["bytes"]): p for p in _raw("pcie-l40s")["collectives"]["all_to_all"]["by_ranks"][4]["points"]
    }
    low, high = rows[67_108_864]["busbw_gbps"], rows[134_217_728]["busbw_gbps"]
    assert low == pytest.approx(67_108_864 / 10.907e-3 * 3 / 4 / 1e9, abs=0.005)
    c = collective_time("all_to_all", ranks=4, tensor_bytes=100_000_000, device=device, fabric=table)
    assert c.time_s == pytest.approx(75e6 / ((low + 0.57548 * (high - low)) * 1e9), rel=1e-4)
    assert table.busbw_bytes_per_s("all_to_all", 100_000_000, 2) > 8 * table.busbw_bytes_per_s(
        "all_to_all", 100_000_000, 8
    )


def test_on_a_shared_host_a_pair_of_an_8_gpu_plan_contends_like_8() -> None:
    """pcie-l40s is shared_host: a CFG pair's all-gather of 16 MiB in an 8-GPU plan reads the 8-GPU
    rows (every GPU of the plan talks through the host at once), the same pair in a 2-GPU plan the
    2-GPU rows; on NVSwitch (each GPU its own links) the pair reads the 2-GPU curve either way."""
    l40s, shared = _device("l40s"), fabric_table("pcie-l40s")
    assert shared.shared_host and not fabric_table("nvswitch-hopper").shared_host

    def pair(device, table, gpus):  # type: ignore[no-untyped-def]
        return collective_time(
            "all_gather", ranks=2, tensor_bytes=2**24, device=device, fabric=table, gpus=gpus
        )

    sent = 2**23  # half of the gathered 16 MiB
    assert pair(l40s, shared, 8).time_s == pytest.approx(
        sent / shared.busbw_bytes_per_s("all_gather", 2**24, 8)
    )
    assert pair(l40s, shared, 2).time_s == pytest.approx(
        sent / shared.busbw_bytes_per_s("all_gather", 2**24, 2)
    )
    assert pair(l40s, shared, 8).time_s > 10 * pair(l40s, shared, 2).time_s
    h100, hopper = _device("h100-sxm"), fabric_table("nvswitch-hopper")
    assert pair(h100, hopper, 8).time_s == pair(h100, hopper, 2).time_s


def test_a_device_without_a_fabric_keeps_the_datasheet_link() -> None:
    """H100 PCIe names no fabric: its plans cost collectives at the link as before."""
    d = _device("h100-pcie")
    assert d.fabric is None
    assert load([*LOAD, "device=h100-pcie"], "report").time.fabric is None
    assert load([*LOAD, "device=h100-sxm"], "report").time.fabric == fabric_table("nvswitch-hopper")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        # a busbw above the one-way link the table states
        (
            lambda r: r["collectives"]["reduce_scatter"]["points"][0].update(busbw_gbps=451),
            "points[0].busbw_gbps",
        ),
        # sizes not increasing
        (lambda r: r["collectives"]["reduce_scatter"]["points"][1].update(bytes=2**27), "points[1].bytes"),
        # a point without its source
        (lambda r: r["collectives"]["reduce_scatter"]["points"][2].pop("source"), "points[2].source"),
        # a derived curve without its reason, or from a curve that is not measured
        (lambda r: r["collectives"]["all_to_all"].pop("reason"), "all_to_all.reason"),
        (lambda r: r["collectives"]["all_to_all"].update(same_as="all_gather"), "all_to_all.same_as"),
        # a group curve for a group of one
        (
            lambda r: r["collectives"]["all_to_all"]["by_ranks"].update({1: {"points": []}}),
            "all_to_all.by_ranks",
        ),
    ],
    ids=["above-link", "not-increasing", "no-source", "no-reason", "derived-from-derived", "group-of-one"],
)
def test_a_wrong_table_is_refused_naming_the_field(edit: Any, field: str) -> None:
    raw = copy.deepcopy(_raw("nvswitch-hopper"))
    FabricTable.from_mapping(raw)  # as shipped: fine
    edit(raw)
    with pytest.raises(ConfigError) as err:
        FabricTable.from_mapping(raw)
    assert err.value.field.startswith("fabric.") and err.value.field.endswith(field)


def test_an_unknown_fabric_exits_2_naming_the_field_and_the_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["report", *LOAD, "device=h100-sxm", "device.fabric=nvlink9", f"output_root={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "device.fabric" in err and "nvswitch-hopper" in err


def test_every_fabric_figure_carries_a_source() -> None:
    """Read from the YAML: the link, the latency and every busbw point name where they come from;
    a curve without points says which it takes and why. Every device's fabric exists."""
    for name in choices("fabric"):
        raw = _raw(name)
        assert raw["name"] == name
        assert raw["link_source"].strip() and raw["latency_source"].startswith("https://"), name
        assert raw["latency_quote"].strip() and raw["assumptions"].strip(), name
        assert set(raw["collectives"]) == set(COLLECTIVES), name
        for op, curve in raw["collectives"].items():
            if "points" not in curve:
                assert curve["same_as"] in raw["collectives"] and curve["reason"].strip(), (name, op)
                continue
            for point in curve["points"]:
                assert point["source"].startswith("https://") and point["quote"].strip(), (name, op, point)
                assert 0 < point["busbw_gbps"] <= raw["link_gbps"], (name, op, point)
        for op, curve in raw["collectives"].items():
            for ranks, group in curve.get("by_ranks", {}).items():
                for point in group["points"]:
                    assert point["source"].startswith("https://") and point["quote"].strip(), (
                        name,
                        op,
                        ranks,
                    )
                    assert 0 < point["busbw_gbps"] <= raw["link_gbps"], (name, op, ranks, point)
    for device in choices("device"):
        fabric = _device(device).fabric
        assert fabric is None or fabric in choices("fabric"), device


def test_the_4090_host_table_is_transcribed_consistently() -> None:
    """Each pcie-shm row quotes nccl-tests' out-of-place size, time (us), algbw and busbw: algbw =
    size / time and busbw = algbw x 2(N-1)/N = x 1.75 for an all-reduce on 8 GPUs, each to the
    table's print rounding (0.005 GB/s on the printed algbw, 1% on the 4-digit times), and the
    busbw point is the quoted one. A transcription slip in any row fails it."""
    rows = _raw("pcie-shm")["collectives"]["all_reduce"]["points"]
    assert len(rows) == 12
    for row in rows:
        found = re.search(r"(\d+) B ([\d.]+) us algbw ([\d.]+) busbw ([\d.]+)$", row["quote"])
        assert found, row["quote"]
        numbers = [float(v) for v in found.groups()]
        assert int(numbers[0]) == row["bytes"] and numbers[3] == row["busbw_gbps"]
        assert numbers[0] / (numbers[1] * 1e3) == pytest.approx(numbers[2], rel=0.01, abs=0.005)
        assert numbers[2] * 1.75 == pytest.approx(numbers[3], abs=0.02)
