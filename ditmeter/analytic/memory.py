"""Memory of a component while it runs: weights by dtype and the peak activation of one run.

A model family estimates the activation sets of its forward (what is live
in each stage of a block, see e.g. ``ditmeter.models.wan21.memory``); the
weights come from the cost tree itself (:func:`weights_by_dtype`), whose
parameters equal the real modules' (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ditmeter.analytic.cost import FP32_BYTES
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.transfer import Transfer
from ditmeter.analytic.tree import ModuleRow, Node, walk
from ditmeter.validate import boolean


@attrs.frozen
class Footprint:
    """Bytes of one component (the DiT) resident on the device while it runs."""

    weights_by_dtype: dict[str, int]
    persistent_bytes: int
    stage_bytes: dict[str, int]  # transient set of each block stage

    @property
    def weight_bytes(self) -> int:
        return sum(self.weights_by_dtype.values())

    @property
    def peak_activation_bytes(self) -> int:
        return self.persistent_bytes + max(self.stage_bytes.values())

    @property
    def peak_stage(self) -> str:
        return max(self.stage_bytes, key=lambda k: self.stage_bytes[k])

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.peak_activation_bytes

    def fits(self, device: DeviceSpec) -> bool:
        return self.total_bytes <= device.memory_bytes


def weights_by_dtype(
    tree: Node, dtype: str, quantized: Callable[[ModuleRow], tuple[str, int, int] | None] | None = None
) -> dict[str, int]:
    """Weight bytes of ``tree`` by dtype name: 4-byte weights are ``fp32``, the rest ``dtype``
    (the run's 16-bit dtype); of a leaf ``quantized`` names (its format, the bytes of one copy's
    quantized weight, the parameters they hold), those bytes under the format's name, its other
    parameters (a bias) at their own width."""
    out: dict[str, int] = {}
    for row in walk(tree, expand=False):
        if row.kind == "leaf" and row.cost.params:
            width = row.cost.weight_bytes // row.cost.params
            name = dtype if width != FP32_BYTES else "fp32"
            q = quantized(row) if quantized is not None else None
            if q is None:
                out[name] = out.get(name, 0) + row.total.weight_bytes
                continue
            fmt, q_bytes, q_params = q
            out[fmt] = out.get(fmt, 0) + row.copies * q_bytes
            if row.cost.params > q_params:
                out[name] = out.get(name, 0) + row.copies * (row.cost.params - q_params) * width
    return out


@attrs.frozen
class Offload:
    """``offload.*``: where components sit during one video on one GPU (``model`` None: the
    pipeline's default)."""

    model: bool | None = attrs.field(default=None, validator=attrs.validators.optional(boolean))
    t5_cpu: bool = attrs.field(default=False, validator=boolean)
    #: official Wan2.2 ``--convert_model_dtype``: the DiT's weights cast to bf16 (families whose
    #: code has no such flag refuse it).
    convert_model_dtype: bool = attrs.field(default=False, validator=boolean)


#: The official default placement: offload as the pipeline does by default.
DEFAULT_OFFLOAD = Offload()

#: What a timeline's live bytes leave out, added as one documented constant per GPU.
CUDA_CONTEXT_BYTES = 512 * 2**20
CUDA_CONTEXT_SOURCE = (
    "estimate of the CUDA context and the kernels PyTorch loads (lazy module loading, the default "
    "since CUDA 11.7 / PyTorch 1.13; NVIDIA's CUDA C++ Programming Guide, 'Lazy Loading'); a fresh "
    "PyTorch process typically shows 0.3-0.6 GiB in nvidia-smi before any tensor"
)
#: Said wherever the peak is.
TIMELINE_SCOPE = (
    "Counted: weights resident on the GPU at each stage and the peak live activation tensors of "
    "one run of the stage (every stage's rule checked by `trace` against the real module's tensor "
    "lifetimes, flash attention), plus a CUDA-context constant. Not counted: the caching "
    "allocator's reserved-but-free blocks and fragmentation, cuBLAS/cuDNN workspaces, the small "
    "tensors the pipeline carries between stages (latents, embeddings)."
)


@attrs.frozen
class Phase:
    """One stage of the video on the GPU: the weights resident and the stage's live activations."""

    stage: str
    resident: dict[str, int]  # component → weight bytes on the GPU during the stage
    activation_bytes: int | None  # None: not modeled yet (counted as 0)

    @property
    def weight_bytes(self) -> int:
        return sum(self.resident.values())

    @property
    def live_bytes(self) -> int:
        return self.weight_bytes + (self.activation_bytes or 0)


@attrs.frozen
class Timeline:
    """The memory of one video on one GPU, stage by stage, and its peak."""

    phases: tuple[Phase, ...]
    components: dict[str, dict[str, int]]  # every component's weight bytes by dtype
    offload_model: bool
    t5_cpu: bool
    overhead_bytes: int = CUDA_CONTEXT_BYTES
    #: the components on the GPU when the video starts (placed when the pipeline was built)
    initial: tuple[str, ...] = ()
    #: times the running DiT expert is swapped for the other during the steps (Wan2.2 offloading
    #: one expert at a time: out to the host, the other in)
    expert_swaps: int = 0

    def transfers(self) -> tuple[Transfer, ...]:
        """Every component the video moves between host and GPU, in order (``analytic/transfer.py``)."""
        out: list[Transfer] = []
        on = set(self.initial)
        size = {c: sum(b.values()) for c, b in self.components.items()}
        for phase in self.phases:
            now = set(phase.resident)
            out += [Transfer(c, "d2h", size[c], phase.stage, "moved off before it") for c in sorted(on - now)]
            out += [Transfer(c, "h2d", size[c], phase.stage, "moved on for it") for c in sorted(now - on)]
            if phase.stage == "dit":
                for _ in range(self.expert_swaps):
                    out += [
                        Transfer(
                            "dit", "d2h", size["dit"], "dit", "the high-noise expert off at the boundary"
                        ),
                        Transfer("dit", "h2d", size["dit"], "dit", "the low-noise expert on at the boundary"),
                    ]
            on = now
        return tuple(out)

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=lambda p: p.live_bytes)

    @property
    def peak_live_bytes(self) -> int:
        return self.peak_phase.live_bytes

    @property
    def peak_per_gpu_bytes(self) -> int:
        return self.peak_live_bytes + self.overhead_bytes

    def fits(self, device: DeviceSpec) -> bool:
        return self.peak_per_gpu_bytes <= device.memory_bytes
