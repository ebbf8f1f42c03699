"""The Wan2.1 diffusion transformer as a tree of costed modules.

Module ids follow the official Wan2.1 code (``blocks.7.self_attn.q``); the
diffusers names are mapped onto them by ``DIT_NAMES`` in :mod:`ditmeter.models.wan21.names`.
Ops the official code runs inline (modulate, gated residuals, RoPE, the
attention core, unpatchify) get ids of their own under the module that runs them.

Activation dtypes follow the diffusers port (the reference we trace); weights
are in the pipeline's DiT weight dtype (official: fp32 checkpoints under bf16
autocast; diffusers: the workload dtype) except the modules ``WanTransformer3DModel._keep_in_fp32_modules``
keeps in fp32 (time embedder, modulation tables, affine norms); the time
embedding and the modulation arithmetic run in fp32; casts back to the
activation dtype are fused into the op that produces them.
"""

from __future__ import annotations

import math

import attrs

from ditmeter.analytic import rules as _rules  # noqa: F401  (registers the rules)
from ditmeter.analytic.cost import DTYPE_BYTES, FP32_BYTES
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.registry import apply_rule
from ditmeter.analytic.tree import Composite, Leaf, Repeated, rule_leaf
from ditmeter.analytic.workload import Workload
from ditmeter.models.wan21 import eager as _eager  # noqa: F401  (registers the eager recipes)
from ditmeter.models.wan21 import eager_encoders as _eager_encoders  # noqa: F401
from ditmeter.models.wan21 import eager_i2v as _eager_i2v  # noqa: F401
from ditmeter.models.wan21 import eager_vae as _eager_vae  # noqa: F401
from ditmeter.models.wan21.semantics import SEMANTICS
from ditmeter.models.wan21.spec import WanModelSpec as ModelSpec


@attrs.frozen
class _Dims:
    """The integers every rule below needs, derived once."""

    batch: int
    rows: int  # video token rows: batch × L
    ctx_rows: int  # context rows: batch × context_len
    tokens: int
    dim: int
    heads: int
    head_dim: int
    act: int  # activation bytes per element
    w: int  # weight bytes per element (workload dtype)
    img_rows: int = 0  # CLIP context rows: batch × image_tokens (0 for T2V)
    img_tokens: int = 0
    # One rank's self-attention core under sequence parallelism (``SequenceShard``): heads × calls,
    # queries and keys per call; 0: the whole sequence (heads, tokens, tokens).
    sa_heads: int = 0
    sa_calls: int = 1
    sa_q: int = 0
    sa_kv: int = 0
    out_rows: int = 0  # rows unpatchify reorders (after the output gather); 0: ``rows``
    # Per-token timesteps (Wan2.2): the time embedding and projection run on ``t_rows`` = batch ×
    # tokens rows and every modulation vector is per token; False: one per sample (Wan2.1).
    per_token: bool = False
    t_rows: int = 0
    # Whose sequence-parallel code the self-attention runs (``SequenceShard.code``): the eager
    # kernels around the call
    sp_code: str = ""
    # The official sequence-parallel ``rope_apply`` (``sp_code`` xfuser or wan) builds the RoPE
    # table for the whole grid, batch × f·h·w rows, then pads it to ``out_rows`` (``pad_freqs``)
    table_rows: int = 0
    # The text context split this many ways (``SequenceShard.context_split``; 1: whole on every rank)
    ctx_split: int = 1

    @property
    def vectors(self) -> int:
        """Modulation vectors of a block or the head: one per token, or one per sample."""
        return self.rows if self.per_token else self.batch

    @property
    def time_rows(self) -> int:
        """Rows of the time embedding and projection."""
        return self.t_rows or self.batch


