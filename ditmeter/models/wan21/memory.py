"""Memory of the Wan2.1 DiT while it runs: weights by dtype and the peak live activations of one forward.

The live set is the diffusers port's, read from its tensor lifetimes
(``ditmeter.tracer.memory`` on the real module, flash attention) and checked
against them (tests/test_memory.py, and ``trace``'s memory gate). With
``rows = batch × tokens``, ``a`` the activation bytes and ``r`` the residual
stream's bytes::

    persistent = rows·dim·r (the block input the caller holds)
               + 2·tokens·head_dim·4 (RoPE cos and sin, fp32)
               + batch·(context + 2·image tokens)·dim·a (the text + image context concatenation,
                 and the image embedding it was made from)
               + batch·dim·(6·4 + 6·a + a) (modulation table, time projection, time embedding)
    self-attention q/k norm = rows·dim·(a + 3·a + 3·4) + rows·4
        (norm1 output; q, k, v; the fp32 input, normalised and scaled copies inside
        RMSNorm-across-heads; its rsqrt)
    cross-attention q norm = rows·dim·(a + r + a + a + 3·4) + rows·4 + 2·batch·context·dim·a
        (self-attention output, the new residual, norm2 output, q; the same RMSNorm set; text K, V)
    cross-attention k norm = rows·dim·(a + r + a + a) + 2·batch·context·dim·a
                           + text_rows·(dim·3·4 + 4)
        (the same with q normalised; the RMSNorm set over the text rows: it sets the peak
        when the video has fewer tokens than the context)
    image k norm (I2V, FLF2V) = the same + 2·batch·image_tokens·dim·a + image_rows·(dim·3·4 + 4)
        (the image K and V projections, the RMSNorm set over the image rows)
    FFN = rows·(2·ffn_dim·a + dim·(a + r + a))
        (up-projection and GELU outputs; cross-attention output, the residual, norm3 output)
    peak = persistent + max(phases)

NB: the official code keeps the residual stream in fp32 (``r`` = 4) and runs
its own block code under autocast; its live set is taken to be the port's with
that residual dtype (the official modules are not on PyPI to measure). Not
counted: weights (listed apart), the caching allocator, workspaces.
"""

from __future__ import annotations

from ditmeter.analytic.cost import DTYPE_BYTES, FP32_BYTES
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.memory import Footprint, weights_by_dtype
from ditmeter.analytic.tree import Node
from ditmeter.analytic.workload import Workload
from ditmeter.models.wan21 import vae_tiling
from ditmeter.models.wan21.semantics import SEMANTICS
from ditmeter.models.wan21.spec import ClipSpec, UMT5Spec, WanModelSpec


def dit_footprint(
    m: WanModelSpec,
    w: Workload,
    g: Geometry,
    dit: Node,
    residual_dtype: str | None = None,
    tokens: int | None = None,
    per_token: str | None = None,
    time_tokens: int | None = None,
) -> Footprint:
    """Weights by dtype of the DiT tree ``dit`` and its peak live activations (module docstring),
    the residual stream in ``residual_dtype`` (default: the pipeline's); ``tokens`` the video
    tokens one rank holds under sequence parallelism (default: all; the RoPE tables stay whole).

    ``per_token`` (Wan2.2's per-token timesteps, as ``official`` or ``diffusers`` runs them): the
    time embedding [tokens, dim] and its projection [tokens, 6, dim] are kept for the whole
    forward (official in fp32, diffusers in the activation dtype, for ``time_tokens``: by default
    every token of the sequence, under a plan what ``SequenceShard.time_tokens`` says), and every
    block holds its modulation table added to them, [tokens, 6, dim] in
    fp32, through the block; diffusers first casts the projection to fp32 (a second such tensor
    while the block starts: the ``modulation`` phase)::

        persistent += batch·L·dim·7·kept − batch·dim·(6·4 + 6·a + a)  (the per-sample vectors go)
        every phase += rows·6·dim·4
        modulation   = rows·6·dim·4 · (2 diffusers, 1 official)
    """
    a, f32 = w.act_bytes, FP32_BYTES
    r = DTYPE_BYTES[residual_dtype or SEMANTICS[w.pipeline].residual_dtype or w.dtype]
    b, rows, dim = w.dit_batch, w.dit_batch * (tokens or g.tokens), m.dim
    text_rows, image_rows = b * g.context_len, b * m.image_tokens
    text, image = text_rows * dim * a, image_rows * dim * a
    persistent = (
        rows * dim * r
        + 2 * g.tokens * m.head_dim * f32
        + text
        + 2 * image  # the image context, and the text + image concatenation
        + b * dim * (6 * f32 + 6 * a + a)
    )
    held = rows * dim * (3 * a + r)  # self-attention output, residual, norm2 output, q

    def rms_norm(n: int) -> int:  # the fp32 input, normalised and scaled copies, and the rsqrt
        return n * (dim * 3 * f32 + f32)

    stages = {
        "self_attention": rows * dim * 4 * a + rms_norm(rows),
        "cross_attention": held + rms_norm(rows) + 2 * text,
        "cross_attention_k_norm": held + 2 * text + rms_norm(text_rows),
    }
    if image_rows:
        stages["image_k_norm"] = held + 2 * text + 2 * image + rms_norm(image_rows)
    stages["ffn"] = rows * (2 * m.ffn_dim * a + dim * (2 * a + r))
    if per_token is not None:
        kept = f32 if per_token == "official" else a
        persistent += b * (time_tokens or g.tokens) * dim * 7 * kept - b * dim * (6 * f32 + 6 * a + a)
        table = rows * 6 * dim * f32
        stages = {name: value + table for name, value in stages.items()}
        stages["modulation"] = table * (1 if per_token == "official" else 2)
    return Footprint(weights_by_dtype(dit, w.dtype), persistent, stages)


