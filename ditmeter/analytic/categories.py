"""Operator categories a leaf module belongs to (stable strings, used as column values)."""

from __future__ import annotations

CATEGORIES: dict[str, str] = {
    "attn_proj": "attention projections: q, k, v, o linears of self- and cross-attention",
    "attn_core": "attention core: softmax(QKᵀ/√d)V over L×L (self) and L×context (cross)",
    "ffn": "feed-forward: Linear → GELU(tanh) → Linear",
    "norm_mod": "norms (LayerNorm, q/k RMSNorm), modulation tables, modulate, residual adds",
    "rope": "rotary position embedding: cos/sin tables and the rotation of q and k",
    "embedding": "patch embedding, text embedding MLP, sinusoidal time embedding MLP and projection",
    "head": "output head: norm, modulation, Linear to out_dim·patch, unpatchify",
    "conv": "VAE convolutions: causal 3D convs of the residual blocks, shortcuts, conv in/out",
    "resample": "VAE up/down-sampling: nearest upsample + 2D conv, causal time convs, frame reshuffles",
}
