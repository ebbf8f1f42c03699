"""Memory of a component while it runs: weights by dtype and the peak activation of one run.

A model family estimates the activation sets of its forward (what is live
in each stage of a block, see e.g. ``ditmeter.models.wan21.memory``); the
weights come from the cost tree itself (:func:`weights_by_dtype`), whose
parameters equal the real modules' (tested).
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.cost import FP32_BYTES
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.tree import Node, walk


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


def weights_by_dtype(tree: Node, dtype: str) -> dict[str, int]:
    """Weight bytes of ``tree`` by dtype name: 4-byte weights are ``fp32``, the rest ``dtype``
    (the run's 16-bit dtype)."""
    out: dict[str, int] = {}
    for row in walk(tree, expand=False):
        if row.kind == "leaf" and row.cost.params:
            width = row.cost.weight_bytes // row.cost.params
            name = dtype if width != FP32_BYTES else "fp32"
            out[name] = out.get(name, 0) + row.total.weight_bytes
    return out
