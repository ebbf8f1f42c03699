"""Memory of the Wan2.1 DiT while it runs: weights by dtype and the peak activation of one forward.

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

from ditmeter.analytic.cost import FP32_BYTES
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.memory import Footprint, weights_by_dtype
from ditmeter.analytic.tree import Node
from ditmeter.analytic.workload import Workload
from ditmeter.models.wan21.spec import WanModelSpec


def dit_footprint(m: WanModelSpec, w: Workload, g: Geometry, dit: Node) -> Footprint:
    """Weights by dtype of the DiT tree ``dit`` and its peak activation (see the module docstring)."""
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
    return Footprint(weights_by_dtype(dit, w.dtype), persistent, stages)
