"""Element-wise rules: norms, activations, RoPE, modulation and residuals.

All of this is CUDA-core work that FlopCounterMode counts as zero. Each
per-element constant is the number of arithmetic operations in the formula the
real model evaluates (transcendentals count as one), named here once.
"""

from __future__ import annotations

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.registry import register_rule, register_zero

#: LayerNorm: mean (1 add), centre (1 sub), variance (1 mul + 1 add), normalise (1 mul).
LAYER_NORM_FLOPS_PER_ELEMENT = 5
#: RMSNorm: square (1 mul), mean (1 add), normalise (1 mul).
RMS_NORM_FLOPS_PER_ELEMENT = 3
#: Affine LayerNorm adds γ·x + β; RMSNorm's weight adds γ·x.
LAYER_NORM_AFFINE_FLOPS_PER_ELEMENT = 2
RMS_NORM_WEIGHT_FLOPS_PER_ELEMENT = 1
#: GELU(tanh): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) = 2 (x³) + 1 + 1 + 1 + 1 (tanh) + 1 + 1 + 1.
GELU_TANH_FLOPS_PER_ELEMENT = 9
#: GELU(erf): 0.5·x·(1 + erf(x/√2)) = div, erf, add, mul, mul (erf counted as one op).
GELU_ERF_FLOPS_PER_ELEMENT = 5
#: SiLU: x·σ(x), σ(x) = 1/(1 + e^(−x)) = neg, exp, add, div, then mul.
SILU_FLOPS_PER_ELEMENT = 5
#: RoPE as a real rotation: per pair 4 mul + 2 add = 3 per element.
ROPE_FLOPS_PER_ELEMENT = 3
#: Modulate: x·(1 + scale) + shift = 1 mul + 1 add per element (1 + scale is per sample).
MODULATE_FLOPS_PER_ELEMENT = 2
#: Gated residual: x + y·gate = 1 mul + 1 add per element.
GATED_RESIDUAL_FLOPS_PER_ELEMENT = 2
#: Sinusoidal embedding: t·freq (1 mul) then sin or cos (1).
SINUSOID_FLOPS_PER_ELEMENT = 2
#: clamp(x, lo, hi): a min and a max.
CLAMP_FLOPS_PER_ELEMENT = 2
#: The VAE posterior from a log-variance: clamp (2), ×0.5 (1), exp for std (1), exp for var (1).
POSTERIOR_FLOPS_PER_ELEMENT = 5


@register_rule("layer_norm")
def layer_norm(
    *, rows: int, dim: int, affine: bool, in_bytes: int, out_bytes: int, weight_el_bytes: int
) -> Cost:
    """LayerNorm over the last ``dim`` of ``rows`` rows; γ, β when ``affine``."""
    per_el = LAYER_NORM_FLOPS_PER_ELEMENT + (LAYER_NORM_AFFINE_FLOPS_PER_ELEMENT if affine else 0)
    params = 2 * dim if affine else 0
    elements = rows * dim
    return Cost(
        cuda_flops=elements * per_el,
        elements=elements,
        params=params,
        weight_bytes=params * weight_el_bytes,
        activation_bytes=elements * out_bytes,
        bytes_read=elements * in_bytes + params * weight_el_bytes,
        bytes_written=elements * out_bytes,
    )


@register_rule("rms_norm")
def rms_norm(*, rows: int, dim: int, act_bytes: int, weight_el_bytes: int) -> Cost:
    """RMSNorm with a weight over ``dim`` (Wan's q/k norm spans all heads)."""
    elements = rows * dim
    return Cost(
        cuda_flops=elements * (RMS_NORM_FLOPS_PER_ELEMENT + RMS_NORM_WEIGHT_FLOPS_PER_ELEMENT),
        elements=elements,
        params=dim,
        weight_bytes=dim * weight_el_bytes,
        activation_bytes=elements * act_bytes,
        bytes_read=elements * act_bytes + dim * weight_el_bytes,
        bytes_written=elements * act_bytes,
    )


