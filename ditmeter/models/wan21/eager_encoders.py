"""The eager kernels of the encoders around the DiT: UMT5 and CLIP, leaf by leaf.

Like :mod:`ditmeter.models.wan21.eager` (the DiT), each recipe is a function of a leaf's dims;
``leaf`` tells apart leaves of one rule that run different code. Checked against the ops of the
real modules in ``tests/test_eager_stages.py`` (a UMT5 block of both flavours, a CLIP layer of
diffusers').

**text_encoder** (bf16 in both; the official ``T5Encoder`` outside autocast, transformers'
``UMT5EncoderModel`` with its default SDPA): RMSNorm is eight kernels (``x.float()``, pow, mean,
+eps, rsqrt, the fp32 product with the bf16 ``x``, the cast back, ×weight); the relative position
bias runs some twenty int64/fp32 kernels over the [q, k] bucket grid per block. The official
attention builds its bias by ``new_zeros``, ``+= pos_bias`` and ``masked_fill_``, adds it to the
``einsum`` scores and runs the softmax in fp32 between two casts (11 kernels); transformers folds
the padding mask into the bias (``where``, then ``contiguous``) and calls SDPA with it: a float
mask rules out flash, so a GPU runs the memory-efficient kernel, which writes no log-sum-exp
without grad. The bias add is inside those kernels (``bias_add``: none of its own).

**image_encoder**: diffusers runs ``CLIPVisionModel`` in fp32 (separate q, k, v projections,
SDPA: the memory-efficient kernel for fp32); the official ``VisionTransformer`` in fp16 under
``autocast(fp16)`` (``LayerNorm(x.float()).type_as(x)`` with the fp16 affine weights cast to fp32
by autocast, ``flashattention(version=2)`` with its varlen offsets) stops after block 31 and
never runs ``post_norm``. NB: the official recipes are read from Wan2.1's ``wan/modules/clip.py``,
not captured (the installed Wan2.2 code has no CLIP).
"""

from __future__ import annotations

from ditmeter.analytic.eager import (
    EAGER_DTYPE_BYTES,
    F32,
    KernelCall,
    attention,
    cast,
    dtype_of,
    memory,
    register_recipe,
)
from ditmeter.models.wan21.eager import _gemm
from ditmeter.models.wan21.eager_parallel import varlen_offsets

I64, BOOL = 8, 1


def _add(elements: int, dtype: str) -> tuple[KernelCall, ...]:
    b = elements * EAGER_DTYPE_BYTES[dtype]
    return (memory("add", dtype, b, b, b),)


# ---- text encoder (UMT5) --------------------------------------------------------------------

