"""The Wan DiT's eager kernels, leaf by leaf, as the official code and the diffusers port run them.

Read from the modules (``wan/modules/model.py`` and ``attention.py`` of the Wan2.1 release;
diffusers' ``transformer_wan.py``), checked against the captured ops of the diffusers DiT in
``tests/test_eager.py``. Each recipe is a function of the leaf's dims (``analytic/eager.py``);
``act`` is the stage's 16-bit dtype, ``leaf`` the leaf's id where two leaves of one rule run
different code.

**diffusers** (the whole DiT in the workload dtype; ``_keep_in_fp32_modules`` and the
``FP32LayerNorm``s in fp32): every norm casts its input to fp32 and every modulate casts its
output back; RMSNorm runs as seven fp32 ops between two casts; RoPE rotates the two halves of
q and k in fp32 (``x1·cos − x2·sin`` into an ``empty_like``: 8 kernels a tensor); the
attention is ``scaled_dot_product_attention`` (one flash kernel); the gated residuals add in fp32
between casts.

**official** (``generate.py``: fp32 weights under ``autocast(bf16)``; ``weight_el_bytes`` 2 under
``--convert_model_dtype``): the residual stream is fp32 from the first residual on (block 0's
``norm1`` reads the bf16 patch embedding: NB, costed as the later blocks); every ``Linear``
casts its weight and bias to bf16 on every call (the model is ``requires_grad_(False)``, so
autocast's cast cache does not apply) and its input when it is fp32 (:data:`FP32_INPUT`);
``WanRMSNorm`` returns ``type_as(x) * weight``, which promotes to fp32 again; ``rope_apply``
turns q and k to float64 complex, builds the frequency table by ``cat`` for every call, and
copies the result through ``cat`` and ``stack`` before ``.float()``; ``flash_attention``
casts fp32 q and k to bf16, copies k and v by ``cat`` when ``k_lens`` is given (self-attention),
builds the varlen offsets (a host-to-device copy, ``new_zeros``, ``cat`` and ``cumsum`` for q and
for k) and casts the output back to q's dtype (fp32).
"""

from __future__ import annotations

from ditmeter.analytic.eager import (
    EAGER_DTYPE_BYTES,
    F32,
    KernelCall,
    cast,
    dtype_of,
    memory,
    register_recipe,
)
from ditmeter.models.wan21.eager_parallel import (
    cp_attention,
    flash_kernel,
    usp_attention,
    varlen_offsets,
    xdit_attention,
)

#: Official ``Linear`` leaves whose input is fp32 (the modulated stream, the fp32 attention output).
FP32_INPUT = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.o",
    "ffn.0",
    "head.head",
)
#: Official ``Linear`` leaves run under ``autocast(dtype=float32)``: fp32 GEMMs.
FP32_GEMM = ("time_embedding.0", "time_embedding.2", "time_projection.1", "head.head")


def _ends(leaf: str, names: tuple[str, ...]) -> bool:
    return any(leaf == n or leaf.endswith("." + n) for n in names)


def _gemm(op: str, dtype: str, t: int, k: int, n: int, bias: int) -> KernelCall:
    b = EAGER_DTYPE_BYTES[dtype]
    flops = 2 * t * k * n
    return KernelCall(
        op,
        "gemm",
        dtype,
        (t * k + k * n + (n if bias else 0) + t * n) * b,
        flops,
        t * n if bias else 0,
        call_flops=flops,
    )


def _rms_statistics(rows: int, dim: int, add_eps: str) -> tuple[KernelCall, ...]:
    """``x * rsqrt(x.pow(2).mean(-1) + eps)`` in fp32: pow, mean, +eps, rsqrt, the product."""
    e = rows * dim
    return (
        memory("pow", "fp32", e * F32, e * F32),
        memory("mean", "fp32", e * F32, rows * F32),
        memory(add_eps, "fp32", rows * F32, rows * F32),
        memory("rsqrt", "fp32", rows * F32, rows * F32),
        memory("mul", "fp32", e * F32, rows * F32, e * F32),
    )


# ---- diffusers ------------------------------------------------------------------------------