@attrs.frozen
class SequenceShard:
    """One rank's share of a DiT forward under sequence parallelism (``models/wan21/parallel.py``).

    ``tokens`` video tokens per rank (the padded sequence / degree) run every per-token leaf of
    the blocks and the head. The self-attention core runs ``calls`` kernel calls of ``heads``
    heads, ``q_tokens`` queries against ``kv_tokens`` keys each; it is costed as one leaf of
    heads × calls heads (the same FLOPs and the traffic of re-reading the queries each call).
    The embeddings and RoPE tables run on the whole sequence (every rank repeats them) and
    unpatchify on the gathered ``full_tokens``. ``time_tokens``: the tokens per-token timesteps
    are embedded for (Wan2.2; official: the whole padded sequence on every rank, diffusers: the
    rank's share, its timesteps split at the model's input; 0: the unsplit sequence).
    """

    tokens: int
    heads: int
    calls: int
    q_tokens: int
    kv_tokens: int
    full_tokens: int
    time_tokens: int = 0
    #: whose code the self-attention runs under the plan, for its eager kernels: ``xfuser``
    #: (Wan2.1's official USP: xDiT's ``xFuserLongContextAttention``, yunchang's all-to-alls and
    #: ring), ``wan`` (Wan2.2's own ``distributed_attention``), ``diffusers`` (its own hooks),
    #: ``xdit`` (xDiT 0.4.5's ``USP`` patched onto the diffusers modules, ``parallel.runtime=xdit``)
    code: str = ""
    #: The text context split this many ways, each rank projecting the K and V of its chunk and its
    #: cross-attention going through the plan's all-to-alls and ring like the self-attention's
    #: (``xdit``: ``torch.chunk`` of the 512 context tokens over the sequence-parallel group); 1:
    #: whole on every rank, the cross-attention local
    context_split: int = 1


def _linear(
    name: str,
    category: str,
    d: _Dims,
    *,
    rows: int,
    fan_in: int,
    fan_out: int,
    act: int | None = None,
    w: int | None = None,
) -> Leaf:
    return rule_leaf(
        name,
        category,
        "linear",
        tokens=rows,
        in_features=fan_in,
        out_features=fan_out,
        bias=True,
        act_bytes=act or d.act,
        weight_el_bytes=w or d.w,
    )


def _fp32_norm(name: str, category: str, d: _Dims) -> Leaf:
    """Non-affine ``FP32LayerNorm`` over all video rows; its fp32 output feeds a modulate."""
    return rule_leaf(
        name,
        category,
        "layer_norm",
        rows=d.rows,
        dim=d.dim,
        affine=False,
        in_bytes=d.act,
        out_bytes=FP32_BYTES,
        weight_el_bytes=FP32_BYTES,
    )


def _modulate(name: str, category: str, d: _Dims) -> Leaf:
    """x·(1 + scale) + shift in fp32, cast back to the activation dtype."""
    return rule_leaf(
        name,
        category,
        "modulate",
        batch=d.vectors,
        rows=d.rows,
        dim=d.dim,
        in_bytes=FP32_BYTES,
        out_bytes=d.act,
    )


