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

from ditmeter.analytic.kernels import SM_COUNT
from ditmeter.errors import ConfigError
from ditmeter.validate import FieldError, parse, positive_int, printable

#: Peaks a roofline can use; ``fp8`` only where the chip has FP8 tensor cores.
TENSOR_DTYPES = ("bf16", "fp16", "fp8")
#: Peaks no workload runs in: Blackwell's FP4, which only ``gemm_dtype=nvfp4``'s GEMMs compute at
#: (``analytic/gemm_formats.py``); kept apart so a datasheet's headline is not mistaken for FP8's.
REFERENCE_DTYPES = ("fp4",)
#: Integer tensor peaks in TOPS (10¹² integer ops/s, a multiply-add counted as two, as FLOPs are):
#: no workload runs in int8; ``gemm_dtype=int8``'s GEMMs and SageAttention's INT8 QKᵀ are timed
#: against it through :meth:`DeviceSpec.tensor_flop_per_s`.
INTEGER_DTYPES = ("int8",)
NUMBER_KEYS = (
    "bf16_tflops",
    "fp16_tflops",
    "fp32_tflops",
    "memory_bandwidth_gbps",
    "tf32_tflops",
    "memory_gb",
    "memory_mib",
)
OPTIONAL_NUMBER_KEYS = (
    "nvlink_gbps",
    "pcie_gbps",
    "fp8_tflops",
    "bf16_sparse_tflops",
    "fp16_sparse_tflops",
    "fp8_sparse_tflops",
    "tf32_sparse_tflops",
    "fp4_tflops",
    "fp4_sparse_tflops",
    "int8_tops",
    "int8_sparse_tops",
)
#: (dense, datasheet sparse) field pairs whose dense figure must be half the sparse one.
SPARSE_PAIRS = (
    *((f"{d}_tflops", f"{d}_sparse_tflops") for d in (*TENSOR_DTYPES, "tf32", *REFERENCE_DTYPES)),
    *((f"{d}_tops", f"{d}_sparse_tops") for d in INTEGER_DTYPES),
)

#: How far a dense peak may sit from half the sparse figure: datasheets round
#: (the L40S sheet prints 362.05 dense beside 733 sparse, 1.2% apart).
SPARSE_RATIO_SLACK = 0.02


#: The range of a peak (TFLOP/s), a bandwidth (GB/s) or a capacity (GB, MiB): from 10⁻³ to 10⁹, far
#: beyond any board either way; a value outside it (1e-300, 1e308) would print hundreds of digits or
#: overflow, not describe a GPU.
SPEC_RANGE = (1e-3, 1e9)


