"""The collective cost model by hand, and the interconnect figures of the device catalog."""

from __future__ import annotations

import pytest

from ditmeter.analytic.collectives import collective_cost
from ditmeter.catalog import choices
from ditmeter.config import load


def test_an_all_to_all_by_hand() -> None:
    """Ulysses on 4 H100s: one rank's bf16 q of [1, 75,600/4 tokens, 40 heads, 128] = 193,536,000 bytes;
    it keeps 1/4 and sends 3/4 over NVLink at 450 GB/s one way, 3 steps of 5 µs."""
    c = collective_cost("all_to_all", ranks=4, tensor_bytes=193_536_000, link=450e9, latency_s=5e-6)
    assert c.sent_bytes == 145_152_000
    assert c.time_s == pytest.approx(145_152_000 / 450e9 + 3 * 5e-6)  # 322.56 µs + 15 µs


def test_an_all_gather_by_hand() -> None:
    """FSDP on 8 GPUs gathering one 14B block's bf16 weights (351,394,304 parameters × 2 bytes, the
    analytic block's count): each rank receives 7/8 of them at 200 GB/s one way (an H800's
    400 GB/s NVLink), 7 steps."""
    out = 351_394_304 * 2
    c = collective_cost("all_gather", ranks=8, tensor_bytes=out, link=200e9, latency_s=0.0)
    assert c.sent_bytes == 7 * out // 8 == 614_940_032
    assert c.time_s == pytest.approx(614_940_032 / 200e9)  # 3.07 ms


@pytest.mark.parametrize(
    ("op", "sent", "time_s"),
    [
        # 4 ranks, 4 MB at 100 GB/s one way, 1 µs a step: a reduce-scatter sends 3/4 of it in 3 steps
        ("reduce_scatter", 3_000_000, 3_000_000 / 1e11 + 3e-6),  # 33 µs
        # an all-reduce is a reduce-scatter then an all-gather: twice the bytes and the steps
        ("all_reduce", 6_000_000, 6_000_000 / 1e11 + 6e-6),  # 66 µs
    ],
)
def test_reduce_scatter_and_all_reduce_by_hand(op: str, sent: int, time_s: float) -> None:
    c = collective_cost(op, ranks=4, tensor_bytes=4_000_000, link=1e11, latency_s=1e-6)
    assert c.sent_bytes == sent and c.time_s == pytest.approx(time_s, rel=1e-12)


def test_a_group_of_one_costs_nothing() -> None:
    assert collective_cost("all_to_all", ranks=1, tensor_bytes=10**9, link=1e9, latency_s=1e-3).time_s == 0


def test_every_device_has_a_sourced_link() -> None:
    for name in choices("device"):
        d = load(["model=wan2.1-t2v-1.3b", f"device={name}"], "report").device
        assert d is not None and d.link_bytes_per_s is not None, name
        assert d.sources["pcie_gbps"].strip(), name
        if d.nvlink_gbps:
            assert d.sources["nvlink_gbps"].strip() and d.link_bytes_per_s == d.nvlink_gbps * 1e9 / 2
    h100 = load(["model=wan2.1-t2v-1.3b", "device=h100-sxm"], "report").device
    assert h100 is not None and (h100.nvlink_gbps, h100.link_bytes_per_s) == (900, 450e9)


def test_an_nvlink_bridge_joins_two_boards_and_larger_groups_take_pcie() -> None:
    """H100 PCIe: the NVLink bridge (600 GB/s both ways) joins two boards; four talk over PCIe Gen5
    (128 GB/s both ways): 300e9 and 64e9 bytes/s one way. An SXM node's NVSwitch joins all."""
    from ditmeter.config import load

    pcie = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-pcie"], "report").device
    sxm = load(["model=wan2.1-t2v-1.3b", "workload=w001-tiny", "device=h100-sxm"], "report").device
    assert pcie is not None and sxm is not None
    assert (pcie.link_for(2), pcie.link_for(4)) == (300e9, 64e9)
    assert sxm.link_for(8) == 450e9
