"""The eager kernels around one rank's attention under a sequence-parallel plan (``docs/parallel.md``,
"The code around each call"), and the flash kernel and varlen offsets both the one-GPU and the
plan recipes of ``eager.py`` launch: the official plans (Wan2.1's xDiT
``xFuserLongContextAttention`` over yunchang's all-to-alls and ring; Wan2.2's own
``distributed_attention``) and diffusers' ``ContextParallelConfig`` hooks, with the merge of each
later ring step (the ``ring_merge`` leaf)."""

from __future__ import annotations

import attrs

from ditmeter.analytic.eager import (
    F32,
    KernelCall,
    attention,
    cast,
    dtype_of,
    memory,
    register_recipe,
)


def flash_kernel(
    batch: int, heads: int, q_tokens: int, kv_tokens: int, head_dim: int, act_bytes: int, act: str = "bf16"
) -> KernelCall:
    """The flash kernel in the 16-bit ``act``: it writes the fp32 log-sum-exp."""
    dtype = dtype_of(act_bytes, act)
    return attention("flash_attention", dtype, batch, heads, q_tokens, kv_tokens, head_dim, lse=True)


def varlen_offsets(batch: int) -> tuple[KernelCall, ...]:
    """``torch.tensor([l] * b).to(device)`` and ``cat([zeros, lens]).cumsum(0)``: tiny, host-bound."""
    n = batch * 4
    return (
        memory("h2d_copy", "i32", n, n),
        memory("new_zeros", "i32", 4),
        memory("cat", "i32", 4, n, n + 4),
        memory("cumsum", "i32", n + 4, n + 4),
    )


def ring_calls(
    act: str, batch: int, heads: int, q_tokens: int, kv_tokens: int, head_dim: int, act_bytes: int, ring: int
) -> tuple[int, KernelCall]:
    """(E, the flash kernels) of a rank's self-attention leaf under a plan: its ``heads`` count the
    rank's heads once per ring call, so each of the ``ring`` kernels runs heads / ring of them and
    E = the rank's q elements."""
    per_call = heads // ring
    flash = flash_kernel(batch, per_call, q_tokens, kv_tokens, head_dim, act_bytes, act)
    return batch * per_call * q_tokens * head_dim, attrs.evolve(flash, count=ring)


def cp_attention(
    act: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
    ulysses: int,
    ring: int,
) -> tuple[KernelCall, ...]:
    """One rank's attention under diffusers' ``ContextParallelConfig`` (``heads``: its heads × the
    ``ring`` calls; E its q elements, lse = E / head_dim fp32), as its launches were captured under
    the fake process group (``tests/test_parallel_trace.py`` checks them exactly at several
    degrees): 4 copies of E per ring call and 5 more with Ulysses (the layouts around its
    all-to-alls), one copy of each call's log-sum-exp, one flash kernel per ring call; with a ring,
    ``cat(K, V)`` before the all-gather, each call's output cast to fp32 and the result back. The
    merges of later ring steps: the ``ring_merge`` leaf."""
    e, flash = ring_calls(act, batch, heads, q_tokens, kv_tokens, head_dim, act_bytes, ring)
    lse = e // head_dim * F32
    ab = e * act_bytes
    calls: list[KernelCall] = [
        memory("clone", act, ab, ab, count=4 * ring + (5 if ulysses > 1 else 0)),
        memory("clone", "fp32", lse, lse, count=ring),
        flash,
    ]
    if ring > 1:
        calls += [memory("cat", act, 2 * ab, 2 * ab), cast(e, act, "fp32", count=ring), cast(e, "fp32", act)]
    return tuple(calls)


