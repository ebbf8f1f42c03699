"""The eager kernels of the Wan-VAE (decode and encode), leaf by leaf.

Like :mod:`ditmeter.models.wan21.eager` (the DiT), each recipe is a function of a leaf's dims.
Checked against the ops of the real modules in ``tests/test_eager_stages.py`` (the decoder's mid
block and first up block, diffusers' and the official ``vae2_1.py``, one decoder call).

**vae_decode / vae_encode** (fp32 in both; the official ``autocast(dtype=float32)`` changes
nothing): both codes run the same ops: every causal conv is ``F.pad`` (a copy) and the conv,
RMSNorm is ``F.normalize`` (norm, clamp, div) × scale × gamma + 0, the cache keeps the last
frames by ``clone``; the 2-D convs (resample, attention projections) pad inside the kernel.

Per call (the VAE runs once per latent frame, the encoder once per 4 frames): each leaf carries
every call's dims (``Leaf.runs``, :mod:`ditmeter.models.wan21.vae`), the first call's, the
second's (each causal cache holds the one frame the first left) and the later calls' (two
frames), and a leaf several ops feed (a resnet's two SiLUs and its two cache updates) has one
entry per op.
"""

from __future__ import annotations

from ditmeter.analytic.eager import (
    EAGER_DTYPE_BYTES,
    KernelCall,
    attention,
    dtype_of,
    memory,
    register_recipe,
)
from ditmeter.models.wan21.eager_encoders import _add, _conv

# ---- Wan-VAE (decode and encode; fp32) --------------------------------------------------------

_PADDED_IN_KERNEL = ("resample.1", "to_qkv", "proj")


def _vae_conv(
    *,
    act: str,
    leaf: str,
    outputs: int,
    in_channels: int,
    out_channels: int,
    kernel_volume: int,
    inputs: int,
    bias: int,
    act_bytes: int,
    weight_el_bytes: int,
    cache_elements: int = 0,
    input_elements: int = 0,
) -> tuple[KernelCall, ...]:
    """A ``CausalConv3d``: on a later call its cache (``cache_elements`` positions) concatenated in
    front of the input (``cat``), then ``F.pad`` (the unpadded input in, the padded one out: the
    time padding less the cached frames), then the conv over the padded input. The 2-D convs
    (resample, the attention's 1×1) pad inside the kernel; the encoder's stride-2 resample reads
    the ``ZeroPad2d`` copy (its own leaf). A time conv with no outputs has not run (the first call
    skips it)."""
    if outputs == 0:
        return ()
    dtype = dtype_of(act_bytes, act)
    conv = _conv(dtype, inputs, in_channels, out_channels, kernel_volume, outputs, bias)
    if leaf.endswith(_PADDED_IN_KERNEL):
        if leaf.startswith("decoder") or kernel_volume == 1:  # same-size: reads the unpadded input
            conv = _conv(dtype, outputs, in_channels, out_channels, kernel_volume, outputs, bias)
        return (conv,)
    b = EAGER_DTYPE_BYTES[dtype]
    unpadded = input_elements or outputs  # a same-size conv's input: as many positions as it outputs
    joined = (unpadded + cache_elements) * in_channels * b  # the cache and the input, one tensor
    cat = (memory("cat", dtype, joined, joined),) if cache_elements else ()
    return (*cat, memory("constant_pad_nd", dtype, joined, inputs * in_channels * b), conv)


def _vae_rms_norm(
    *, act: str, leaf: str, rows: int, dim: int, act_bytes: int, weight_el_bytes: int
) -> tuple[KernelCall, ...]:
    """``F.normalize(x, dim=1) * scale * gamma + 0.``: the norm over channels, ``clamp_min``, the
    division by the expanded norm (counted at x's size), ×√dim, ×gamma, +0."""
    e, b = rows * dim, act_bytes
    dtype = dtype_of(b, act)
    return (
        memory("linalg_vector_norm", dtype, e * b, rows * b),
        memory("clamp_min", dtype, rows * b, rows * b),
        memory("div", dtype, e * b, e * b, e * b),
        memory("mul", dtype, e * b, e * b),
        memory("mul", dtype, e * b, dim * weight_el_bytes, e * b),
        memory("add", dtype, e * b, e * b),
    )