@register_recipe("diffusers", "dit", "linear")
def _linear_diffusers(
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
    """``addmm`` (``mm`` without a bias) in the leaf's dtype; weights already in it."""
    dtype = dtype_of(act_bytes, act)
    return (_gemm("addmm" if bias else "mm", dtype, tokens, in_features, out_features, bias),)


@register_recipe("diffusers", "dit", "rms_norm")
def _rms_norm_diffusers(
    *, act: str, leaf: str, rows: int, dim: int, act_bytes: int, weight_el_bytes: int
) -> tuple[KernelCall, ...]:
    """``WanRMSNorm``-style fp32 norm: cast, pow, mean, +eps, rsqrt, ×rstd, ×weight, cast back; the
    weight in the model's dtype (diffusers loads every weight but ``_keep_in_fp32_modules`` in it)."""
    e, a = rows * dim, dtype_of(act_bytes, act)
    return (
        cast(e, a, "fp32"),
        *_rms_statistics(rows, dim, "add_"),
        memory("mul", "fp32", e * F32, dim * act_bytes, e * F32),
        cast(e, "fp32", a),
    )


def _layer_norm(rows: int, dim: int, affine: int, weight_el_bytes: int) -> KernelCall:
    e = rows * dim
    params = 2 * dim * weight_el_bytes if affine else 0
    return memory("native_layer_norm", "fp32", e * F32, params, e * F32, 2 * rows * F32)


@register_recipe("diffusers", "dit", "layer_norm")
def _layer_norm_diffusers(
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
    """``FP32LayerNorm(x.float())``: the input cast, the norm, a cast back when the output is 16-bit."""
    e, a = rows * dim, dtype_of(in_bytes, act)
    calls = [cast(e, a, "fp32")] if in_bytes != F32 else []
    calls.append(_layer_norm(rows, dim, affine, weight_el_bytes))
    if out_bytes != F32:
        calls.append(cast(e, "fp32", dtype_of(out_bytes, act)))
    return tuple(calls)


@register_recipe("diffusers", "dit", "modulation_table")
def _modulation_diffusers(
    *, act: str, leaf: str, batch: int, vectors: int, dim: int, table_el_bytes: int
) -> tuple[KernelCall, ...]:
    """Blocks: ``scale_shift_table + temb.float()``; the head: the table + the bf16 temb (promoted)."""
    a = EAGER_DTYPE_BYTES[act]
    if vectors == 2:  # the head adds the [B, 1, D] embedding to its [1, 2, D] table
        return (
            memory(
                "add", "fp32", vectors * dim * table_el_bytes, batch * dim * a, batch * vectors * dim * F32
            ),
        )
    out = batch * vectors * dim
    return (
        cast(out, act, "fp32"),
        memory("add", "fp32", vectors * dim * table_el_bytes, out * F32, out * F32),
    )


def _modulate(batch: int, rows: int, dim: int) -> tuple[KernelCall, ...]:
    e, v = rows * dim, batch * dim * F32
    return (
        memory("add", "fp32", v, v),  # 1 + scale
        memory("mul", "fp32", e * F32, v, e * F32),
        memory("add", "fp32", e * F32, v, e * F32),
    )


@register_recipe("diffusers", "dit", "modulate")
def _modulate_diffusers(
    *, act: str, leaf: str, batch: int, rows: int, dim: int, in_bytes: int, out_bytes: int
) -> tuple[KernelCall, ...]:
    """``(norm * (1 + scale) + shift).type_as(x)``."""
    return (*_modulate(batch, rows, dim), cast(rows * dim, "fp32", dtype_of(out_bytes, act)))


@register_recipe("diffusers", "dit", "rope")
def _rope_diffusers(
    *,
    act: str,
    leaf: str,
    tensors: int,
    rows: int,
    heads: int,
    head_dim: int,
    act_bytes: int,
    table_bytes: int,
    table_rows: int = 0,
    padded_rows: int = 0,
) -> tuple[KernelCall, ...]:
    """Per tensor: ``out[..., 0::2] = x1·cos − x2·sin`` and ``out[..., 1::2] = x1·sin + x2·cos`` in
    fp32 (4 products, a sub, an add, two strided copies into the 16-bit output).
    NB: the cos/sin tables are read at [tokens, head_dim/2] (batch 1). ``table_rows`` and
    ``padded_rows`` lay out the official plans' tables (``_rope_official``); diffusers' rank reads
    its rows of the precomputed tables (``trace`` holds an official plan's rank to diffusers'
    launches)."""
    half = rows * heads * head_dim // 2
    a, table = act_bytes, rows * head_dim // 2 * table_bytes
    product = memory("mul", "fp32", half * a, table, half * F32, count=4 * tensors)
    sub = memory("sub", "fp32", half * F32, half * F32, half * F32, count=tensors)
    add = memory("add", "fp32", half * F32, half * F32, half * F32, count=tensors)
    store = memory("copy_", "fp32", half * a, half * F32, half * a, count=2 * tensors)
    return (product, sub, add, store)


@register_recipe("diffusers", "dit", "attention_core")
def _attention_diffusers(
    *,
    act: str,
    leaf: str,
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
) -> tuple[KernelCall, ...]:
    """SDPA: one flash kernel (its output is laid out [batch, tokens, heads, head_dim], so merging
    the heads is a view). Under a context-parallel plan (``sp_ulysses``): :func:`cp_attention`;
    under xDiT's patch (``sp_xdit``): :func:`xdit_attention`."""
    if sp_xdit:
        shape = (batch, heads, q_tokens, kv_tokens, head_dim, act_bytes)
        return xdit_attention(act, *shape, sp_ulysses, sp_ring)
    if sp_ulysses:
        return cp_attention(act, batch, heads, q_tokens, kv_tokens, head_dim, act_bytes, sp_ulysses, sp_ring)
    return (flash_kernel(batch, heads, q_tokens, kv_tokens, head_dim, act_bytes, act),)


@register_recipe("diffusers", "dit", "gated_residual")
def _gated_residual_diffusers(
    *, act: str, leaf: str, batch: int, rows: int, dim: int, act_bytes: int
) -> tuple[KernelCall, ...]:
    """``(x.float() + y * gate).type_as(x)``; after the FFN ``y.float()`` is cast too."""
    e, a, g = rows * dim, dtype_of(act_bytes, act), batch * dim * F32
    y_fp32 = leaf.endswith("residual2")
    calls = [cast(e, a, "fp32")]
    if y_fp32:
        calls.append(cast(e, a, "fp32"))
    calls += [
        memory("mul", "fp32", e * (F32 if y_fp32 else act_bytes), g, e * F32),
        memory("add", "fp32", e * F32, e * F32, e * F32),
        cast(e, "fp32", a),
    ]
    return tuple(calls)


def _pointwise(op: str) -> object:
    def recipe(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
        n = 3 if op == "add" else 2
        return (memory(op, dtype_of(act_bytes, act), *([elements * act_bytes] * n)),)

    return recipe


register_recipe("diffusers", "dit", "residual_add")(_pointwise("add"))  # type: ignore[arg-type]
register_recipe("diffusers", "dit", "gelu_tanh", "gelu")(_pointwise("gelu"))  # type: ignore[arg-type]
register_recipe("diffusers", "dit", "silu")(_pointwise("silu"))  # type: ignore[arg-type]
register_recipe("diffusers", "dit", "layout_copy")(_pointwise("clone"))  # type: ignore[arg-type]


# ---- official -------------------------------------------------------------------------------


@register_recipe("official", "dit", "linear")
def _linear_official(
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
    """Under ``autocast(bf16)``: the input cast when fp32, the weight and bias casts when the
    weights are fp32, then ``addmm`` in bf16; the time embedding, projection and head run under
    ``autocast(dtype=float32)``: an fp32 GEMM (bf16 weights cast up)."""
    gemm = "fp32" if _ends(leaf, FP32_GEMM) else act
    w = dtype_of(weight_el_bytes, act)
    calls = []
    if _ends(leaf, FP32_INPUT) and gemm != "fp32":
        calls.append(cast(tokens * in_features, "fp32", gemm))
    if w != gemm:
        calls.append(cast(in_features * out_features, w, gemm, operand="weight"))
        if bias:
            calls.append(cast(out_features, w, gemm))
    calls.append(_gemm("addmm" if bias else "mm", gemm, tokens, in_features, out_features, bias))
    return tuple(calls)


@register_recipe("official", "dit", "rms_norm")
def _rms_norm_official(
    *, act: str, leaf: str, rows: int, dim: int, act_bytes: int, weight_el_bytes: int
) -> tuple[KernelCall, ...]:
    """``self._norm(x.float()).type_as(x) * self.weight``: the product promotes to the weight's dtype."""
    e = rows * dim
    w = dtype_of(weight_el_bytes, act)
    out = EAGER_DTYPE_BYTES[w] if w == "fp32" else act_bytes
    return (
        cast(e, act, "fp32"),
        *_rms_statistics(rows, dim, "add"),
        cast(e, "fp32", act),
        memory("mul", w, e * act_bytes, dim * weight_el_bytes, e * out),
    )


@register_recipe("official", "dit", "layer_norm")
def _layer_norm_official(
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
    """``WanLayerNorm(x.float()).type_as(x)`` on the fp32 stream: the norm alone (autocast runs
    ``layer_norm`` in fp32; bf16 affine weights are cast up first)."""
    calls = []
    if affine and weight_el_bytes != F32:
        calls.append(cast(dim, act, "fp32", count=2))
    calls.append(_layer_norm(rows, dim, affine, F32 if affine else weight_el_bytes))
    return tuple(calls)


@register_recipe("official", "dit", "modulation_table")
def _modulation_official(
    *, act: str, leaf: str, batch: int, vectors: int, dim: int, table_el_bytes: int
) -> tuple[KernelCall, ...]:
    """``self.modulation + e`` in fp32 (e is the fp32 projection)."""
    out = batch * vectors * dim * F32
    e = out if vectors == 6 else batch * dim * F32
    return (memory("add", "fp32", vectors * dim * table_el_bytes, e, out),)


@register_recipe("official", "dit", "modulate")
def _modulate_official(
    *, act: str, leaf: str, batch: int, rows: int, dim: int, in_bytes: int, out_bytes: int
) -> tuple[KernelCall, ...]:
    """``norm(x).float() * (1 + e1) + e0``: fp32, fed to the next ``Linear`` as is."""
    return _modulate(batch, rows, dim)


@register_recipe("official", "dit", "rope")
def _rope_official(
    *,
    act: str,
    leaf: str,
    tensors: int,
    rows: int,
    heads: int,
    head_dim: int,
    act_bytes: int,
    table_bytes: int,
    table_rows: int = 0,
    padded_rows: int = 0,
) -> tuple[KernelCall, ...]:
    """``rope_apply`` per tensor: to float64, the complex frequency table by ``cat`` (complex128,
    [tokens, head_dim/2]), the complex product, ``cat`` with the (empty) padding, ``stack``,
    ``.float()``. The fp32 input is the promoted RMSNorm output. Under a sequence-parallel plan
    (Wan2.1's ``xdit_context_parallel.py``, Wan2.2's ``sequence_parallel.py``) the table is the
    whole grid's (``table_rows``), padded by ``pad_freqs`` to ``padded_rows`` (``torch.ones`` of
    the padding, launched only when there is some, and a ``cat``) before the rank takes its rows."""
    e = rows * heads * head_dim
    per_row = head_dim // 2 * 16  # complex128 values of one token's table
    table = (table_rows or rows) * per_row
    c = e * 8  # float64 values = e/2 complex128
    rank_table = rows * per_row  # the rows the product reads
    pad: tuple[KernelCall, ...] = ()
    if padded_rows:
        fill = (padded_rows - table_rows) * per_row
        ones = (memory("ones", "fp64", fill, count=tensors),) if fill else ()
        pad = (*ones, memory("cat", "fp64", table + fill, padded_rows * per_row, count=tensors))
    return (
        cast(e, "fp32", "fp64", count=tensors),
        memory("cat", "fp64", table, table, count=tensors),
        *pad,
        memory("mul", "fp64", c, rank_table, c, count=tensors, cuda_flops=3 * e),
        memory("cat", "fp64", c, c, count=tensors),
        memory("stack", "fp64", c, c, count=tensors),
        cast(e, "fp64", "fp32", count=tensors),
    )


@register_recipe("official", "dit", "attention_core")
def _attention_official(
    *,
    act: str,
    leaf: str,
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
) -> tuple[KernelCall, ...]:
    """``flash_attention``: fp32 q and k cast to bf16 (self-attention: k and v first copied by
    ``cat`` over ``k_lens``), the varlen offsets for q and k, the kernel, the output cast to fp32.
    Under a sequence-parallel plan (``sp_ulysses``): :func:`usp_attention`."""
    if sp_ulysses:
        shape = (batch, heads, q_tokens, kv_tokens, head_dim, act_bytes)
        return usp_attention(act, *shape, ulysses=sp_ulysses, ring=sp_ring, xfuser=sp_xfuser)
    q = batch * heads * q_tokens * head_dim
    kv = batch * heads * kv_tokens * head_dim
    self_attention = "self_attn" in leaf
    calls: list[KernelCall] = [cast(q, "fp32", act)]
    if self_attention:
        calls += [
            memory("cat", "fp32", kv * F32, kv * F32),
            memory("cat", act, kv * act_bytes, kv * act_bytes),
        ]
    calls += [cast(kv, "fp32", act), *varlen_offsets(batch), *varlen_offsets(batch)]
    calls += [flash_kernel(batch, heads, q_tokens, kv_tokens, head_dim, act_bytes, act), cast(q, act, "fp32")]
    return tuple(calls)


@register_recipe("official", "dit", "gated_residual")
def _gated_residual_official(
    *, act: str, leaf: str, batch: int, rows: int, dim: int, act_bytes: int
) -> tuple[KernelCall, ...]:
    """``x + y * e`` on the fp32 stream (y: the bf16 output of ``o`` or ``ffn.2``)."""
    e, g = rows * dim, batch * dim * F32
    return (
        memory("mul", "fp32", e * act_bytes, g, e * F32),
        memory("add", "fp32", e * F32, e * F32, e * F32),
    )


@register_recipe("official", "dit", "residual_add")
def _residual_official(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
    """``x + cross_attn(...)``: the fp32 stream plus the fp32 attention output (``o``'s fp32 GEMM
    input came back as bf16: promoted)."""
    return (memory("add", "fp32", elements * F32, elements * act_bytes, elements * F32),)


register_recipe("official", "dit", "gelu_tanh", "gelu")(_pointwise("gelu"))  # type: ignore[arg-type]
register_recipe("official", "dit", "silu")(_pointwise("silu"))  # type: ignore[arg-type]
register_recipe("official", "dit", "layout_copy")(_pointwise("clone"))  # type: ignore[arg-type]