def xdit_attention(
    act: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
    ulysses: int,
    ring: int,
) -> tuple[KernelCall, ...]:
    """One rank's attention, self or cross, under xDiT 0.4.5's ``USP`` patched onto the diffusers
    modules (``parallel.runtime=xdit``; ``xFuserWanAttnProcessor`` calls ``USP(q, k, v)`` with the
    [batch, heads, tokens, head_dim] transposes of its [batch, tokens, heads, head_dim] tensors).
    Read from xDiT 0.4.5 ``xfuser/model_executor/layers/usp.py`` and torch 2.8's
    ``_templated_ring_attention`` (the version the ML.ENERGY benchmark installs; torch 2.13 reads
    the same), not captured: xDiT is not installed here. ``heads``: the rank's heads × the
    ``ring`` calls; E = the rank's q elements (one call's), K = one call's k elements.

    Ulysses (``_ft_c_input_all_to_all``): each of q, k and v is made contiguous head-major before
    its all-to-all (a copy) and reshaped after it (a copy unless batch × the rank's heads is 1);
    flash writes its output in q's layout (``empty_like(q)``: head-major after the all-to-all), so
    the output's sequence-major ``contiguous()`` before its all-to-all is a copy, its reshape after
    it another and the processor's ``flatten(2, 3)`` of its transpose a third. Ring
    (``_templated_ring_attention``, its all-gather rotater): ``key.contiguous()`` and
    ``value.contiguous()`` copy the transposed views when no all-to-all made them contiguous;
    every step but the last builds ``cat([k.flatten(), v.flatten()])`` (only the first is
    all-gathered); one flash kernel per step (``flash_attn_func``: the permuted views keep a unit
    last stride, no copy); each step's output cast to fp32 (``convert_to_f32``) and the merged
    result back. The merges of later steps: the ``ring_merge`` leaf (the same ops as diffusers').
    Checked by a second reading of the code (flash-attn 2.8.1's ``empty_like(q)``; the permute and
    reshape chains run on CPU tensors). Not costed: the ring's all-gather is issued before the first
    step's flash call and waited for at the second (it can hide under 1/R of the attention; costed
    exposed), and at batch > 1 the context chunk is a non-contiguous view (two small copies)."""
    e, flash = ring_calls(act, batch, heads, q_tokens, kv_tokens, head_dim, act_bytes, ring)
    k = batch * (heads // ring) * kv_tokens * head_dim
    ab, kb = e * act_bytes, k * act_bytes
    calls: list[KernelCall] = []
    if ulysses > 1:
        reshaped = 2 if batch * (heads // ring) > 1 else 1  # the copies around each input all-to-all
        calls.append(memory("clone", act, ab, ab, count=reshaped))
        calls.append(memory("clone", act, kb, kb, count=2 * reshaped))
    elif ring > 1:
        calls.append(memory("clone", act, kb, kb, count=2))
    if ring > 1:
        calls.append(memory("cat", act, 2 * kb, 2 * kb, count=ring - 1))
    calls.append(flash)
    if ring > 1:
        calls += [cast(e, act, "fp32", count=ring), cast(e, "fp32", act)]
    if ulysses > 1:
        calls.append(memory("clone", act, ab, ab, count=3))
    return tuple(calls)


def usp_attention(
    act: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    act_bytes: int,
    *,
    ulysses: int,
    ring: int,
    xfuser: bool,
) -> tuple[KernelCall, ...]:
    """One rank's self-attention call under the official plans, batch 1 (``heads`` = its heads ×
    the ``ring`` calls; E = the rank's q elements, L·H·D / (U·R)). Both first cast the fp32 q and k
    (``rope_apply`` returns fp32) to bf16 (``half``; v is bf16 already).

    ``xfuser`` (Wan2.1: ``xFuserLongContextAttention`` over yunchang's ``SeqAllToAll4D``, read at
    xDiT b2fea6f and yunchang 0.6.0, the same at their heads): with Ulysses the permute before
    each input all-to-all is a copy (3 × E); the ring function runs even at ring 1 and casts its
    first block's output to fp32 and the result back (2 × E); both permutes of the output
    all-to-all copy (2 × E) at every degree. The merges of later ring steps: the ``ring_merge``
    leaf.

    ``wan`` (Wan2.2's ``distributed_attention``, ``wan/distributed/util.py`` ``all_to_all``): each
    input's ``ulysses`` head chunks made contiguous then ``cat`` along the sequence (2 × E each);
    ``flash_attention`` as on one GPU with bf16 inputs (its ``cat`` of k and v over ``k_lens``, no
    casts left, the output already bf16); the output's sequence chunks are contiguous, its ``cat``
    along the heads one copy (E)."""
    e, flash = ring_calls(act, batch, heads, q_tokens, kv_tokens, head_dim, act_bytes, ring)
    kv = batch * heads * kv_tokens * head_dim
    ab = e * act_bytes
    calls: list[KernelCall] = [cast(e, "fp32", act, count=2)]  # half(q), half(k)
    if xfuser:
        if ulysses > 1:
            calls.append(memory("clone", act, ab, ab, count=3))
        calls += [flash, cast(e, act, "fp32"), cast(e, "fp32", act), memory("clone", act, ab, ab, count=2)]
        return tuple(calls)
    if ulysses > 1:
        calls += [memory("clone", act, ab // ulysses, ab // ulysses, count=3 * ulysses)]
        calls += [memory("cat", act, ab, ab, count=3)]
    calls += [memory("cat", act, kv * act_bytes, kv * act_bytes, count=2), *varlen_offsets(batch)]
    calls += [*varlen_offsets(batch), flash]
    if ulysses > 1:
        calls.append(memory("cat", act, ab, ab))
    return tuple(calls)


@register_recipe("official", "dit", "ring_merge")
def _ring_merge_official(
    *, act: str, leaf: str, elements: int, steps: int, head_dim: int, act_bytes: int
) -> tuple[KernelCall, ...]:
    """yunchang's ``_update_out_and_lse`` per later ring step (E = ``elements`` / ``steps``; the
    log-sum-exp E / ``head_dim``, fp32). It is ``@torch.jit.script``: after its profiling runs the
    TensorExpr fuser, on by default for CUDA (``torch._C._jit_texpr_fuser_enabled()``), fuses
    ``out - sigmoid(block_lse - lse) * (out - block_out)`` with the cast of the bf16 block output
    into one kernel (reads out and block_out, writes out); ``log_sigmoid`` is outside NNC's
    element-wise set, so ``lse - log_sigmoid(lse - block_lse)`` stays three small kernels. Assumed
    from those defaults, not profiled (no GPU)."""
    e = elements // steps
    lse = e // head_dim * F32
    return (
        memory("fused_update_out", "fp32", e * F32, e * 2, 2 * lse, e * F32, count=steps),
        memory("sub", "fp32", lse, lse, lse, count=steps),
        memory("log_sigmoid_forward", "fp32", lse, lse, count=steps),
        memory("sub", "fp32", lse, lse, lse, count=steps),
    )


@register_recipe("diffusers", "dit", "ring_merge")
def _ring_merge_diffusers(
    *, act: str, leaf: str, elements: int, steps: int, head_dim: int, act_bytes: int
) -> tuple[KernelCall, ...]:
    """diffusers' ring merge per later step, op by op as captured (E = ``elements`` / ``steps``
    fp32, lse = E / ``head_dim``): ``sigmoid`` and ``log_sigmoid`` of the log-sum-exp difference,
    three small ``sub``, and ``out - sigmoid(..) * (out - block_out)`` as two large ``sub`` and a
    ``mul``."""
    e = elements // steps * F32
    lse = elements // steps // head_dim * F32
    return (
        memory("sigmoid", "fp32", lse, lse, count=steps),
        memory("log_sigmoid_forward", "fp32", lse, lse, lse, count=steps),
        memory("sub", "fp32", lse, lse, lse, count=3 * steps),
        memory("sub", "fp32", e, e, e, count=2 * steps),
        memory("mul", "fp32", e, lse, e, count=steps),
    )