for _flavour in ("official", "diffusers"):

    @register_recipe(_flavour, "text_encoder", "embedding_lookup")  # type: ignore[arg-type]
    def _token_embedding(
        *, act: str, leaf: str, tokens: int, vocab: int, dim: int, act_bytes: int, weight_el_bytes: int
    ) -> tuple[KernelCall, ...]:
        """``embedding``: the int64 ids and the whole table in, the rows out."""
        table = vocab * dim * weight_el_bytes
        return (memory("embedding", act, table, tokens * I64, tokens * dim * act_bytes),)

    @register_recipe(_flavour, "text_encoder", "rms_norm")  # type: ignore[arg-type]
    def _t5_rms_norm(
        *, act: str, leaf: str, rows: int, dim: int, act_bytes: int, weight_el_bytes: int
    ) -> tuple[KernelCall, ...]:
        """``x * rsqrt(x.float().pow(2).mean(-1) + eps)`` (the 16-bit x times the fp32 rstd:
        fp32), cast back to the weight's dtype, ``weight * x``."""
        e = rows * dim
        return (
            cast(e, act, "fp32"),
            memory("pow", "fp32", e * F32, e * F32),
            memory("mean", "fp32", e * F32, rows * F32),
            memory("add", "fp32", rows * F32, rows * F32),
            memory("rsqrt", "fp32", rows * F32, rows * F32),
            memory("mul", "fp32", e * act_bytes, rows * F32, e * F32),
            cast(e, "fp32", act),
            memory("mul", act, dim * weight_el_bytes, e * act_bytes, e * act_bytes),
        )

    @register_recipe(_flavour, "text_encoder", "linear")  # type: ignore[arg-type]
    def _t5_linear(
        *,
        act: str,
        leaf: str,
        tokens: int,
        in_features: int,
        out_features: int,
        bias: int,
        act_bytes: int,
        weight_el_bytes: int,
    ) -> tuple[KernelCall, ...]:
        """``mm`` in the encoder's dtype (no bias anywhere in T5)."""
        return (_gemm("addmm" if bias else "mm", act, tokens, in_features, out_features, bias),)

    @register_recipe(_flavour, "text_encoder", "gelu_tanh")  # type: ignore[arg-type]
    def _t5_gelu(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
        """``0.5 * x * (1 + tanh(√(2/π) * (x + 0.044715 * x³)))`` written out: 8 kernels (official
        ``GELU``, transformers' ``gelu_new``)."""
        b = elements * act_bytes
        two, three = (b, b), (b, b, b)
        return (
            memory("mul", act, *two, count=3),  # 0.5·x, 0.044715·x³, √(2/π)·(…)
            memory("pow", act, *two),
            memory("tanh", act, *two),
            memory("add", act, *two),  # 1 + tanh
            memory("add", act, *three),  # x + 0.044715·x³
            memory("mul", act, *three),  # 0.5x · (1 + tanh)
        )

    @register_recipe(_flavour, "text_encoder", "elementwise_mul")  # type: ignore[arg-type]
    def _t5_mul(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
        b = elements * act_bytes
        return (memory("mul", act, b, b, b),)

    @register_recipe(_flavour, "text_encoder", "residual_add")  # type: ignore[arg-type]
    def _t5_residual(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
        """The residual adds; the bias add (``attn.bias_add``) runs inside the attention's kernels."""
        return () if leaf.endswith("bias_add") else _add(elements, dtype_of(act_bytes, act))


def _buckets(q_tokens: int, kv_tokens: int, diffusers: bool) -> tuple[KernelCall, ...]:
    """``_relative_position_bucket`` over the [q, kv] grid: int64 arithmetic, the log in fp32."""
    g = q_tokens * kv_tokens
    two, three = (g * I64, g * I64), (g * I64, g * I64, g * I64)
    calls = [
        memory("arange", "i64", q_tokens * I64),
        memory("arange", "i64", kv_tokens * I64),
        memory("sub", "i64", q_tokens * I64, kv_tokens * I64, g * I64),
        memory("gt", "i64", g * I64, g * BOOL),
        memory("_to_copy", "bool", g * BOOL, g * I64),  # (rel > 0).long()
        memory("mul", "i64", *two),
        memory("abs", "i64", *two),
        memory("lt", "i64", g * I64, g * BOOL),
        memory("_to_copy", "fp32", g * I64, g * F32),
        memory("div", "fp32", g * F32, g * F32, count=2),
        memory("log", "fp32", g * F32, g * F32),
        memory("mul", "fp32", g * F32, g * F32),
        memory("_to_copy", "fp32", g * F32, g * I64),
        memory("add", "i64", *two),  # max_exact + …
        memory("full_like", "i64", *two),
        memory("minimum", "i64", *three),
        memory("where", "bool", g * BOOL, *three),
        memory("add_", "i64", *three),
    ]
    if diffusers:  # ``context_position + past_seen_tokens``, ``0 + (rel > 0).long() * n``
        calls += [memory("add", "i64", q_tokens * I64, q_tokens * I64), memory("add", "i64", *two)]
    return tuple(calls)


@register_recipe("official", "text_encoder", "relative_position_bias")
def _position_bias_official(
    *,
    act: str,
    leaf: str,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    buckets: int,
    act_bytes: int,
    weight_el_bytes: int,
) -> tuple[KernelCall, ...]:
    """``T5RelativeEmbedding``: the buckets, the embedding, ``permute(2, 0, 1).contiguous()``."""
    g = q_tokens * kv_tokens
    bias = heads * g * act_bytes
    return (
        *_buckets(q_tokens, kv_tokens, diffusers=False),
        memory("embedding", act, buckets * heads * weight_el_bytes, g * I64, bias),
        memory("clone", act, bias, bias),
    )


@register_recipe("diffusers", "text_encoder", "relative_position_bias")
def _position_bias_diffusers(
    *,
    act: str,
    leaf: str,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    buckets: int,
    act_bytes: int,
    weight_el_bytes: int,
) -> tuple[KernelCall, ...]:
    """``UMT5Attention.compute_bias``: the buckets and the embedding (its permute is a view; the
    copy comes with the mask, in the attention)."""
    g = q_tokens * kv_tokens
    return (
        *_buckets(q_tokens, kv_tokens, diffusers=True),
        memory("embedding", act, buckets * heads * weight_el_bytes, g * I64, heads * g * act_bytes),
    )


@register_recipe("official", "text_encoder", "attention_core")
def _t5_attention_official(
    *,
    act: str,
    leaf: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
) -> tuple[KernelCall, ...]:
    """``T5Attention``: the bias (``new_zeros`` from x, ``+= pos_bias``, ``masked_fill_`` of the
    padding), the ``einsum`` scores (bmm) plus the bias, softmax in fp32 between casts, the second
    ``einsum`` and the head merge (a copy). NB: batch 1 (the official code encodes one prompt a
    call); a larger batch makes ``einsum`` copy q and k first."""
    a = act_bytes
    s = batch * heads * q_tokens * kv_tokens
    q = batch * heads * q_tokens * head_dim
    kv = batch * heads * kv_tokens * head_dim
    mask = batch * kv_tokens
    return (
        memory("new_zeros", act, q * a, s * a),  # x.new_zeros: x is [B, L, heads·head_dim]
        memory("add_", act, s * a, heads * q_tokens * kv_tokens * a, s * a),
        memory("eq", "i64", mask * I64, mask * BOOL),
        memory("masked_fill_", act, s * a, mask * BOOL, s * a),
        memory("bmm", act, q * a, kv * a, s * a),
        memory("add", act, s * a, s * a, s * a),
        cast(s, act, "fp32"),
        memory("_softmax", "fp32", s * F32, s * F32),
        cast(s, "fp32", act),
        memory("bmm", act, s * a, kv * a, q * a),
        memory("clone", act, q * a, q * a),
    )


@register_recipe("diffusers", "text_encoder", "attention_core")
def _t5_attention_diffusers(
    *,
    act: str,
    leaf: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
) -> tuple[KernelCall, ...]:
    """``sdpa_attention_forward``: ``where(mask, bias, min)`` ([B, 1, q, kv] bool mask, the
    [1, heads, q, kv] bias, a scalar), ``.contiguous()`` of the permuted result, then SDPA with that
    float mask: the memory-efficient kernel (no log-sum-exp without grad)."""
    a = act_bytes
    s = batch * heads * q_tokens * kv_tokens
    grid = q_tokens * kv_tokens
    return (
        memory("scalar_tensor", act, a),
        memory("where", act, batch * grid * BOOL, heads * grid * a, a, s * a),
        memory("clone", act, s * a, s * a),
        attention(
            "efficient_attention", act, batch, heads, q_tokens, kv_tokens, head_dim, lse=False, bias=True
        ),
    )


# ---- image encoder (CLIP ViT-H/14) -----------------------------------------------------------


def _conv(dtype: str, batch_in: int, cin: int, cout: int, kvol: int, outputs: int, bias: int) -> KernelCall:
    """One convolution: ``batch_in`` input positions × ``cin``, the weights, ``outputs`` × ``cout``."""
    b = EAGER_DTYPE_BYTES[dtype]
    flops = 2 * outputs * cin * cout * kvol
    moved = (batch_in * cin + cout * cin * kvol + (cout if bias else 0) + outputs * cout) * b
    return KernelCall("convolution", "conv", dtype, moved, flops, call_flops=flops)


@register_recipe("diffusers", "image_encoder", "patch_conv3d")
@register_recipe("official", "image_encoder", "patch_conv3d")
def _clip_patches(
    *,
    act: str,
    leaf: str,
    batch: int,
    in_channels: int,
    out_channels: int,
    kernel_volume: int,
    patches: int,
    bias: int,
    act_bytes: int,
    weight_el_bytes: int,
) -> tuple[KernelCall, ...]:
    """The stride-14 patch conv over the image; official: autocast casts the fp32 pixels first."""
    dtype = dtype_of(act_bytes, act)
    pixels = batch * patches * kernel_volume
    calls = [cast(pixels * in_channels, "fp32", dtype)] if act_bytes != F32 else []
    calls.append(_conv(dtype, pixels, in_channels, out_channels, kernel_volume, batch * patches, bias))
    return tuple(calls)


@register_recipe("diffusers", "image_encoder", "layout_copy")
@register_recipe("official", "image_encoder", "layout_copy")
def _clip_cls(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
    """``cat([cls.expand(B, 1, D), patches])``: every row in, every row out."""
    b = elements * act_bytes
    return (memory("cat", dtype_of(act_bytes, act), b, b),)


@register_recipe("diffusers", "image_encoder", "residual_add")
@register_recipe("official", "image_encoder", "residual_add")
def _clip_add(*, act: str, leaf: str, elements: int = 0, act_bytes: int = 0) -> tuple[KernelCall, ...]:
    """The residual adds. NB: ``pos_embedding`` (diffusers: an embedding lookup and an add; official:
    the add) carries no dims in the tree (``clip.py`` builds it from a cost): no kernels until it does."""
    return _add(elements, dtype_of(act_bytes, act)) if elements else ()


@register_recipe("diffusers", "image_encoder", "layer_norm")
def _clip_layer_norm_diffusers(
    *,
    act: str,
    leaf: str,
    rows: int,
    dim: int,
    affine: int,
    in_bytes: int,
    out_bytes: int,
    weight_el_bytes: int,
) -> tuple[KernelCall, ...]:
    """``nn.LayerNorm`` in the encoder's dtype: one kernel (fp32 mean and rstd)."""
    e = rows * dim
    params = 2 * dim * weight_el_bytes if affine else 0
    return (memory("native_layer_norm", "fp32", e * in_bytes, params, e * out_bytes, 2 * rows * F32),)


@register_recipe("official", "image_encoder", "layer_norm")
def _clip_layer_norm_official(
    *,
    act: str,
    leaf: str,
    rows: int,
    dim: int,
    affine: int,
    in_bytes: int,
    out_bytes: int,
    weight_el_bytes: int,
) -> tuple[KernelCall, ...]:
    """``LayerNorm(x.float()).type_as(x)`` under ``autocast(fp16)``: the input cast, the fp16 weight
    and bias cast to fp32 (``layer_norm`` is an fp32 op for autocast), the norm, the cast back.
    ``post_norm`` never runs (``use_31_block`` returns before it)."""
    if leaf == "post_norm":
        return ()
    e, half = rows * dim, dtype_of(in_bytes, act)
    return (
        cast(e, half, "fp32"),
        cast(dim, dtype_of(weight_el_bytes, act), "fp32", count=2),
        memory("native_layer_norm", "fp32", e * F32, 2 * dim * F32, e * F32, 2 * rows * F32),
        cast(e, "fp32", half),
    )


@register_recipe("diffusers", "image_encoder", "linear")
@register_recipe("official", "image_encoder", "linear")
def _clip_linear(
    *,
    act: str,
    leaf: str,
    tokens: int,
    in_features: int,
    out_features: int,
    bias: int,
    act_bytes: int,
    weight_el_bytes: int,
) -> tuple[KernelCall, ...]:
    """``addmm`` in the encoder's dtype (official: fp16 weights under fp16 autocast, no casts);
    transformers projects q, k and v separately (``to_qkv``: three GEMMs of a third)."""
    dtype = dtype_of(act_bytes, act)
    if leaf.endswith("to_qkv") and act_bytes == F32:  # diffusers' pipeline loads CLIP in fp32
        return (_gemm("addmm", dtype, tokens, in_features, out_features // 3, bias),) * 3
    return (_gemm("addmm", dtype, tokens, in_features, out_features, bias),)


@register_recipe("diffusers", "image_encoder", "attention_core")
def _clip_attention_diffusers(
    *,
    act: str,
    leaf: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
) -> tuple[KernelCall, ...]:
    """SDPA without a mask: flash for 16-bit, the memory-efficient kernel for fp32 (no
    log-sum-exp without grad)."""
    dtype = dtype_of(act_bytes, act)
    half = act_bytes == 2
    op = "flash_attention" if half else "efficient_attention"
    return (attention(op, dtype, batch, heads, q_tokens, kv_tokens, head_dim, lse=half),)


@register_recipe("official", "image_encoder", "attention_core")
def _clip_attention_official(
    *,
    act: str,
    leaf: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
) -> tuple[KernelCall, ...]:
    """``flashattention(q, k, v, version=2)`` on fp16 views of ``to_qkv``'s output (no casts, no
    copies): the varlen offsets of q and k, then FlashAttention-2."""
    dtype = dtype_of(act_bytes, act)
    core = attention("flash_attention", dtype, batch, heads, q_tokens, kv_tokens, head_dim, lse=True)
    return (*varlen_offsets(batch), *varlen_offsets(batch), core)


@register_recipe("diffusers", "image_encoder", "gelu")
@register_recipe("official", "image_encoder", "gelu")
def _clip_gelu(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
    """Exact ``gelu`` (an fp16 op under autocast)."""
    b = elements * act_bytes
    return (memory("gelu", dtype_of(act_bytes, act), b, b),)