def _attention(name: str, d: _Dims, *, kv_rows: int, kv_tokens: int, self_attn: bool) -> Composite:
    """q, k, v, o with RMSNorm on q and k over the whole dim; RoPE on self-attention only.

    I2V/FLF2V cross-attention also projects the CLIP tokens (``k_img``, ``v_img``,
    ``norm_k_img``) and attends to them beside the text (one core leaf for both).
    """
    dim = d.dim
    norm = {"dim": dim, "act_bytes": d.act, "weight_el_bytes": d.w}
    children: list[Leaf] = [
        _linear("q", "attn_proj", d, rows=d.rows, fan_in=dim, fan_out=dim),
        _linear("k", "attn_proj", d, rows=kv_rows, fan_in=dim, fan_out=dim),
        _linear("v", "attn_proj", d, rows=kv_rows, fan_in=dim, fan_out=dim),
        rule_leaf("norm_q", "norm_mod", "rms_norm", rows=d.rows, **norm),
        rule_leaf("norm_k", "norm_mod", "rms_norm", rows=kv_rows, **norm),
    ]
    image = not self_attn and d.img_rows > 0
    if image:
        children += [
            _linear("k_img", "attn_proj", d, rows=d.img_rows, fan_in=dim, fan_out=dim),
            _linear("v_img", "attn_proj", d, rows=d.img_rows, fan_in=dim, fan_out=dim),
            rule_leaf("norm_k_img", "norm_mod", "rms_norm", rows=d.img_rows, **norm),
        ]
    if self_attn:
        table = {"table_rows": d.table_rows, "padded_rows": d.out_rows} if d.table_rows else {}
        children.append(
            rule_leaf(
                "rope",
                "rope",
                "rope",
                tensors=2,
                rows=d.rows,
                heads=d.heads,
                head_dim=d.head_dim,
                act_bytes=d.act,
                table_bytes=FP32_BYTES,
                **table,
            )
        )
    # a split context (xDiT's patch) sends the cross-attention through the plan like the self-attention
    planned = self_attn or d.ctx_split > 1
    whole = not planned or not d.sa_heads
    core: dict[str, int | bool] = {
        "batch": d.batch,
        "heads": d.heads if whole else d.sa_heads,
        "q_tokens": d.tokens if whole else d.sa_q,
        "head_dim": d.head_dim,
        "act_bytes": d.act,
    }
    if not whole and d.sp_code:  # the plan's own code around the call (Ulysses: heads / rank heads)
        ulysses = d.heads * d.sa_calls // d.sa_heads
        core |= {"sp_ulysses": ulysses, "sp_ring": d.sa_calls, "sp_xfuser": d.sp_code == "xfuser"}
        if d.sp_code == "xdit":
            core["sp_xdit"] = True
    # keys per call: the rank's ring chunk of the sequence, or of the context (its tokens / ring)
    call_kv = d.sa_kv if self_attn else kv_tokens // d.sa_calls
    children += [
        rule_leaf(
            "attn_core",
            "attn_core",
            "image_text_attention_core",
            text_tokens=kv_tokens,
            image_tokens=d.img_tokens,
            **core,
        )
        if image
        else rule_leaf(
            "attn_core", "attn_core", "attention_core", kv_tokens=kv_tokens if whole else call_kv, **core
        ),
    ]
    if not whole and d.sa_calls > 1:
        # each ring step after the first merges its partial output into the running one by the
        # log-sum-exp (xDiT's update_out_and_lse, diffusers' ring alike) in fp32: costed as one
        # fused x + y pass over this rank's output per step
        heads = d.sa_heads // d.sa_calls
        merged = d.batch * d.sa_q * heads * d.head_dim * (d.sa_calls - 1)
        children.append(
            rule_leaf(
                "ring_merge",
                "attn_core",
                "ring_merge",
                elements=merged,
                steps=d.sa_calls - 1,
                head_dim=d.head_dim,
                act_bytes=FP32_BYTES,
            )
        )
    children += [
        _linear("o", "attn_proj", d, rows=d.rows, fan_in=dim, fan_out=dim),
    ]
    return Composite(name, tuple(children))


def _block(model: ModelSpec, d: _Dims, context_len: int) -> Composite:
    """One ``WanAttentionBlock`` in the official order of execution."""
    dim, rows = d.dim, d.rows
    gated = {"batch": d.vectors, "rows": rows, "dim": dim, "act_bytes": d.act}
    ffn = Composite(
        "ffn",
        (
            _linear("0", "ffn", d, rows=rows, fan_in=dim, fan_out=model.ffn_dim),
            rule_leaf("1", "ffn", "gelu_tanh", elements=rows * model.ffn_dim, act_bytes=d.act),
            _linear("2", "ffn", d, rows=rows, fan_in=model.ffn_dim, fan_out=dim),
        ),
    )
    return Composite(
        "block",
        (
            rule_leaf(
                "modulation",
                "norm_mod",
                "modulation_table",
                batch=d.vectors,
                vectors=6,
                dim=dim,
                table_el_bytes=FP32_BYTES,
            ),
            _fp32_norm("norm1", "norm_mod", d),
            _modulate("modulate1", "norm_mod", d),
            _attention("self_attn", d, kv_rows=rows, kv_tokens=d.tokens, self_attn=True),
            rule_leaf("residual1", "norm_mod", "gated_residual", **gated),
            rule_leaf(
                "norm3",
                "norm_mod",
                "layer_norm",
                rows=rows,
                dim=dim,
                affine=True,
                in_bytes=d.act,
                out_bytes=d.act,
                weight_el_bytes=FP32_BYTES,
            ),
            _attention(
                "cross_attn", d, kv_rows=d.ctx_rows // d.ctx_split, kv_tokens=context_len, self_attn=False
            ),
            rule_leaf("residual3", "norm_mod", "residual_add", elements=rows * dim, act_bytes=d.act),
            _fp32_norm("norm2", "norm_mod", d),
            _modulate("modulate2", "norm_mod", d),
            ffn,
            rule_leaf("residual2", "norm_mod", "gated_residual", **gated),
        ),
    )