def _vae_silu(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
    """One SiLU (a resnet's leaf is called twice per decoder call: before each conv)."""
    dtype = dtype_of(act_bytes, act)
    return (memory("silu", dtype, elements * act_bytes, elements * act_bytes),)


def _vae_layout_copy(
    *,
    act: str,
    leaf: str,
    elements: int,
    act_bytes: int,
    cloned: bool = False,
    joined: int = 0,
    zeros: int = 0,
    stacked: bool = False,
    padded: int = 0,
    averaged: int = 0,
    chunks: int = 0,
    chunk: int = 0,
) -> tuple[KernelCall, ...]:
    """A causal cache's update (``cloned``: ``x[:, :, -2:].clone()``, then a one-frame clone joined
    by ``cat`` to the previous call's last frame, or to ``zeros_like`` after the upsampler's ``Rep``),
    the upsampler's ``torch.stack`` of its two time halves (``stacked``), the nearest 2× upsample
    (``resample.0`` of the decoder; the encoder's ``ZeroPad2d`` copy), the output ``cat``; a
    single-frame ``reshuffle`` is a view."""
    dtype, b = dtype_of(act_bytes, act), act_bytes
    if cloned:
        # ``zeros_like(x)`` keyed as the capture keys it (x's bytes beside the written zeros)
        zero = (memory("zeros_like", dtype, zeros * b, zeros * b),) if zeros else ()
        cat = (memory("cat", dtype, joined * b, joined * b),) if joined else ()
        return (memory("clone", dtype, elements * b, elements * b), *zero, *cat)
    if stacked:
        return (memory("stack", dtype, elements * b, elements * b),)
    if leaf.endswith("resample.0"):
        if leaf.startswith("decoder"):
            return (memory("_upsample_nearest_exact2d", dtype, elements // 4 * b, elements * b),)
        return (memory("constant_pad_nd", dtype, elements * b, (padded or elements) * b),)
    if leaf.endswith("reshuffle"):
        return ()
    if chunks:  # out = cat([out, chunk]) per call: the c-th reads and writes first + c·chunk
        return _concats(dtype, b, elements, chunks, chunk)
    if leaf.endswith((".copy", "unpatchify", "patchify")):  # Wan2.2: a block input's clone; a permute
        return (memory("clone", dtype, elements * b, elements * b),)
    if averaged:  # Wan2.2's AvgDown3D: the time pad, the permuted copy, the mean over each group
        # (the last block's factor 1 permutes nothing: ``contiguous()`` returns the padded tensor)
        permuted = (memory("clone", dtype, padded * b, padded * b),) if averaged < padded else ()
        return (
            memory("constant_pad_nd", dtype, elements * b, padded * b),
            *permuted,
            memory("mean", dtype, padded * b, averaged * b),
        )
    if leaf.endswith("avg_shortcut") and leaf.startswith("decoder"):  # DupUp3D: the repeat, the permute
        n = elements // 2
        return (memory("clone", dtype, n * b, n * b, count=2),)
    return (memory("cat", dtype, elements * b, elements * b),)


#: Above this many calls the output's concatenations are one launch count at their mean size (the
#: bytes exact; a workload this long is far past any published run).
MAX_LAID_OUT_CALLS = 4096


def _concats(dtype: str, b: int, elements: int, chunks: int, chunk: int) -> tuple[KernelCall, ...]:
    """The ``chunks`` ``cat`` kernels of a VAE's per-call output (``elements`` copied in all)."""
    first = (elements - chunk * chunks * (chunks + 1) // 2) // chunks
    if chunks > MAX_LAID_OUT_CALLS:
        mean = elements * b // chunks
        return (memory("cat", dtype, mean, mean, count=chunks),)
    return tuple(
        memory("cat", dtype, (first + c * chunk) * b, (first + c * chunk) * b) for c in range(1, chunks + 1)
    )


def _vae_add(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
    return _add(elements, dtype_of(act_bytes, act))


def _vae_attention(
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
    """The mid block's single head: ``.contiguous()`` of the permuted q, k, v, then SDPA in fp32
    (the memory-efficient kernel, no log-sum-exp without grad)."""
    dtype = dtype_of(act_bytes, act)
    qkv = 3 * batch * q_tokens * head_dim * act_bytes
    core = attention("efficient_attention", dtype, batch, heads, q_tokens, kv_tokens, head_dim, lse=False)
    return (memory("clone", dtype, qkv, qkv), core)


def _vae_clamp(op: str) -> object:
    def recipe(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
        """The output clamped to [-1, 1] (official: ``clamp_`` in place)."""
        b = elements * act_bytes
        return (memory(op, dtype_of(act_bytes, act), b, b),)

    return recipe


def _vae_blend(*, act: str, leaf: str, slices: int, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
    """diffusers' ``blend_v`` / ``blend_h``: per row or column two ``mul``, an ``add`` and the
    ``copy_`` into the tile (``models/wan21/vae_tiling.py``)."""
    b = elements * act_bytes
    dtype = dtype_of(act_bytes, act)
    return (
        memory("mul", dtype, b, b, count=2 * slices),
        memory("add", dtype, b, b, b, count=slices),
        memory("copy_", dtype, b, b, count=slices),
    )


def _vae_posterior(*, act: str, leaf: str, elements: int, act_bytes: int) -> tuple[KernelCall, ...]:
    """``DiagonalGaussianDistribution``: ``logvar.clamp``, ``exp(0.5 * logvar)``, ``exp(logvar)``."""
    b = elements * act_bytes
    dtype = dtype_of(act_bytes, act)
    return (memory("clamp", dtype, b, b), memory("mul", dtype, b, b), memory("exp", dtype, b, b, count=2))


for _flavour in ("official", "diffusers"):
    for _stage in ("vae_decode", "vae_encode"):
        _register = register_recipe(_flavour, _stage, "conv")  # type: ignore[arg-type]
        _register(_vae_conv)
        register_recipe(_flavour, _stage, "rms_norm")(_vae_rms_norm)  # type: ignore[arg-type]
        register_recipe(_flavour, _stage, "silu")(_vae_silu)  # type: ignore[arg-type]
        register_recipe(_flavour, _stage, "layout_copy")(_vae_layout_copy)  # type: ignore[arg-type]
        register_recipe(_flavour, _stage, "residual_add")(_vae_add)  # type: ignore[arg-type]
        register_recipe(_flavour, _stage, "attention_core")(_vae_attention)  # type: ignore[arg-type]
    clamp = _vae_clamp("clamp_" if _flavour == "official" else "clamp")
    register_recipe(_flavour, "vae_decode", "clamp")(clamp)  # type: ignore[arg-type]
    register_recipe(_flavour, "vae_decode", "tile_blend")(_vae_blend)  # type: ignore[arg-type]
    register_recipe(_flavour, "vae_encode", "gaussian_posterior")(_vae_posterior)  # type: ignore[arg-type]