def _unary(elements: int, flops_per_element: int, act_bytes: int) -> Cost:
    return Cost(
        cuda_flops=elements * flops_per_element,
        elements=elements,
        activation_bytes=elements * act_bytes,
        bytes_read=elements * act_bytes,
        bytes_written=elements * act_bytes,
    )


@register_rule("gelu_tanh")
def gelu_tanh(*, elements: int, act_bytes: int) -> Cost:
    """GELU with the tanh approximation over ``elements`` values."""
    return _unary(elements, GELU_TANH_FLOPS_PER_ELEMENT, act_bytes)


@register_rule("gelu")
def gelu(*, elements: int, act_bytes: int) -> Cost:
    """Exact GELU (erf) over ``elements`` values (the image embedding MLP)."""
    return _unary(elements, GELU_ERF_FLOPS_PER_ELEMENT, act_bytes)


@register_rule("silu")
def silu(*, elements: int, act_bytes: int) -> Cost:
    """SiLU over ``elements`` values."""
    return _unary(elements, SILU_FLOPS_PER_ELEMENT, act_bytes)


@register_rule("rope", layout=("table_rows", "padded_rows"))
def rope(*, tensors: int, rows: int, heads: int, head_dim: int, act_bytes: int, table_bytes: int) -> Cost:
    """Rotate ``tensors`` (q and k: 2) of rows×heads×head_dim by cos/sin tables.

    Reads each tensor and the rows×head_dim cos and sin tables (once per tensor). Under the
    official sequence-parallel code the eager ``rope_apply`` builds the whole sequence's table
    (``table_rows``) and pads it (``padded_rows``): its recipe's kernels, not this cost.
    """
    elements = tensors * rows * heads * head_dim
    tables = tensors * 2 * rows * head_dim * table_bytes
    return Cost(
        cuda_flops=elements * ROPE_FLOPS_PER_ELEMENT,
        elements=elements,
        activation_bytes=elements * act_bytes,
        bytes_read=elements * act_bytes + tables,
        bytes_written=elements * act_bytes,
    )


@register_rule("rope_tables")
def rope_tables(*, tokens: int, head_dim: int, table_bytes: int) -> Cost:
    """Gather the per-token cos and sin tables from the 3-axis frequency buffers.

    No arithmetic: it writes 2·tokens·head_dim values.
    """
    written = 2 * tokens * head_dim * table_bytes
    return Cost(activation_bytes=written, bytes_written=written)


@register_rule("sinusoid")
def sinusoid(*, batch: int, freq_dim: int) -> Cost:
    """Sinusoidal timestep embedding of ``freq_dim`` values per sample, in fp32."""
    elements = batch * freq_dim
    return Cost(
        cuda_flops=elements * SINUSOID_FLOPS_PER_ELEMENT,
        elements=elements,
        activation_bytes=elements * 4,
        bytes_read=batch * 4,
        bytes_written=elements * 4,
    )


@register_rule("modulation_table")
def modulation_table(*, batch: int, vectors: int, dim: int, table_el_bytes: int) -> Cost:
    """Learned table (1, vectors, dim) + the per-sample time embedding, in fp32.

    Per sample, not per token: this is why Wan's modulation costs so little.
    """
    params = vectors * dim
    out = batch * vectors * dim
    return Cost(
        cuda_flops=out,
        elements=out,
        params=params,
        weight_bytes=params * table_el_bytes,
        activation_bytes=out * 4,
        bytes_read=params * table_el_bytes + out * 4,
        bytes_written=out * 4,
    )


@register_rule("modulate")
def modulate(*, batch: int, rows: int, dim: int, in_bytes: int, out_bytes: int) -> Cost:
    """x·(1 + scale) + shift with fp32 per-sample shift/scale vectors (rows is all tokens)."""
    elements = rows * dim
    return Cost(
        cuda_flops=elements * MODULATE_FLOPS_PER_ELEMENT + batch * dim,
        elements=elements,
        activation_bytes=elements * out_bytes,
        bytes_read=elements * in_bytes + 2 * batch * dim * 4,
        bytes_written=elements * out_bytes,
    )


