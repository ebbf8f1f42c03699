"""Table lookups and the T5 relative position bias: gathers, no matmuls."""

from __future__ import annotations

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.registry import register_rule

#: Element-wise ops per (query, key) pair to bucket a relative position, as
#: ``UMT5Attention._relative_position_bucket`` runs them: sub, gt, cast, mul,
#: abs, lt, div, log, div, mul, cast, add, min, where, add (15).
BUCKET_FLOPS_PER_PAIR = 15


@register_rule("embedding_lookup")
def embedding_lookup(*, tokens: int, vocab: int, dim: int, act_bytes: int, weight_el_bytes: int) -> Cost:
    """``table[ids]``: no FLOPs; reads the ``tokens`` rows it gathers, writes them."""
    out = tokens * dim * act_bytes
    return Cost(
        params=vocab * dim,
        weight_bytes=vocab * dim * weight_el_bytes,
        activation_bytes=out,
        bytes_read=tokens * dim * weight_el_bytes,
        bytes_written=out,
    )


@register_rule("relative_position_bias")
def relative_position_bias(
    *, heads: int, q_tokens: int, kv_tokens: int, buckets: int, act_bytes: int, weight_el_bytes: int
) -> Cost:
    """T5 bias: bucket every (query, key) offset, gather ``heads`` values per pair.

    Per sample-independent (the same bias serves the whole batch). Bytes: the
    gathered (heads, Lq, Lkv) bias is written once; the int64 bucket ids are not counted.
    """
    pairs = q_tokens * kv_tokens
    out = heads * pairs * act_bytes
    return Cost(
        cuda_flops=pairs * BUCKET_FLOPS_PER_PAIR,
        elements=pairs,
        params=buckets * heads,
        weight_bytes=buckets * heads * weight_el_bytes,
        activation_bytes=out,
        bytes_read=buckets * heads * weight_el_bytes,
        bytes_written=out,
    )


@register_rule("elementwise_mul")
def elementwise_mul(*, elements: int, act_bytes: int) -> Cost:
    """x · y (the gated FFN's gate): reads two tensors, writes one, one FLOP per element."""
    return Cost(
        cuda_flops=elements,
        elements=elements,
        activation_bytes=elements * act_bytes,
        bytes_read=2 * elements * act_bytes,
        bytes_written=elements * act_bytes,
    )
