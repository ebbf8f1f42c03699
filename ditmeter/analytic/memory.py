"""Memory footprint of the DiT: weights by dtype and the peak activation of one forward.

Peak activation (bytes, one forward, batch included) is the persistent set plus
the largest transient set of a block stage, with flash-style attention (no
L×L matrix). ``rows = batch × tokens``, ``a`` = activation bytes::

    persistent = rows·dim·a (hidden states) + batch·context·dim·a (text context)
               + 2·tokens·head_dim·4 (RoPE cos/sin, fp32) + batch·7·dim·4 (time embedding, projection)
    norm+modulate (fp32, as the port runs it) = 3·rows·dim·4  (x.float(), norm out, modulated)
    attention  = 6·rows·dim·a   (norm out, q, k, v, attention out, o out: the processor's locals)
    FFN        = rows·(dim + 2·ffn_dim)·a   (norm out, up-projection, GELU out)
    peak = persistent + max(stages)

NB: an estimate of the eager port's live set that ignores allocator caching
and fragmentation; weights are exact (the real module's parameters, by dtype).
"""

from __future__ import annotations

import attrs

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.cost import FP32_BYTES
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.tree import Composite, Leaf, Node, Repeated

_DTYPE_OF_BYTES = {2: "16-bit", 4: "fp32"}


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


def _weights_by_dtype(node: Node, act_dtype: str) -> dict[str, int]:
    out: dict[str, int] = {}

    def visit(n: Node, times: int) -> None:
        if isinstance(n, Leaf):
            if n.cost.params:
                width = n.cost.weight_bytes // n.cost.params
                name = act_dtype if width != FP32_BYTES else "fp32"
                out[name] = out.get(name, 0) + n.cost.weight_bytes * times
        elif isinstance(n, Composite):
            for c in n.children:
                visit(c, times)
        else:
            assert isinstance(n, Repeated)
            visit(n.template, times * n.count)

    visit(node, 1)
    return out


def dit_footprint(analysis: Analysis) -> Footprint:
    """Weights by dtype and the peak activation estimate (see the module docstring)."""
    m, w, g = analysis.model, analysis.workload, analysis.geometry
    a, f32 = w.act_bytes, FP32_BYTES
    rows = w.batch_size * g.tokens
    persistent = (
        rows * m.dim * a
        + w.batch_size * g.context_len * m.dim * a
        + 2 * g.tokens * m.head_dim * f32
        + w.batch_size * 7 * m.dim * f32
    )
    stages = {
        "norm_modulate": 3 * rows * m.dim * f32,
        "attention": 6 * rows * m.dim * a,
        "ffn": rows * (m.dim + 2 * m.ffn_dim) * a,
    }
    return Footprint(_weights_by_dtype(analysis.tree, w.dtype), persistent, stages)
