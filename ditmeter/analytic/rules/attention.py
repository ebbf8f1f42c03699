"""The attention core: softmax(Q Kᵀ / √d) V with flash-style tiling."""

from __future__ import annotations

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.registry import register_rule

#: Per score element: scale, running max, subtract, exp, running sum; the final
#: divide is per output row and is not counted (NB: a few per-row FLOPs ignored).
SOFTMAX_FLOPS_PER_SCORE = 5


@register_rule("attention_core")
def attention_core(
    *,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
    sp_ulysses: int = 0,
    sp_ring: int = 0,
    sp_xfuser: bool = False,
    sp_xdit: bool = False,
) -> Cost:
    """Two matmuls of 2·b·h·Lq·Lkv·d FLOPs each (FlopCounterMode's ``sdpa_flop_count``).

    ``sp_*`` (one rank under an official sequence-parallel plan: its Ulysses and ring degrees,
    whether the call goes through xDiT's ``xFuserLongContextAttention``, or through xDiT's ``USP``
    patched onto the diffusers modules: ``sp_xdit``) pick the eager
    kernels around the call (``models/wan21/eager_parallel.py``); they change no cost here.

    Bytes: Q, K, V read once and O written once; the L×L score matrix stays on
    chip (flash-style). NB: real kernels re-read K/V once per query tile, and the
    fp32 log-sum-exp vector they keep is not counted.
    """
    scores = batch * heads * q_tokens * kv_tokens
    q_bytes = batch * q_tokens * heads * head_dim * act_bytes
    kv_bytes = 2 * batch * kv_tokens * heads * head_dim * act_bytes
    return Cost(
        tensor_flops=4 * scores * head_dim,
        cuda_flops=scores * SOFTMAX_FLOPS_PER_SCORE,
        elements=scores,
        activation_bytes=q_bytes,
        bytes_read=q_bytes + kv_bytes,
        bytes_written=q_bytes,
    )


@register_rule("image_text_attention_core")
def image_text_attention_core(
    *,
    batch: int,
    heads: int,
    q_tokens: int,
    text_tokens: int,
    image_tokens: int,
    head_dim: int,
    act_bytes: int,
) -> Cost:
    """I2V cross-attention: the queries attend to the image tokens and to the text tokens
    separately, and the two outputs are added (one leaf: the port runs both in one segment).
    """
    text = attention_core(
        batch=batch,
        heads=heads,
        q_tokens=q_tokens,
        kv_tokens=text_tokens,
        head_dim=head_dim,
        act_bytes=act_bytes,
    )
    image = attention_core(
        batch=batch,
        heads=heads,
        q_tokens=q_tokens,
        kv_tokens=image_tokens,
        head_dim=head_dim,
        act_bytes=act_bytes,
    )
    out = batch * q_tokens * heads * head_dim
    add = Cost(
        cuda_flops=out,
        activation_bytes=out * act_bytes,
        bytes_read=2 * out * act_bytes,
        bytes_written=out * act_bytes,
    )
    return text + image + add