def _embeddings(model: ModelSpec, d: _Dims) -> tuple[Composite, Composite, Composite]:
    f32, t = FP32_BYTES, d.time_rows
    time_embedding = Composite(
        "time_embedding",
        (
            rule_leaf("sinusoid", "embedding", "sinusoid", batch=t, freq_dim=model.freq_dim),
            _linear("0", "embedding", d, rows=t, fan_in=model.freq_dim, fan_out=d.dim, act=f32, w=f32),
            rule_leaf("1", "embedding", "silu", elements=t * d.dim, act_bytes=f32),
            _linear("2", "embedding", d, rows=t, fan_in=d.dim, fan_out=d.dim, act=f32, w=f32),
        ),
    )
    # NB: diffusers casts the time embedding to the activation dtype before the
    # projection (the official code keeps it fp32); we follow the traced port.
    time_projection = Composite(
        "time_projection",
        (
            rule_leaf("0", "embedding", "silu", elements=t * d.dim, act_bytes=d.act),
            _linear("1", "embedding", d, rows=t, fan_in=d.dim, fan_out=6 * d.dim),
        ),
    )
    text_embedding = Composite(
        "text_embedding",
        (
            _linear("0", "embedding", d, rows=d.ctx_rows, fan_in=model.text_dim, fan_out=d.dim),
            rule_leaf("1", "embedding", "gelu_tanh", elements=d.ctx_rows * d.dim, act_bytes=d.act),
            _linear("2", "embedding", d, rows=d.ctx_rows, fan_in=d.dim, fan_out=d.dim),
        ),
    )
    return time_embedding, time_projection, text_embedding


def _image_embedding(model: ModelSpec, d: _Dims) -> tuple[Composite, Leaf]:
    """``img_emb`` (official ``MLPProj``) over the CLIP tokens, and the image + text context concat.

    ``proj``: LayerNorm → Linear → GELU → Linear → LayerNorm (the norms fp32, as the
    port keeps them); FLF2V first adds its learned position table ``emb_pos``.
    """
    rows, w, f32 = d.img_rows, model.image_dim, FP32_BYTES
    norm = {"affine": True, "weight_el_bytes": f32, "in_bytes": d.act, "out_bytes": f32}
    proj = Composite(
        "proj",
        (
            rule_leaf("0", "embedding", "layer_norm", rows=rows, dim=w, **norm),
            _linear("1", "embedding", d, rows=rows, fan_in=w, fan_out=w),
            rule_leaf("2", "embedding", "gelu", elements=rows * w, act_bytes=d.act),
            _linear("3", "embedding", d, rows=rows, fan_in=w, fan_out=d.dim),
            rule_leaf("4", "embedding", "layer_norm", rows=rows, dim=d.dim, **norm),
        ),
    )
    children: list[Leaf | Composite] = []
    if model.image_pos_embed:
        add = apply_rule("residual_add", elements=rows * w, act_bytes=d.act)
        table = model.image_tokens * w  # one (image_tokens, image_dim) parameter
        cost = attrs.evolve(add, params=table, weight_bytes=table * d.w, bytes_read=add.bytes_read)
        children.append(Leaf("emb_pos", "embedding", "residual_add", cost))
    children.append(proj)
    concat = rule_leaf(
        "context_concat",
        "embedding",
        "layout_copy",
        elements=(d.img_rows + d.ctx_rows) * d.dim,
        act_bytes=d.act,
    )
    return Composite("img_emb", tuple(children)), concat


