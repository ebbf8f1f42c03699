"""Wan2.1's DiT under diffusers' context parallelism (``WanTransformer3DModel._cp_plan``): which
leaves every rank repeats and which collectives a forward issues, per rank.

Read from diffusers 0.42 and checked by running it under the fake process group
(``tests/test_parallel_trace.py``, ``docs/parallel.md``): the sequence splits at the first
block's input and the output gathers after ``proj_out``; self-attention exchanges q, k, v and
its output with all-to-alls in the Ulysses group and all-gathers the concatenated K and V in the
ring group; cross-attention, the FFN and RoPE are local.
"""

from __future__ import annotations

import math

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.parallel import CollectiveSpec, ContextParallel, split_flops
from ditmeter.models.wan21.spec import WanModelSpec

#: Leaves every rank runs whole: before the split (the condition embedder and the patch
#: embedding) and over the unsplit context (each block's cross-attention K and V projections).
REPEATED_PREFIXES = ("dit.patch_embedding", "dit.time_embedding", "dit.time_projection", "dit.text_embedding")
REPEATED_SUFFIXES = ("cross_attn.k", "cross_attn.v", "cross_attn.k_img", "cross_attn.v_img")


def repeated_flops(analysis: Analysis) -> int:
    """Tensor FLOPs of the leaves every rank repeats, one forward."""
    return sum(
        r.cost.tensor_flops
        for r in analysis.forward.rows()
        if r.kind == "leaf"
        and (r.module_id.startswith(REPEATED_PREFIXES) or r.module_id.endswith(REPEATED_SUFFIXES))
    )


def context_parallel_forward(analysis: Analysis, cp: ContextParallel) -> tuple[int, list[CollectiveSpec]]:
    """(tensor FLOPs, collectives) of one DiT forward on one rank under ``cp``."""
    m, g, w = analysis.model, analysis.geometry, analysis.workload
    cp.check(tokens=g.tokens, heads=m.num_heads)
    act = DTYPE_BYTES[w.dtype]
    head_dim = m.dim // m.num_heads
    flops = split_flops(
        single=analysis.per_forward.tensor_flops, repeated=repeated_flops(analysis), degree=cp.degree
    )
    rank_tokens = w.batch_size * g.tokens // cp.degree
    out: list[CollectiveSpec] = []
    if cp.ulysses > 1:  # q, k, v in and the output back: this rank's [tokens/degree, heads, head_dim]
        size = rank_tokens * m.num_heads * head_dim * act
        out.append(CollectiveSpec("all_to_all_single", cp.ulysses, size, size, 4 * m.num_layers))
    if cp.ring > 1:  # cat(K, V) of this rank's tokens/ring and heads/ulysses, gathered over the ring
        size = 2 * (w.batch_size * g.tokens // cp.ring) * (m.num_heads // cp.ulysses) * head_dim * act
        out.append(CollectiveSpec("all_gather_into_tensor", cp.ring, size, cp.ring * size, m.num_layers))
    if cp.degree > 1:  # proj_out's output, gathered over every rank of the plan
        size = rank_tokens * m.out_dim * math.prod(m.patch_size) * act
        out.append(CollectiveSpec("all_gather_into_tensor", cp.degree, size, cp.degree * size, 1))
    return flops, sorted(out)


def block_parameters(m: WanModelSpec) -> list[tuple[int, int]]:
    """(dim 0, elements) of every parameter of one diffusers ``WanTransformerBlock``: q, k, v and
    the output projection (weights [dim, dim] and biases) with q/k RMSNorm weights, for self- and
    cross-attention (image models add the image K and V and their norm), the affine ``norm2``
    (``cross_attn_norm``), the FFN and the ``scale_shift_table`` [1, 6, dim]."""
    d, f = m.dim, m.ffn_dim
    attention = [(d, d * d), (d, d)] * 4 + [(d, d), (d, d)]
    image = [(d, d * d), (d, d)] * 2 + [(d, d)] if m.images else []
    norm2 = [(d, d), (d, d)] if m.cross_attn_norm else []
    ffn = [(f, f * d), (f, f), (d, d * f), (d, d)]
    return [*attention, *attention, *image, *norm2, *ffn, (1, 6 * d)]


def fsdp_block_gather(m: WanModelSpec, ranks: int, param_bytes: int = 2) -> CollectiveSpec:
    """FSDP2 ``fully_shard`` per block, forward: each block's parameters all-gathered once, in
    ``param_bytes`` (the mixed-precision policy's dtype); every parameter's dim 0 is padded to a
    multiple of ``ranks`` (the [1, 6, dim] modulation table grows to [ranks, 6, dim])."""
    gathered = sum(-(-dim0 // ranks) * ranks * (numel // dim0) for dim0, numel in block_parameters(m))
    out = gathered * param_bytes
    return CollectiveSpec("_allgather_base_", ranks, out // ranks, out, m.num_layers)