@register_rule("gated_residual")
def gated_residual(*, batch: int, rows: int, dim: int, act_bytes: int) -> Cost:
    """x + y·gate with an fp32 per-sample gate."""
    elements = rows * dim
    return Cost(
        cuda_flops=elements * GATED_RESIDUAL_FLOPS_PER_ELEMENT,
        elements=elements,
        activation_bytes=elements * act_bytes,
        bytes_read=2 * elements * act_bytes + batch * dim * 4,
        bytes_written=elements * act_bytes,
    )


@register_rule("residual_add")
def residual_add(*, elements: int, act_bytes: int) -> Cost:
    """x + y."""
    return Cost(
        cuda_flops=elements,
        elements=elements,
        activation_bytes=elements * act_bytes,
        bytes_read=2 * elements * act_bytes,
        bytes_written=elements * act_bytes,
    )


@register_rule("ring_merge")
def ring_merge(*, elements: int, steps: int, head_dim: int, act_bytes: int) -> Cost:
    """Ring attention's merge of each later step's partial output into the running one by the
    log-sum-exp over ``elements`` (all ``steps`` together; ``head_dim`` sizes the log-sum-exp the
    eager code updates): costed as one fused ``x + y`` pass, as :func:`residual_add`."""
    return residual_add(elements=elements, act_bytes=act_bytes)


@register_rule("tile_blend")
def tile_blend(*, slices: int, elements: int, act_bytes: int) -> Cost:
    """A tiled decode's blend of two tiles over ``slices`` rows or columns of ``elements`` each:
    ``a * (1 - y/e) + b * (y/e)`` written into ``b`` (two multiplies, an add, a copy: 3 FLOPs,
    5 reads and 4 writes an element)."""
    n = slices * elements
    return Cost(
        cuda_flops=3 * n,
        elements=n,
        activation_bytes=elements * act_bytes,
        bytes_read=5 * n * act_bytes,
        bytes_written=4 * n * act_bytes,
    )


@register_rule("layout_copy", layout=("cloned", "stacked", "chunks", "chunk"))
def layout_copy(
    *,
    elements: int,
    act_bytes: int,
    joined: int = 0,
    zeros: int = 0,
    padded: int = 0,
    averaged: int = 0,
) -> Cost:
    """A permute that materialises a copy (unpatchify): no FLOPs, one read and one write.

    A causal cache's update (the VAE): ``elements`` cloned, then ``joined`` elements concatenated
    (read and written) from the clone and the previous frame, or ``zeros`` written first;
    ``padded``: a zero pad writing that many elements from the ``elements`` it reads;
    ``averaged``: Wan2.2's ``AvgDown3D``, whose padded copy is then permuted and averaged into
    that many. How the eager code lays these out in kernels (``cloned``, ``stacked``, ``chunks``,
    ``chunk``) is the VAE recipe's (``models/wan21/eager_vae.py``), not the cost's."""
    written = padded or elements
    return Cost(
        activation_bytes=(written + joined) * act_bytes,
        bytes_read=(elements + joined) * act_bytes,
        bytes_written=(written + joined + zeros) * act_bytes,
    )


register_zero("dropout", "identity at inference (p=0, eval mode)")
register_zero("view", "reshape, flatten, unflatten, chunk and other views move no data")


@register_rule("clamp")
def clamp(*, elements: int, act_bytes: int) -> Cost:
    """clamp(x, lo, hi): a min and a max per element."""
    return _unary(elements, CLAMP_FLOPS_PER_ELEMENT, act_bytes)


@register_rule("gaussian_posterior")
def gaussian_posterior(*, elements: int, act_bytes: int) -> Cost:
    """The VAE posterior from ``elements`` log-variances: clamp (2), ×0.5, exp for std, exp for var."""
    return Cost(
        cuda_flops=POSTERIOR_FLOPS_PER_ELEMENT * elements,
        elements=elements,
        activation_bytes=2 * elements * act_bytes,
        bytes_read=elements * act_bytes,
        bytes_written=2 * elements * act_bytes,
    )
