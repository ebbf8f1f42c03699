"""The CLIP ViT-H/14 image encoder as a tree of costed modules (one encode of ``images`` images).

Module ids follow the official Wan code's ``VisionTransformer`` (``wan/modules/clip.py``):
``patch_embedding``, ``cls_embedding``, ``pos_embedding``, ``pre_norm``,
``transformer.N.{norm1, attn.{to_qkv, attn_core, proj}, residual1, norm2, mlp.{0, 1, 2},
residual2}`` and ``post_norm``; ``CLIP_NAMES`` in :mod:`ditmeter.models.wan21.names` maps the
transformers ``CLIPVisionModel`` paths (the reference we trace) onto them. The
official ``to_qkv`` is one fused Linear; transformers' separate q/k/v
projections all map onto it (the same FLOPs and parameters).

The pipeline decides ``layers_run``: diffusers runs all 32 layers (taking the
penultimate hidden states), the official code stops after block 31
(``use_31_block``); the final norm over the CLS token is transformers' (the
official code skips it: one LayerNorm row per image, no tensor FLOPs).

Weights (:func:`clip_weight_bytes`): every block is loaded, also the one the
official code does not run; the official ``CLIPModel`` also builds and keeps the
XLM-RoBERTa text tower and both projection heads (``ClipSpec.text_tower``), which
never run and so are not in the tree.
"""

from __future__ import annotations

import attrs

from ditmeter.analytic import rules as _rules  # noqa: F401  (registers the rules)
from ditmeter.analytic.cost import DTYPE_BYTES
from ditmeter.analytic.registry import apply_rule
from ditmeter.analytic.tree import Composite, Leaf, Repeated, rule_leaf
from ditmeter.models.wan21.spec import ClipSpec, ClipTextTowerSpec


def build_clip(spec: ClipSpec, images: int) -> Composite:
    """The cost tree of encoding ``images`` images of ``image_size``² pixels (root name "")."""
    a, dim, t = DTYPE_BYTES[spec.dtype], spec.hidden_size, spec.tokens
    rows = images * t

    def linear(name: str, category: str, fan_in: int, fan_out: int) -> Leaf:
        dims = {"in_features": fan_in, "out_features": fan_out, "act_bytes": a, "weight_el_bytes": a}
        return rule_leaf(name, category, "linear", tokens=rows, bias=True, **dims)

    def norm(name: str, norm_rows: int) -> Leaf:
        return rule_leaf(
            name,
            "norm_mod",
            "layer_norm",
            rows=norm_rows,
            dim=dim,
            affine=True,
            in_bytes=a,
            out_bytes=a,
            weight_el_bytes=a,
        )

    block = Composite(
        "block",
        (
            norm("norm1", rows),
            Composite(
                "attn",
                (
                    linear("to_qkv", "attn_proj", dim, 3 * dim),
                    rule_leaf(
                        "attn_core",
                        "attn_core",
                        "attention_core",
                        batch=images,
                        heads=spec.num_attention_heads,
                        q_tokens=t,
                        kv_tokens=t,
                        head_dim=dim // spec.num_attention_heads,
                        act_bytes=a,
                    ),
                    linear("proj", "attn_proj", dim, dim),
                ),
            ),
            rule_leaf("residual1", "norm_mod", "residual_add", elements=rows * dim, act_bytes=a),
            norm("norm2", rows),
            Composite(
                "mlp",
                (
                    linear("0", "ffn", dim, spec.intermediate_size),
                    rule_leaf("1", "ffn", "gelu", elements=rows * spec.intermediate_size, act_bytes=a),
                    linear("2", "ffn", spec.intermediate_size, dim),
                ),
            ),
            rule_leaf("residual2", "norm_mod", "residual_add", elements=rows * dim, act_bytes=a),
        ),
    )
    cls_cat = rule_leaf("cls_embedding", "embedding", "layout_copy", elements=rows * dim, act_bytes=a)
    cls_cat = attrs.evolve(cls_cat, cost=attrs.evolve(cls_cat.cost, params=dim, weight_bytes=dim * a))
    pos = apply_rule("residual_add", elements=rows * dim, act_bytes=a)  # gather the table, add it
    pos = attrs.evolve(pos, params=t * dim, weight_bytes=t * dim * a, bytes_read=pos.bytes_read)
    return Composite(
        "",
        (
            rule_leaf(
                "patch_embedding",
                "embedding",
                "patch_conv3d",
                batch=images,
                in_channels=3,
                out_channels=dim,
                kernel_volume=spec.patch_size**2,
                patches=t - 1,
                bias=False,
                act_bytes=a,
                weight_el_bytes=a,
            ),
            cls_cat,
            Leaf("pos_embedding", "embedding", "residual_add", pos),
            norm("pre_norm", rows),
            Repeated("transformer", spec.layers_run, block),
            norm("post_norm", images),  # the CLS token of each image
        ),
    )


def clip_weight_bytes(spec: ClipSpec) -> int:
    """Bytes of the CLIP weights the pipeline holds: the vision tower's every block (the tree's
    parameters with all ``num_hidden_layers``) plus, where the pipeline builds the whole CLIP,
    the parameters of :func:`idle_clip_params`, all in ``spec.dtype``."""
    whole = attrs.evolve(spec, layers_run=spec.num_hidden_layers)
    idle = idle_clip_params(spec.text_tower, spec.hidden_size) if spec.text_tower is not None else 0
    return build_clip(whole, 1).total.weight_bytes + idle * DTYPE_BYTES[spec.dtype]


def idle_clip_params(tower: ClipTextTowerSpec, vision_dim: int) -> int:
    """Parameters of the official ``XLMRobertaCLIP`` besides the vision tower transformers counts
    (``wan/modules/clip.py``, ``xlm_roberta.py``), with ``d = text_dim``, ``e = embed_dim``::

        visual.head                 vision_dim·e              (no bias)
        token, type and position    (vocab_size + type_size + max_text_len)·d
        embedding norm              2·d
        text_layers × block         4·(d² + d) (q, k, v, o) + 2·2·d (two norms) + 8·d² + 5·d (FFN, 4·d)
        textual.head                d·m + m·e, m = (d + e)//2 (no biases)
        log_scale                   1
    """
    d, e = tower.text_dim, tower.embed_dim
    mid = (d + e) // 2
    block = 4 * (d * d + d) + 2 * 2 * d + 8 * d * d + 5 * d
    embeddings = (tower.vocab_size + tower.type_size + tower.max_text_len) * d + 2 * d
    return vision_dim * e + embeddings + tower.text_layers * block + d * mid + mid * e + 1
