"""Predicted time on a device: the roofline of each leaf, summed in execution order.

For one leaf on device ``D`` at workload dtype ``t``::

    compute_s = tensor_flops / D.tensor_peak(t) + cuda_flops / D.fp32_peak
    (a convolution in fp32 uses D.tf32_peak: cuDNN's TF32 is on by PyTorch's default,
    fp32 matmuls stay on the CUDA cores: ``allow_tf32`` is off for them)
    memory_s  = (bytes_read + bytes_written) / D.bandwidth
    predicted_s = max(compute_s, memory_s);  bound = the larger term

Every peak is scaled by the device's ``efficiency`` (1.0 = the physical lower
bound). Leaves run one after another, so a container's times are the sums of
its leaves' (not the roofline of its summed counts, which would let a
memory-bound norm hide under a compute-bound matmul). A container is
``compute``-bound when its compute-bound leaves take at least as long as its
memory-bound ones.

NB: no kernel-launch latency, no overlap between leaves, no tail effects; the
bytes are the fused ideal of the rules (the upper bound, unfused, comes from
the traced nodes).
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.tree import Node, rollup, walk


@attrs.frozen
class Roofline:
    """Times of one module for one forward, in seconds."""

    compute_s: float
    memory_s: float
    predicted_s: float
    compute_bound_s: float  # predicted time of the compute-bound leaves inside
    memory_bound_s: float

    @property
    def bound(self) -> str:
        return "compute" if self.compute_bound_s >= self.memory_bound_s else "memory"

    def __add__(self, other: Roofline) -> Roofline:
        return Roofline(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True)))

    def times(self, n: int) -> Roofline:
        return Roofline(*(n * a for a in attrs.astuple(self)))


ZERO = Roofline(0.0, 0.0, 0.0, 0.0, 0.0)


#: Rules whose tensor FLOPs are convolutions (cuDNN): fp32 ones run on TF32 tensor cores.
CONV_RULES = frozenset({"conv", "patch_conv3d"})


def leaf_roofline(cost: Cost, device: DeviceSpec, dtype: str, rule: str | None = None) -> Roofline:
    """The roofline of one leaf costed by ``rule`` (see the module docstring)."""
    peak = device.conv_flop_per_s(dtype) if rule in CONV_RULES else device.tensor_flop_per_s(dtype)
    compute = cost.tensor_flops / peak + cost.cuda_flops / device.cuda_flop_per_s
    memory = cost.moved_bytes / device.bytes_per_s
    predicted = max(compute, memory)
    if compute >= memory:
        return Roofline(compute, memory, predicted, predicted, 0.0)
    return Roofline(compute, memory, predicted, 0.0, predicted)


def module_rooflines(tree: Node, device: DeviceSpec, dtype: str, prefix: str = "") -> dict[str, Roofline]:
    """Roofline of every module id of the expanded tree (the root is ``prefix``), leaves summed upward."""
    rows = list(walk(tree, prefix))
    leaves = {r.module_id: leaf_roofline(r.cost, device, dtype, r.rule) for r in rows if r.kind == "leaf"}
    return rollup(rows, leaves, ZERO)


@attrs.frozen
class Prediction:
    """Predicted times of one analysis on one device."""

    device: DeviceSpec
    modules: dict[str, Roofline]  # every module id of every stage, per run of its stage
    forward_id: str  # the root id of the stage that runs every step (the denoiser)
    forwards_per_step: int
    forwards_per_video: int

    @property
    def per_forward(self) -> Roofline:
        return self.modules[self.forward_id]

    @property
    def per_step_s(self) -> float:
        return self.per_forward.predicted_s * self.forwards_per_step

    @property
    def per_video_s(self) -> float:
        return self.per_forward.predicted_s * self.forwards_per_video

    def mfu(self, tensor_flops_per_video: int, dtype: str, measured_video_s: float) -> float:
        """Model FLOPs utilisation: tensor FLOPs per video / (measured time × dense peak).

        The peak here ignores ``efficiency``: MFU is against the datasheet.
        """
        peak = self.device.tensor_flop_per_s(dtype) / self.device.efficiency
        return tensor_flops_per_video / (measured_video_s * peak)
