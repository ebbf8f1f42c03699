"""Official Wan2.1 module ids ⇄ the diffusers port's module paths.

The analytic tree uses the official names; the tracer captures the diffusers
``WanTransformer3DModel``. ``canonical_id`` maps a diffusers path onto the
official id, so the two can be joined module by module.

NB: diffusers swaps two norm names. Its ``norm2`` is the affine norm before
cross-attention (official ``norm3``) and its ``norm3`` the norm before the FFN
(official ``norm2``).
"""

from __future__ import annotations

import re

#: (diffusers path pattern, official id template), first match wins.
DIFFUSERS_TO_OFFICIAL: tuple[tuple[str, str], ...] = (
    (r"", ""),
    (r"patch_embedding", "patch_embedding"),
    (r"rope", "rope"),
    (r"condition_embedder", ""),
    (r"condition_embedder\.timesteps_proj", "time_embedding.sinusoid"),
    (r"condition_embedder\.time_embedder", "time_embedding"),
    (r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
    (r"condition_embedder\.time_embedder\.act", "time_embedding.1"),
    (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
    (r"condition_embedder\.act_fn", "time_projection.0"),
    (r"condition_embedder\.time_proj", "time_projection.1"),
    (r"condition_embedder\.text_embedder", "text_embedding"),
    (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
    (r"condition_embedder\.text_embedder\.act_1", "text_embedding.1"),
    (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
    (r"condition_embedder\.image_embedder", "img_emb"),
    (r"condition_embedder\.image_embedder\.norm1", "img_emb.proj.0"),
    (r"condition_embedder\.image_embedder\.ff(\.net)?", "img_emb.proj"),
    (r"condition_embedder\.image_embedder\.ff\.net\.0\.proj", "img_emb.proj.1"),
    (r"condition_embedder\.image_embedder\.ff\.net\.0", "img_emb.proj.2"),
    (r"condition_embedder\.image_embedder\.ff\.net\.1", "img_emb.proj"),
    (r"condition_embedder\.image_embedder\.ff\.net\.2", "img_emb.proj.3"),
    (r"condition_embedder\.image_embedder\.norm2", "img_emb.proj.4"),
    (r"blocks", "blocks"),
    (r"blocks\.(\d+)", r"blocks.\1"),
    (r"blocks\.(\d+)\.norm1", r"blocks.\1.norm1"),
    (r"blocks\.(\d+)\.norm2", r"blocks.\1.norm3"),
    (r"blocks\.(\d+)\.norm3", r"blocks.\1.norm2"),
    (r"blocks\.(\d+)\.attn1", r"blocks.\1.self_attn"),
    (r"blocks\.(\d+)\.attn2", r"blocks.\1.cross_attn"),
    (r"blocks\.(\d+)\.attn([12])\.to_q", r"blocks.\1.ATTN\2.q"),
    (r"blocks\.(\d+)\.attn([12])\.to_k", r"blocks.\1.ATTN\2.k"),
    (r"blocks\.(\d+)\.attn([12])\.to_v", r"blocks.\1.ATTN\2.v"),
    (r"blocks\.(\d+)\.attn([12])\.to_out(\.0)?", r"blocks.\1.ATTN\2.o"),
    (r"blocks\.(\d+)\.attn([12])\.to_out\.1", r"blocks.\1.ATTN\2.o"),
    (r"blocks\.(\d+)\.attn([12])\.norm_q", r"blocks.\1.ATTN\2.norm_q"),
    (r"blocks\.(\d+)\.attn([12])\.norm_k", r"blocks.\1.ATTN\2.norm_k"),
    (r"blocks\.(\d+)\.attn2\.add_k_proj", r"blocks.\1.cross_attn.k_img"),
    (r"blocks\.(\d+)\.attn2\.add_v_proj", r"blocks.\1.cross_attn.v_img"),
    (r"blocks\.(\d+)\.attn2\.norm_added_k", r"blocks.\1.cross_attn.norm_k_img"),
    (r"blocks\.(\d+)\.ffn", r"blocks.\1.ffn"),
    (r"blocks\.(\d+)\.ffn\.net", r"blocks.\1.ffn"),
    (r"blocks\.(\d+)\.ffn\.net\.0\.proj", r"blocks.\1.ffn.0"),
    (r"blocks\.(\d+)\.ffn\.net\.0", r"blocks.\1.ffn.1"),
    (r"blocks\.(\d+)\.ffn\.net\.1", r"blocks.\1.ffn"),
    (r"blocks\.(\d+)\.ffn\.net\.2", r"blocks.\1.ffn.2"),
    (r"blocks\.(\d+)\.scale_shift_table", r"blocks.\1.modulation"),
    (r"norm_out", "head.norm"),
    (r"proj_out", "head.head"),
    (r"scale_shift_table", "head.modulation"),
)

_COMPILED = tuple((re.compile(p + r"\Z"), t) for p, t in DIFFUSERS_TO_OFFICIAL)
_ATTN = {"1": "self_attn", "2": "cross_attn"}


def canonical_id(diffusers_path: str) -> str | None:
    """Official Wan2.1 id of a diffusers module path, or None if unknown.

    ``blocks.7.attn1.to_q`` → ``blocks.7.self_attn.q``. Containers that have no
    official counterpart map to their nearest official ancestor
    (``condition_embedder`` → the root "", ``ffn.net.1`` dropout → ``ffn``).
    """
    for pattern, template in _COMPILED:
        m = pattern.match(diffusers_path)
        if m:
            out = m.expand(template) if m.groups() else template
            return re.sub(r"ATTN([12])", lambda a: _ATTN[a.group(1)], out)
    return None
