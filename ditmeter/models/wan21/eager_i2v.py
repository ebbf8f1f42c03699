"""The eager kernels of the I2V and FLF2V DiT's cross-attention core (image and text tokens), as
the official ``WanI2VCrossAttention`` and diffusers' ``WanAttnProcessor`` run it: two attention
calls and the sum of their outputs. Checked against diffusers' block in ``tests/test_eager.py``
(100 kernels); the official one is read from Wan2.1's ``wan/modules/model.py``.
"""

from __future__ import annotations

from ditmeter.analytic.eager import F32, KernelCall, cast, dtype_of, memory, register_recipe
from ditmeter.models.wan21.eager_parallel import flash_kernel, varlen_offsets


@register_recipe("diffusers", "dit", "image_text_attention_core")
def _image_text_attention_diffusers(
    *,
    act: str,
    leaf: str,
    batch: int,
    heads: int,
    q_tokens: int,
    text_tokens: int,
    image_tokens: int,
    head_dim: int,
    act_bytes: int,
) -> tuple[KernelCall, ...]:
    """I2V/FLF2V cross-attention (``WanAttnProcessor``): SDPA over the image tokens, SDPA over the
    text, their sum."""
    out = batch * heads * q_tokens * head_dim * act_bytes
    return (
        flash_kernel(batch, heads, q_tokens, image_tokens, head_dim, act_bytes, act),
        flash_kernel(batch, heads, q_tokens, text_tokens, head_dim, act_bytes, act),
        memory("add", dtype_of(act_bytes, act), out, out, out),
    )


@register_recipe("official", "dit", "image_text_attention_core")
def _image_text_attention_official(
    *,
    act: str,
    leaf: str,
    batch: int,
    heads: int,
    q_tokens: int,
    text_tokens: int,
    image_tokens: int,
    head_dim: int,
    act_bytes: int,
) -> tuple[KernelCall, ...]:
    """``WanI2VCrossAttention``: ``flash_attention`` over the image tokens and over the text (each
    with its casts and varlen offsets, no ``k_lens``), the fp32 outputs added."""
    q = batch * heads * q_tokens * head_dim
    calls: list[KernelCall] = []
    for kv_tokens in (image_tokens, text_tokens):
        kv = batch * heads * kv_tokens * head_dim
        calls += [
            cast(q, "fp32", act),
            cast(kv, "fp32", act),
            *varlen_offsets(batch),
            *varlen_offsets(batch),
        ]
        calls += [
            flash_kernel(batch, heads, q_tokens, kv_tokens, head_dim, act_bytes, act),
            cast(q, act, "fp32"),
        ]
    return (*calls, memory("add", "fp32", q * F32, q * F32, q * F32))
