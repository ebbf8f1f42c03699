"""Typed GPU records for the roofline: dense peaks, bandwidth, capacity, a source for each.

Entries live in ``configs/device/`` and are passed in explicitly
(``device=h100-sxm``); nothing here looks at the local GPU.

Datasheets quote tensor throughput *with 2:4 structured sparsity*, twice the
dense figure a dense matmul can reach. Each entry records both the dense peak
(``bf16_tflops``) and the datasheet's sparse figure (``bf16_sparse_tflops``)
where one is published, and :meth:`DeviceSpec.from_mapping` refuses an entry
whose dense peak is not half its sparse one: the classic mistake of copying
the headline number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ditmeter.errors import ConfigError

#: Peaks a roofline can use; ``fp8`` only where the chip has FP8 tensor cores.
TENSOR_DTYPES = ("bf16", "fp16", "fp8")
NUMBER_KEYS = (
    "bf16_tflops",
    "fp16_tflops",
    "fp32_tflops",
    "memory_bandwidth_gbps",
    "memory_gb",
)
OPTIONAL_NUMBER_KEYS = ("fp8_tflops", "bf16_sparse_tflops", "fp16_sparse_tflops", "fp8_sparse_tflops")

#: How far a dense peak may sit from half the sparse figure: datasheets round
#: (the L40S sheet prints 362.05 dense beside 733 sparse, 1.2% apart).
SPARSE_RATIO_SLACK = 0.02


def _number(key: str, value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"device.{key}", f"must be a positive number, got {value!r}")
    return float(value)


def _maybe(key: str, value: Any) -> float | None:
    return None if value is None else _number(key, value)


@attrs.frozen
class DeviceSpec:
    """One GPU: dense tensor peaks, the non-tensor FP32 peak, memory bandwidth and capacity.

    Units are in the names: TFLOP/s (10¹² FLOP/s), GB/s and GB (10⁹ bytes, as
    datasheets print them). ``efficiency`` (0 < e ≤ 1, default 1.0 = the
    physical lower bound on time) scales every peak and the bandwidth alike.
    """

    name: str
    display_name: str
    bf16_tflops: float
    fp16_tflops: float
    fp8_tflops: float | None
    fp32_tflops: float  # non-tensor (CUDA-core) FP32
    memory_bandwidth_gbps: float
    memory_gb: float
    efficiency: float
    sources: dict[str, str]
    bf16_sparse_tflops: float | None = None
    fp16_sparse_tflops: float | None = None
    fp8_sparse_tflops: float | None = None

    def tensor_flop_per_s(self, dtype: str) -> float:
        """Achievable tensor-core FLOP/s for a workload dtype (fp32: the CUDA-core peak)."""
        tflops = {"bf16": self.bf16_tflops, "fp16": self.fp16_tflops, "fp8": self.fp8_tflops}.get(
            dtype, self.fp32_tflops
        )
        if tflops is None:
            raise ConfigError("workload.dtype", f"{self.name} has no {dtype} tensor cores")
        return tflops * 1e12 * self.efficiency

    @property
    def cuda_flop_per_s(self) -> float:
        return self.fp32_tflops * 1e12 * self.efficiency

    @property
    def bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbps * 1e9 * self.efficiency

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * 1e9)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DeviceSpec:
        """Validate a ``configs/device/*.yaml`` entry; errors name the field."""
        for key in ("name", "display_name", *NUMBER_KEYS):
            if raw.get(key) is None:
                raise ConfigError(f"device.{key}", "missing (required key)")
        numbers: dict[str, float] = {k: _number(k, raw[k]) for k in NUMBER_KEYS}
        optional = {k: _maybe(k, raw.get(k)) for k in OPTIONAL_NUMBER_KEYS}
        eff = raw.get("efficiency", 1.0)
        if isinstance(eff, bool) or not isinstance(eff, int | float) or not 0 < eff <= 1:
            raise ConfigError("device.efficiency", f"must be in (0, 1], got {eff!r}")
        sources = raw.get("sources") or {}
        given = [k for k in (*NUMBER_KEYS, *OPTIONAL_NUMBER_KEYS) if raw.get(k) is not None]
        missing = [k for k in given if not str(sources.get(k, "")).strip()]
        if missing:
            raise ConfigError(f"device.sources.{missing[0]}", "every number needs a source (datasheet)")
        peaks: dict[str, float | None] = {**numbers, **optional}
        for dtype in TENSOR_DTYPES:
            dense, sparse = peaks.get(f"{dtype}_tflops"), optional[f"{dtype}_sparse_tflops"]
            if dense is not None and sparse is not None and abs(2 * dense / sparse - 1) > SPARSE_RATIO_SLACK:
                raise ConfigError(
                    f"device.{dtype}_tflops",
                    f"{dense:g} is not half the datasheet's sparse {sparse:g}: give the dense peak",
                )
        return cls(
            name=str(raw["name"]),
            display_name=str(raw["display_name"]),
            efficiency=float(eff),
            sources={str(k): str(v) for k, v in sources.items()},
            bf16_tflops=numbers["bf16_tflops"],
            fp16_tflops=numbers["fp16_tflops"],
            fp32_tflops=numbers["fp32_tflops"],
            memory_bandwidth_gbps=numbers["memory_bandwidth_gbps"],
            memory_gb=numbers["memory_gb"],
            fp8_tflops=optional["fp8_tflops"],
            bf16_sparse_tflops=optional["bf16_sparse_tflops"],
            fp16_sparse_tflops=optional["fp16_sparse_tflops"],
            fp8_sparse_tflops=optional["fp8_sparse_tflops"],
        )