def stage_activation_bytes(m: WanModelSpec, w: Workload, g: Geometry, dit: Footprint) -> dict[str, int]:
    """Peak live activations of one run of every stage (bytes)."""
    b = w.batch_size
    out = {"text_encoder": umt5_activation_bytes(m.text_encoder, b, m.text_len)}
    if m.image_encoder is not None:
        out["image_encoder"] = clip_activation_bytes(m.image_encoder, b * m.images)
    rules = m.vae_rules()
    if m.images:
        video = (m.conditioning_frames(g.effective_frames), g.effective_height, g.effective_width)
        out["vae_encode"] = rules.encode_bytes(m.vae, b, *video)
    out["dit"] = dit.peak_activation_bytes
    if w.vae_tiling and vae_tiling.tiled(*g.latent_shape[1:]):
        out["vae_decode"] = vae_tiling.tiled_decode_bytes(m.vae, b, *g.latent_shape)
    else:
        out["vae_decode"] = rules.decode_bytes(m.vae, b, *g.latent_shape)
    return out


def reference_activation_bytes(m: WanModelSpec, w: Workload, g: Geometry, dit: Node) -> dict[str, int]:
    """The peak live activations each stage's reference module shows as the tracer runs it: the
    encoders as the pipeline runs them; the diffusers DiT in the workload dtype throughout (its
    residual stream too, where the official code keeps fp32)."""
    per_token = "diffusers" if m.per_token_timesteps(w.pipeline) else None  # diffusers code, as fed
    reference = dit_footprint(m, w, g, dit, residual_dtype=w.dtype, per_token=per_token)
    return stage_activation_bytes(m, w, g, reference)


def umt5_activation_bytes(spec: UMT5Spec, batch: int, tokens: int) -> int:
    """Peak live activations of one transformers ``UMT5EncoderModel`` encode (bytes).

    ``rows = batch × tokens``, ``inner = heads × d_kv``, ``a`` the encoder's dtype::

        persistent = 2·rows·d_model·a (the embedding output, the residual stream)
        attention  = 4·rows·d_model·a (norm out, q, k, v) + 4·rows·inner·4 (q, k, v and the
                     scaled q in fp32) + 2·tokens²·heads·a (the layer's relative position bias and
                     its copy) + 2·batch·heads·tokens²·4 (scores, scores + bias: fp32, eager)
        FFN        = 2·rows·d_model·a (residual, norm out) + 3·rows·d_ff·a (gated GELU: wi_0
                     activation, wi_1, product)
    """
    a, f32 = DTYPE_BYTES[spec.dtype], FP32_BYTES
    rows, d, heads = batch * tokens, spec.d_model, spec.num_heads
    inner = heads * spec.d_kv
    attention = (
        4 * rows * d * a
        + 4 * rows * inner * f32
        + 2 * tokens * tokens * heads * a
        + 2 * batch * heads * tokens * tokens * f32
    )
    ffn = 2 * rows * d * a + 3 * rows * spec.d_ff * a
    return 2 * rows * d * a + max(attention, ffn)


def clip_activation_bytes(spec: ClipSpec, images: int) -> int:
    """Peak live activations of one transformers ``CLIPVisionModel`` encode (bytes), flash attention.

    ``rows = images × tokens``; the MLP of the last layer run sets the peak::

        kept = layers_run when every hidden state is returned (diffusers takes hidden_states[-2]),
               else 2 (the pre-norm output and the residual stream)
        peak = rows·hidden·a·(kept + 2) (+ the attention residual and norm2 output)
             + 2·rows·intermediate·a (fc1 and GELU outputs)
    """
    a = DTYPE_BYTES[spec.dtype]
    rows = images * spec.tokens
    kept = spec.layers_run if spec.layers_run == spec.num_hidden_layers else 2
    return rows * spec.hidden_size * a * (kept + 2) + 2 * rows * spec.intermediate_size * a
