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

import attrs

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.kernels import Curve, KernelTable
from ditmeter.errors import ConfigError
from ditmeter.files import load_yaml
from ditmeter.validate import parse

#: The ``kind`` a calibration file declares (refuses other YAML passed by mistake).
KIND = "ditmeter-calibration"
VERSION = 1
#: The sections a calibration file holds (``calibrate`` writes them all).
KEYS = ("kind", "version", "machine", "device", "kernels", "warnings", "points")


def read_calibration(path: Path) -> tuple[DeviceSpec, KernelTable]:
    """The device and kernel table of a calibration file; errors name ``calibration`` or the field."""
    raw = load_yaml(path, "calibration")
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise ConfigError(
            "calibration",
            f"{path} is not a calibration file (kind: {KIND}); write one with `ditmeter calibrate`",
        )
    if raw.get("version") != VERSION:
        raise ConfigError("calibration.version", f"{raw.get('version')!r} not allowed; allowed: {VERSION}")
    stray = sorted(str(k) for k in raw if k not in KEYS)
    if stray:
        raise ConfigError(
            f"calibration.{stray[0]}", f"not a key of a calibration file; keys: {', '.join(KEYS)}"
        )
    for key in ("device", "kernels"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(
                f"calibration.{key}", f"{path} has no {key} section; write one with `ditmeter calibrate`"
            )
    device = parse(DeviceSpec, raw.get("device"), "calibration.device")
    return device, KernelTable.from_mapping(raw.get("kernels"), "calibration.kernels")


#: The dtypes a stage's GEMMs and convolutions run in, and the measured dtypes that stand in for
#: each, nearest first (bf16 and fp16 share the tensor cores; fp32 keeps its own peak).
_NEAREST = {"bf16": ("fp16", "fp32"), "fp16": ("bf16", "fp32"), "fp32": ("bf16", "fp16")}


def serve_any_report(kernels: KernelTable, device_table: KernelTable | None, path: str) -> KernelTable:
    """A calibration's table made to serve a report of any stage: a GEMM or convolution dtype it
    did not measure takes the device's catalog table's curve (``device_table``: a GPU's), else the
    calibration's own curve of the nearest dtype measured (read at the missing dtype's peak);
    convolutions not measured at all take the GEMM curves, attention the device table's. Each
    stand-in is named in the table's ``notes``. Refuses (``calibration``, with advice) what nothing
    stands in for: no GEMM or no attention curve and no device table."""
    taken: list[str] = []

    def serve(mine: dict[str, Curve], kind: str, catalog: dict[str, Curve]) -> dict[str, Curve]:
        out = dict(mine)
        for dtype, nearest in _NEAREST.items():
            if dtype in mine or (dtype != "fp32" and nearest[0] in mine):
                continue  # measured (bf16 and fp16 read each other's curve)
            if dtype in catalog and device_table is not None:
                out[dtype], origin = catalog[dtype], device_table.name
            elif any(d in mine for d in nearest):
                origin = next(d for d in nearest if d in mine)
                out[dtype] = attrs.evolve(
                    mine[origin], source=f"{mine[origin].source} (stands in for {dtype})"
                )
            else:
                continue
            taken.append(f"{dtype} {kind} from {origin}")
        return out

    advice = (
        f"calibrate the stages you report (`ditmeter calibrate stages=[...]`), then pass calibration={path}"
    )
    if not kernels.gemm and device_table is None:
        raise ConfigError("calibration", f"{path} has no GEMM curve; {advice}")
    if not kernels.attention and device_table is None:
        raise ConfigError("calibration", f"{path} has no attention curve; {advice}")
    gemm = serve(kernels.gemm, "gemm", device_table.gemm if device_table is not None else {})
    if kernels.conv:
        conv = serve(kernels.conv, "conv", device_table.conv if device_table is not None else {})
    elif device_table is not None and device_table.conv:
        conv = dict(device_table.conv)
        taken.append(f"conv from {device_table.name}")
    else:
        conv = {d: attrs.evolve(c, source=f"{c.source} (stands in for conv)") for d, c in gemm.items()}
        taken.append("conv from gemm")
    attention = kernels.attention
    if not attention and device_table is not None:
        attention = device_table.attention
        taken.append(f"attention from {device_table.name}")
    notes = (f"not calibrated: {', '.join(taken)}",) if taken else ()
    return attrs.evolve(kernels, gemm=gemm, conv=conv, attention=attention, notes=notes)


#: A point this far above its device's peak measured no kernel (timing noise stays well below).
ABOVE_PEAK = 1.25
#: A plain copy slower than this is no memory system's (one DDR4 channel moves about 20 GB/s).
MIN_COPY_BYTES_PER_S = 1e9
#: Calls whose interquartile range exceeds this share of their median were timed on a busy machine.
MAX_SPREAD = 0.25


def implausible_points(points: list[dict[str, Any]], device: DeviceSpec) -> list[str]:
    """One line per point outside physical limits (above ``ABOVE_PEAK`` × its peak; a copy below
    ``MIN_COPY_BYTES_PER_S``), one for the medians spread more than ``MAX_SPREAD``, and advice."""
    flops_peak = {"gemm": device.tensor_flop_per_s, "attention": device.tensor_flop_per_s}
    flops_peak["conv"] = device.conv_flop_per_s
    out = []
    for p in points:
        name = f"{p['kind']} {p['dtype']} {p['shape']}"
        if p["kind"] in flops_peak:
            rate, peak = p["flops"] / p["seconds"], flops_peak[p["kind"]](p["dtype"])
            achieved = f"{rate / 1e12:.3g} TFLOP/s"
        elif p["kind"] in ("copy", "elementwise", "elementwise_rule"):
            rate, peak = p["bytes"] / p["seconds"], device.bytes_per_s
            achieved = f"{rate / 1e9:.3g} GB/s"
        else:
            continue
        if rate > ABOVE_PEAK * peak:
            out.append(f"{name}: {achieved} is {rate / peak:,.0%} of the peak, more than the device can do")
        if p["kind"] == "copy" and rate < MIN_COPY_BYTES_PER_S:
            out.append(
                f"{name}: {achieved}, slower than any memory system ({MIN_COPY_BYTES_PER_S / 1e9:g} GB/s)"
            )
    spread = [p for p in points if p.get("spread", 0.0) > MAX_SPREAD]
    if spread:
        worst = max(spread, key=lambda p: float(p["spread"]))
        out.append(
            f"{len(spread)} of {len(points)} medians spread more than {MAX_SPREAD:.0%} (interquartile range "
            f"over median; widest {worst['kind']} {worst['dtype']} {worst['shape']}: {worst['spread']:.0%})"
        )
    if out:
        out.append(
            "the machine was likely busy: calibrate again on an idle one (or a longer calibrate.min_run_time)"
        )
    return out


def calibration_mapping(
    machine: dict[str, Any],
    device: DeviceSpec,
    kernels: KernelTable,
    points: list[dict[str, Any]],
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The file's content (``read_calibration`` reads it back; ``warnings``: :func:`implausible_points`)."""
    record = {k: v for k, v in attrs.asdict(device).items() if v is not None}
    return {
        "kind": KIND,
        "version": VERSION,
        "machine": machine,
        "device": record,
        "kernels": kernels.as_mapping(),
        "warnings": warnings or [],
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
