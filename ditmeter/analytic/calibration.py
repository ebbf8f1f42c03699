"""Calibration files: a machine's measured kernel fractions, as ``ditmeter calibrate`` writes them.

A calibration file is YAML with four sections:

* ``machine``: what was measured (host, processor, torch, device kind and name, when);
* ``device``: a device record (:class:`~ditmeter.analytic.device.DeviceSpec`) whose
  peaks are the catalog's for a named GPU, or, on a CPU, the best rates measured
  (every number's source says which);
* ``kernels``: a kernel table (:class:`~ditmeter.analytic.kernels.KernelTable`)
  of fractions of those peaks, one curve point per measured shape;
* ``points``: every measurement (kernel class, shape, dtype, seconds, FLOPs,
  bytes, the achieved rate), for people and for re-fitting.

``calibration=PATH`` replaces ``device=`` and its kernel table with these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.kernels import KernelTable
from ditmeter.errors import ConfigError
from ditmeter.validate import parse

#: The ``kind`` a calibration file declares (refuses other YAML passed by mistake).
KIND = "ditmeter-calibration"
VERSION = 1


def read_calibration(path: Path) -> tuple[DeviceSpec, KernelTable]:
    """The device and kernel table of a calibration file; errors name ``calibration`` or the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise ConfigError("calibration", f"cannot read {path} ({reason})") from None
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise ConfigError(
            "calibration",
            f"{path} is not a calibration file (kind: {KIND}); write one with `ditmeter calibrate`",
        )
    if raw.get("version") != VERSION:
        raise ConfigError("calibration.version", f"{raw.get('version')!r} not allowed; allowed: {VERSION}")
    device = parse(DeviceSpec, raw.get("device"), "calibration.device")
    return device, KernelTable.from_mapping(raw.get("kernels"), "calibration.kernels")


def calibration_mapping(
    machine: dict[str, Any], device: DeviceSpec, kernels: KernelTable, points: list[dict[str, Any]]
) -> dict[str, Any]:
    """The file's content (``read_calibration`` reads it back)."""
    import attrs

    record = {k: v for k, v in attrs.asdict(device).items() if v is not None}
    return {
        "kind": KIND,
        "version": VERSION,
        "machine": machine,
        "device": record,
        "kernels": kernels.as_mapping(),
        "points": points,
    }


def _curve_points(rows: list[dict[str, Any]], peak_of: Any) -> tuple[list[float], list[float]]:
    """Points sorted by x; points at the same x averaged; fractions of the peak, at most 1."""
    by_x: dict[float, list[float]] = {}
    for r in rows:
        by_x.setdefault(float(r["x"]), []).append(min(1.0, r["flops"] / r["seconds"] / peak_of(r)))
    xs = sorted(by_x)
    return xs, [round(sum(by_x[x]) / len(by_x[x]), 4) for x in xs]