def _positive(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    low, high = SPEC_RANGE
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise FieldError(attribute.name, f"must be a number from {low:g} to {high:g}, got {value!r}")


def _float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: The smallest ``efficiency``: a kernel at 0.1% of every peak is a mistake, not a GPU.
MIN_EFFICIENCY = 1e-3


def _efficiency(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not MIN_EFFICIENCY <= value <= 1:
        raise FieldError(attribute.name, f"must be in [{MIN_EFFICIENCY:g}, 1], got {value!r}")


def _name(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise FieldError(attribute.name, f"must be a name, got {value!r}")


def _sources(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _number(**kw: Any) -> Any:
    return attrs.field(converter=_float, validator=_positive, **kw)


def _optional(**kw: Any) -> Any:
    return attrs.field(default=None, converter=_float, validator=attrs.validators.optional(_positive), **kw)


@attrs.frozen(kw_only=True)
class DeviceSpec:
    """One GPU: dense tensor peaks, the non-tensor FP32 peak, memory bandwidth and capacity.

    Units are in the names: TFLOP/s (10¹² FLOP/s), GB/s and GB (10⁹ bytes, as
    datasheets print them), MiB (2²⁰ bytes, as the driver reports capacity: an
    "80 GB" H100 shows 81,559 MiB). ``efficiency`` (0 < e ≤ 1, default 1.0 = the
    physical lower bound on time) scales every peak and the bandwidth alike.
    """

    name: str = attrs.field(converter=str, validator=printable)
    display_name: str = attrs.field(converter=str, validator=printable)
    bf16_tflops: float = _number()
    fp16_tflops: float = _number()
    fp8_tflops: float | None = _optional()
    fp32_tflops: float = _number()  # non-tensor (CUDA-core) FP32
    tf32_tflops: float = _number()  # TF32 tensor cores: fp32 convolutions under PyTorch's defaults
    memory_bandwidth_gbps: float = _number()
    memory_gb: float = _number()  # the datasheet's figure (10⁹ bytes), for people
    memory_mib: float = _number()  # what the driver reports (nvidia-smi): the capacity fits use
    efficiency: float = attrs.field(default=1.0, converter=_float, validator=_efficiency)
    sources: dict[str, str] = attrs.field(factory=dict, converter=_sources)
    #: Interconnect per GPU, bidirectional GB/s as datasheets print them; None: none (no NVLink).
    nvlink_gbps: float | None = _optional()
    pcie_gbps: float | None = _optional()
    #: GPUs one NVLink domain joins (an NVLink bridge: 2); None: every GPU of the node (NVSwitch).
    nvlink_gpus: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    #: The kernel-efficiency table (``configs/kernels/<name>.yaml``) of the device's architecture.
    kernels: str | None = attrs.field(default=None)
    #: The achieved-bandwidth table of its interconnect (``configs/fabric/<name>.yaml``); None: the
    #: collectives run at the datasheet link (:meth:`link_for`).
    fabric: str | None = attrs.field(default=None, validator=_name)
    #: The network between its nodes (``configs/network/<name>.yaml``): one NIC per GPU; None: plans
    #: stay within one node (:func:`ditmeter.analytic.parallel.check_domain`).
    network: str | None = attrs.field(default=None, validator=_name)
    #: NICs to that network per node; None: one per GPU (DGX/HGX). Fewer are shared: each GPU's
    #: crossing traffic gets nics / node GPUs of a NIC (``docs/parallel.md``, "Beyond one node").
    nics_per_node: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    #: streaming multiprocessors: the waves a fused attention call's thread blocks take
    #: (:meth:`~ditmeter.analytic.kernels.KernelTable.attention_fraction`); None: no wave term
    sms: int | None = attrs.field(default=None, validator=attrs.validators.optional(SM_COUNT))
    bf16_sparse_tflops: float | None = _optional()
    fp16_sparse_tflops: float | None = _optional()
    fp8_sparse_tflops: float | None = _optional()
    tf32_sparse_tflops: float | None = _optional()
    #: FP4 tensor peaks (Blackwell), dense and the datasheet's sparse; for reference (REFERENCE_DTYPES)
    fp4_tflops: float | None = _optional()
    fp4_sparse_tflops: float | None = _optional()
    #: INT8 tensor peaks in TOPS, dense and the datasheet's sparse (INTEGER_DTYPES); None: not published
    int8_tops: float | None = _optional()
    int8_sparse_tops: float | None = _optional()
    #: the share of the datasheet's boost clock the board holds in sustained compute work under its
    #: power limit, where its kernel table's fractions were measured on another board: scales the
    #: compute peaks, not the bandwidth (None: the fractions already hold the clock)
    sustained_clock: float | None = attrs.field(
        default=None, converter=_float, validator=attrs.validators.optional(_efficiency)
    )

    def __attrs_post_init__(self) -> None:
        keys = (*NUMBER_KEYS, *OPTIONAL_NUMBER_KEYS, "sustained_clock", "sms")
        given = [k for k in keys if getattr(self, k) is not None]
        missing = [k for k in given if not self.sources.get(k, "").strip()]
        if missing:
            raise FieldError(f"sources.{missing[0]}", "every number needs a source (datasheet)")
        for dense_key, sparse_key in SPARSE_PAIRS:
            dense, sparse = getattr(self, dense_key), getattr(self, sparse_key)
            if dense is not None and sparse is not None and abs(2 * dense / sparse - 1) > SPARSE_RATIO_SLACK:
                raise FieldError(
                    dense_key, f"{dense:g} is not half the datasheet's sparse {sparse:g}: give the dense peak"
                )

    def tensor_flop_per_s(self, dtype: str) -> float:
        """Achievable tensor-core FLOP/s for a workload dtype (fp32: the CUDA-core peak; ``tf32``: the
        TF32 tensor peak, fp32 matmuls under ``time.fp32_matmul=tf32``); ``int8``: the integer tensor
        peak in ops/s (``int8_tops`` × 10¹²), scaled by efficiency and clock alike."""
        tflops = {
            "bf16": self.bf16_tflops,
            "fp16": self.fp16_tflops,
            "tf32": self.tf32_tflops,
            "fp8": self.fp8_tflops,
            "fp4": self.fp4_tflops,
            "int8": self.int8_tops,
        }.get(dtype, self.fp32_tflops)
        if tflops is None:
            raise ConfigError("workload.dtype", f"{self.name} has no {dtype} tensor cores")
        return tflops * 1e12 * self.efficiency * self.clock

    @property
    def clock(self) -> float:
        """The sustained share of the boost clock the compute peaks are scaled by (1: none given)."""
        return self.sustained_clock or 1.0

    def conv_flop_per_s(self, dtype: str) -> float:
        """Achievable FLOP/s of a convolution in ``dtype``: fp32 convolutions run on the TF32 tensor
        cores, since PyTorch's default ``torch.backends.cudnn.allow_tf32`` is True (fp32 matmuls do
        not: ``torch.backends.cuda.matmul.allow_tf32`` is False), so they get the TF32 peak."""
        if dtype == "fp32":
            return self.tf32_tflops * 1e12 * self.efficiency * self.clock
        return self.tensor_flop_per_s(dtype)

    @property
    def cuda_flop_per_s(self) -> float:
        return self.fp32_tflops * 1e12 * self.efficiency * self.clock

    @property
    def bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbps * 1e9 * self.efficiency

    @property
    def link_bytes_per_s(self) -> float | None:
        """One direction of the GPU's fastest link to its peers (NVLink, else PCIe), bytes/s: half the
        bidirectional figure the datasheet prints. None when the catalog has neither."""
        gbps = self.nvlink_gbps or self.pcie_gbps
        return gbps * 1e9 / 2 if gbps else None

    def over_nvlink(self, ranks: int) -> bool:
        """A group of ``ranks`` GPUs talks over NVLink: the board has it and one domain holds them."""
        return bool(self.nvlink_gbps) and (self.nvlink_gpus is None or ranks <= self.nvlink_gpus)

    def link_for(self, ranks: int) -> float | None:
        """One direction of the link a group of ``ranks`` GPUs talks over, bytes/s: NVLink when its
        domain holds the group (:meth:`over_nvlink`), else PCIe."""
        gbps = self.nvlink_gbps if self.over_nvlink(ranks) else self.pcie_gbps
        return gbps * 1e9 / 2 if gbps else None

    @property
    def memory_bytes(self) -> int:
        """The capacity the driver reports, in bytes."""
        return int(self.memory_mib * 2**20)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DeviceSpec:
        """Validate a ``configs/device/*.yaml`` entry; errors name the field (``device.bf16_tflops``)."""
        return parse(cls, raw, "device")