def _head(model: ModelSpec, d: _Dims) -> Composite:
    out = model.out_dim * math.prod(model.patch_size)
    return Composite(
        "head",
        (
            rule_leaf(
                "modulation",
                "head",
                "modulation_table",
                batch=d.vectors,
                vectors=2,
                dim=d.dim,
                table_el_bytes=FP32_BYTES,
            ),
            _fp32_norm("norm", "head", d),
            _modulate("modulate", "head", d),
            _linear("head", "head", d, rows=d.rows, fan_in=d.dim, fan_out=out),
        ),
    )


def build_dit(
    model: ModelSpec,
    workload: Workload,
    geo: Geometry,
    shard: SequenceShard | None = None,
    per_token_timesteps: bool = False,
    weight_dtype: str | None = None,
) -> Composite:
    """The cost tree of one DiT forward of ``model`` at ``workload`` (root name ""); with ``shard``,
    what one rank runs of it under sequence parallelism; with ``per_token_timesteps`` (Wan2.2) the
    timestep of every token embedded and projected, and the modulation per token (under a plan,
    for ``shard.time_tokens``); ``weight_dtype`` replaces the pipeline's
    DiT weight dtype (Wan2.2's ``--convert_model_dtype``; the modules kept in fp32 stay fp32)."""
    b = workload.dit_batch
    tokens = shard.tokens if shard else geo.tokens
    d = _Dims(
        batch=b,
        rows=b * tokens,
        ctx_rows=b * geo.context_len,
        tokens=tokens,
        dim=model.dim,
        heads=model.num_heads,
        head_dim=model.head_dim,
        act=workload.act_bytes,
        w=DTYPE_BYTES[weight_dtype or SEMANTICS[workload.pipeline].dit_weight_dtype or workload.dtype],
        img_rows=b * model.image_tokens,
        img_tokens=model.image_tokens,
        sa_heads=shard.heads * shard.calls if shard else 0,
        sa_calls=shard.calls if shard else 1,
        sa_q=shard.q_tokens if shard else 0,
        sa_kv=shard.kv_tokens if shard else 0,
        out_rows=b * shard.full_tokens if shard else 0,
        per_token=per_token_timesteps,
        t_rows=b * ((shard.time_tokens if shard else 0) or geo.tokens) if per_token_timesteps else 0,
        sp_code=shard.code if shard else "",
        table_rows=b * geo.tokens if shard and shard.code in ("xfuser", "wan") else 0,
        ctx_split=shard.context_split if shard else 1,
    )
    time_embedding, time_projection, text_embedding = _embeddings(model, d)
    image = _image_embedding(model, d) if model.image_tokens else ()
    out = model.out_dim * math.prod(model.patch_size)
    return Composite(
        "",
        (
            rule_leaf(
                "patch_embedding",
                "embedding",
                "patch_conv3d",
                batch=b,
                in_channels=model.in_dim,
                out_channels=model.dim,
                kernel_volume=math.prod(model.patch_size),
                patches=geo.tokens,
                bias=True,
                act_bytes=d.act,
                weight_el_bytes=d.w,
            ),
            rule_leaf(
                "rope",
                "rope",
                "rope_tables",
                tokens=geo.tokens,
                head_dim=model.head_dim,
                table_bytes=FP32_BYTES,
            ),
            time_embedding,
            time_projection,
            text_embedding,
            *image,
            Repeated("blocks", model.num_layers, _block(model, d, geo.context_len)),
            _head(model, d),
            rule_leaf(
                "unpatchify", "head", "layout_copy", elements=(d.out_rows or d.rows) * out, act_bytes=d.act
            ),
        ),
    )