def fit_kernels(
    points: list[dict[str, Any]], device: DeviceSpec, *, overlapped: bool, where: str
) -> KernelTable:
    """A kernel table from measured points (``Point.as_dict()`` records) as fractions of ``device``'s
    peaks; ``where`` names the machine in every source."""
    source = f"measured by ditmeter calibrate on {where}"

    def curves(kind: str, peak: Any) -> dict[str, dict[str, Any]]:
        out = {}
        for dtype in sorted({p["dtype"] for p in points if p["kind"] == kind}):
            rows = [p for p in points if p["kind"] == kind and p["dtype"] == dtype]
            xs, fs = _curve_points(rows, lambda r, d=dtype: peak(d))
            out[dtype] = {"flops": xs, "fraction": fs, "source": f"{source}: {len(rows)} shapes"}
        return out

    attention: dict[str, dict[int, dict[str, Any]]] = {"sdpa_flash": {}}
    for head_dim in sorted({p["head_dim"] for p in points if p["kind"] == "attention"}):
        rows = [p for p in points if p["kind"] == "attention" and p["head_dim"] == head_dim]
        xs, fs = _curve_points(rows, lambda r: device.tensor_flop_per_s(r["dtype"]))
        attention["sdpa_flash"][head_dim] = {"tokens": xs, "fraction": fs, "source": f"{source}: SDPA"}
    copies = [p for p in points if p["kind"] in ("copy", "elementwise")]
    elementwise = [p["bytes"] / p["seconds"] for p in copies if p["kind"] == "elementwise"]
    fraction = sorted(elementwise)[len(elementwise) // 2] / device.bytes_per_s if elementwise else 1.0
    host = [p["seconds"] for p in points if p["kind"] == "host"]
    raw = {
        "name": f"calibrated:{device.name}",
        "attention": {k: v for k, v in attention.items() if v},
        "gemm": curves("gemm", device.tensor_flop_per_s),
        "conv": curves("conv", device.conv_flop_per_s),
        "elementwise": {
            "bandwidth_fraction": round(min(1.0, fraction), 4),
            "source": f"{source}: the median of the model's element-wise kinds over the best copy",
            "rules": {
                p["shape"]: {
                    "fraction": [
                        round(min(1.0, max(1e-6, p["bytes"] / p["seconds"] / device.bytes_per_s)), 6)
                    ],
                    "source": f"{source}: the model's eager {p['shape']}, fused-ideal bytes over its time",
                }
                for p in points
                if p["kind"] == "elementwise_rule"
            },
        },
        "host": {
            "per_kernel_s": host[0] if host else 0.0,
            "overlapped": overlapped,
            "source": f"{source}: one op on a one-element tensor",
        },
    }
    return KernelTable.from_mapping(raw, "calibration.kernels")


def measured_device(points: list[dict[str, Any]], machine: dict[str, Any]) -> DeviceSpec:
    """A CPU as a device record: each peak the best rate measured in its dtype (fp16 and TF32,
    where not measured, take bf16's and fp32's), the bandwidth the best copy or element-wise rate,
    the capacity the machine's RAM."""
    where = f"measured by ditmeter calibrate on {machine.get('host', 'this machine')}"

    def best(kind: tuple[str, ...], dtype: str | None, rate: str) -> float | None:
        rates = [
            p[rate] / p["seconds"]
            for p in points
            if p["kind"] in kind and (dtype is None or p["dtype"] == dtype) and p[rate] > 0
        ]
        return max(rates) if rates else None

    gemm = ("gemm", "attention", "conv")
    bf16 = best(gemm, "bf16", "flops") or best(gemm, None, "flops") or 1e9
    fp32 = best(gemm, "fp32", "flops") or bf16
    fp16 = best(gemm, "fp16", "flops") or bf16
    bandwidth = best(("copy", "elementwise"), None, "bytes") or 1e9
    memory = int(machine.get("memory_bytes") or 2**30)
    raw = {
        "name": str(machine.get("name", "cpu")),
        "display_name": str(machine.get("display_name", "CPU")),
        "bf16_tflops": bf16 / 1e12,
        "fp16_tflops": fp16 / 1e12,
        "fp32_tflops": fp32 / 1e12,
        "tf32_tflops": fp32 / 1e12,
        "memory_bandwidth_gbps": bandwidth / 1e9,
        "memory_gb": memory / 1e9,
        "memory_mib": memory / 2**20,
        "sources": {
            "bf16_tflops": f"{where}: the best bf16 GEMM, attention or conv rate",
            "fp16_tflops": f"{where}: the best fp16 rate (bf16's where fp16 was not measured)",
            "fp32_tflops": f"{where}: the best fp32 rate (bf16's where fp32 was not measured)",
            "tf32_tflops": f"{where}: a CPU has no TF32; the fp32 figure",
            "memory_bandwidth_gbps": f"{where}: the best copy or element-wise rate",
            "memory_gb": f"{where}: MemTotal",
            "memory_mib": f"{where}: MemTotal",
        },
    }
    return parse(DeviceSpec, raw, "calibration.device")
