"""Weights moved between host and GPU during a video (``offload.model``), and their time.

A pipeline that offloads moves whole components with ``module.to("cuda")`` / ``module.cpu()``:
every parameter is copied on its own from or to ordinary (pageable) host memory, which the
driver stages through a pinned buffer. :meth:`Timeline.transfers` lists the moves one video
makes from the memory timeline (a component that joins the GPU between two stages is copied
host-to-device, one that leaves device-to-host); this module times them at the pageable copy
bandwidth of the board's PCIe link.

Model loading (disk to host, and the first placement of what stays on the GPU) is not part of a
video's time: a process that makes one video pays it once, before the first step, and the
published measurements time generation.

NB: a copy's time is bytes / bandwidth; the per-tensor launch and ``empty_cache()`` are not
counted (tens of milliseconds against seconds of copying at 14B).
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.device import DeviceSpec

#: Pageable host↔device copy bandwidth (GB/s) by the board's PCIe link (its datasheet's
#: bidirectional figure: Gen4 x16 = 64, Gen5 x16 = 128): (host-to-device, device-to-host, source).
PAGEABLE_COPY_GBPS: dict[int, tuple[float, float, str]] = {
    64: (
        12.88,
        12.34,
        "PCIe Gen4 x16, pageable memory: NVlabs/cuda-oxide pull request, cudaMemcpy on an RTX 4090: "
        "HtoD 12.88 GB/s at 64 MiB, DtoH 12.34 GB/s at 16 MiB (pinned: 23.85 and 26.55)",
    ),
    128: (
        30.4,
        26.6,
        "PCIe Gen5 x16: pinned 56.30 GB/s HtoD, 57.35 DtoH (nvbandwidth, 8x RTX 5090, tinygrad "
        "open-gpu-kernel-modules issue; 56.68-57.07 on H100, NVIDIA/nvbandwidth issue) times the "
        "pageable/pinned ratio measured on Gen4 (12.88/23.85, 12.34/26.55): no pageable Gen5 "
        "measurement was found (assumption)",
    ),
}


@attrs.frozen
class Transfer:
    """One component moved between host and GPU during a video."""

    component: str
    direction: str  # "h2d" or "d2h"
    bytes: int
    before: str  # the stage it happens before ("" : at the end of the video)
    why: str  # what in the pipeline's code moves it


def link_gbps(device: DeviceSpec) -> tuple[float, float, str]:
    """The pageable copy bandwidths (host-to-device, device-to-host, GB/s) of ``device``'s link."""
    pcie = int(device.pcie_gbps or 64)
    return PAGEABLE_COPY_GBPS.get(pcie, PAGEABLE_COPY_GBPS[128 if pcie > 64 else 64])


def transfer_s(transfer: Transfer, device: DeviceSpec) -> float:
    """Seconds of one move on ``device``'s link."""
    h2d, d2h, _ = link_gbps(device)
    return transfer.bytes / ((h2d if transfer.direction == "h2d" else d2h) * 1e9)
