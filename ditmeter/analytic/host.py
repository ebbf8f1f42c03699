"""The host CPU, where ``offload.t5_cpu=true`` runs the text encoder (``host=``).

A host is timed by the same arithmetic as a GPU (:mod:`ditmeter.analytic.timing`): it becomes a
:class:`DeviceSpec` whose "tensor peaks" are the host's *achieved* GEMM throughput (cores × the
measured throughput of one core of its microarchitecture at the encoder's shapes), with a flat
kernel table (fraction 1.0: the achieved rate is already in the peak) and its per-op CPU cost
added to every op (a CPU runs its ops one after another: nothing overlaps them).

``host=auto`` takes ``ryzen-7950x`` for the consumer boards (``rtx*``) and ``epyc-9654`` for the
rest; ``host=<name>`` a catalog entry (``configs/host/``); ``host=<calibration.yaml>`` the machine
``ditmeter calibrate device_kind=cpu`` measured (its GEMM curves and per-op cost).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.kernels import KernelTable
from ditmeter.errors import ConfigError

_KEYS = (
    "name", "display_name", "cores", "fp32_gflops_per_core", "bf16_gflops_per_core",
    "memory_bandwidth_gbps", "memory_gb", "per_op_s", "sources",
)  # fmt: skip
_NUMBERS = (
    "cores",
    "fp32_gflops_per_core",
    "bf16_gflops_per_core",
    "memory_bandwidth_gbps",
    "memory_gb",
    "per_op_s",
)


@attrs.frozen
class HostPlan:
    """The host as a device and the kernel table it is timed with."""

    device: DeviceSpec
    kernels: KernelTable


def _flat(source: str) -> dict[str, Any]:
    return {"flops": [1.0], "fraction": [1.0], "source": source}


def host_from_mapping(raw: Mapping[str, Any], where: str = "host") -> HostPlan:
    """A host catalog entry → the device and kernel table that time it; errors name ``host.<field>``."""
    unknown = [str(k) for k in raw if k not in _KEYS]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"not a known key; allowed: {', '.join(_KEYS)}")
    sources = raw.get("sources") or {}
    for key in _NUMBERS:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{where}.{key}", f"must be a positive number, got {value!r}")
        if not str(sources.get(key, "")).strip():
            raise ConfigError(f"{where}.sources.{key}", "every number needs a source")
    cores = float(raw["cores"])
    fp32, bf16 = cores * raw["fp32_gflops_per_core"] / 1e3, cores * raw["bf16_gflops_per_core"] / 1e3
    gb, bw = float(raw["memory_gb"]), float(raw["memory_bandwidth_gbps"])
    src = {k: str(v) for k, v in sources.items()}
    device = DeviceSpec(
        name=str(raw["name"]),
        display_name=str(raw.get("display_name", raw["name"])),
        bf16_tflops=bf16,
        fp16_tflops=fp32,  # no fp16 GEMM units on these cores: PyTorch computes in fp32
        fp32_tflops=fp32,
        tf32_tflops=fp32,
        memory_bandwidth_gbps=bw,
        memory_gb=gb,
        memory_mib=gb * 1e9 / 2**20,
        sources={
            "bf16_tflops": src["bf16_gflops_per_core"] + " x cores",
            "fp16_tflops": "no fp16 GEMM units: the fp32 rate",
            "fp32_tflops": src["fp32_gflops_per_core"] + " x cores",
            "tf32_tflops": "no TF32 on a CPU: the fp32 rate",
            "memory_bandwidth_gbps": src["memory_bandwidth_gbps"],
            "memory_gb": src["memory_gb"],
            "memory_mib": src["memory_gb"],
        },
    )
    achieved = "the host's achieved rate is its peak here (measured per core x cores)"
    table = KernelTable.from_mapping(
        {
            "name": f"host:{raw['name']}",
            "attention": {},
            "gemm": {"bf16": _flat(achieved), "fp32": _flat(achieved), "fp16": _flat(achieved)},
            "conv": {"bf16": _flat(achieved), "fp32": _flat(achieved)},
            "elementwise": {"bandwidth_fraction": 1.0, "source": src["memory_bandwidth_gbps"]},
            "host": {"per_kernel_s": float(raw["per_op_s"]), "overlapped": False, "source": src["per_op_s"]},
        },
        f"{where}.kernels",
    )
    return HostPlan(device, table)


def default_host(device: DeviceSpec | None) -> str:
    """``host=auto``: a desktop CPU for a consumer board (``rtx*``), a server CPU otherwise."""
    return "ryzen-7950x" if device is not None and device.name.startswith("rtx") else "epyc-9654"
