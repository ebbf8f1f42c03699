"""Independent checks of a leaf's non-FLOP numbers against the traced ops: element counts and bytes.

The gate compares tensor FLOPs. These two checks cover what FlopCounterMode
counts as zero:

**Element counts.** A rule's CUDA-core FLOPs are a per-element constant (the
convention, named in ``ditmeter.analytic.rules``) times an element count
(``Cost.elements``). The constants are a convention; the counts are shape
algebra that can be wrong (rows vs samples, the wrong dim, a missing tensor).
:data:`ELEMENT_OPS` names, per rule, the aten ops whose elements the count is:
the norm's input, the softmax's scores, the activation's input, the rotated
halves of q and k, the modulated and gated tensors, the outputs a bias is added
to. :func:`measure_leaves` sums them over each leaf's traced nodes, which must
equal the rule's count exactly.

**Bytes in and out.** A rule's ``bytes_read``/``bytes_written`` are the fused
ideal: what one kernel per module would read and write. The trace measures
the same quantity independently: the bytes of every tensor a leaf's ops read
that was made outside the leaf (parameters, inputs, other leaves' outputs;
each produced tensor counted once per leaf) and of every tensor they made that
is read outside it or returned. Where the two differ, the difference is one of
the conventions listed in :data:`BYTE_CONVENTIONS`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ditmeter.analytic.tree import ModuleRow

_OUT, _IN = "out", "in"

#: rule → the (aten op packet, side) pairs whose first tensor's elements make the rule's count.
ELEMENT_OPS: dict[str, tuple[tuple[str, str], ...]] = {
    # the outputs the bias is added to: fused (addmm) or, for a non-contiguous input, mm + add
    "linear": (("aten.addmm", _OUT), ("aten.add", _OUT)),
    "conv": (("aten.convolution", _OUT),),  # counted only when a bias is passed
    "patch_conv3d": (("aten.convolution", _OUT),),
    "layer_norm": (("aten.native_layer_norm", _OUT),),
    "rms_norm": (("aten.pow", _OUT), ("aten.linalg_vector_norm", _IN)),  # x² or ‖x‖ over the input
    "gelu": (("aten.gelu", _OUT),),
    "gelu_tanh": (("aten.gelu", _OUT), ("aten.tanh", _OUT)),  # fused, or decomposed (UMT5)
    "silu": (("aten.silu", _OUT),),
    "attention_core": (("aten._safe_softmax", _OUT), ("aten._softmax", _OUT)),
    "image_text_attention_core": (("aten._safe_softmax", _OUT), ("aten._softmax", _OUT)),
    "rope": (("aten.sub", _OUT), ("aten.add", _OUT)),  # x1·cos − x2·sin and x1·sin + x2·cos
    "modulate": (("aten.mul", _OUT),),  # x·(1 + scale)
    "gated_residual": (("aten.mul", _OUT),),  # y·gate
    "residual_add": (("aten.add", _OUT),),
    "elementwise_mul": (("aten.mul", _OUT),),
    "modulation_table": (("aten.add", _OUT),),
    "sinusoid": (("aten.sin", _OUT), ("aten.cos", _OUT)),
    "clamp": (("aten.clamp", _OUT),),
    "gaussian_posterior": (("aten.clamp", _OUT),),
    "relative_position_bias": (("aten.sub", _OUT),),  # the (query, key) offsets
}
_BIASED = ("aten.addmm", "aten.convolution")


@attrs.frozen
class LeafMeasure:
    """What the traced ops of one leaf record (summed over every run of the leaf)."""

    elements: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _elements(rule: str | None, node: Any) -> int:
    packet = str(node.target).rsplit(".", 1)[0]
    for op, side in ELEMENT_OPS.get(rule or "", ()):
        if packet != op:
            continue
        meta = node.meta
        if op == "aten.convolution" and len(meta["in_shapes"]) < 3:
            return 0  # no bias: no element-wise work
        shapes = meta["out_shapes"] if side == _OUT else meta["in_shapes"]
        return _numel(shapes[0]) if shapes else 0
    return 0


def measure_leaves(
    graph: Any, leaves: Sequence[str | None], rules: Sequence[str | None]
) -> dict[str, LeafMeasure]:
    """Element counts and boundary bytes per leaf, from one captured graph.

    ``leaves`` and ``rules``: each node's analytic leaf and its rule (the
    ``leaf_id`` and ``rule`` columns of the mapped nodes, in graph order).
    """
    nodes = list(graph.nodes)
    leaf_of = {n.name: leaf for n, leaf in zip(nodes, leaves, strict=True)}
    readers: dict[tuple[str, int], set[str | None]] = defaultdict(set)
    for n in nodes:
        for source in n.meta["in_sources"]:
            if source is not None:
                readers[tuple(source)].add(leaf_of[n.name])  # type: ignore[arg-type]
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    read_once: set[tuple[str, tuple[str, int]]] = set()
    for n, leaf, rule in zip(nodes, leaves, rules, strict=True):
        if leaf is None:
            continue
        acc = out[leaf]
        acc[0] += _elements(rule, n)
        for source, nbytes in zip(n.meta["in_sources"], n.meta["in_bytes"], strict=True):
            if source is None:  # a parameter or a model input: read by this op
                acc[1] += nbytes
            elif leaf_of[source[0]] != leaf and (leaf, tuple(source)) not in read_once:
                read_once.add((leaf, tuple(source)))
                acc[1] += nbytes
        returned = n.meta.get("returned", set())
        for i, nbytes in enumerate(n.meta["out_bytes"]):
            if readers.get((n.name, i), set()) - {leaf} or i in returned:
                acc[2] += nbytes
    return {leaf: LeafMeasure(*values) for leaf, values in out.items()}


@attrs.frozen
class Disagreement:
    leaf: str
    rule: str
    field: str  # "elements", "bytes_read" or "bytes_written"
    analytic: int
    measured: int


def disagreements(
    rows: Iterable[ModuleRow], measured: dict[str, LeafMeasure], fields: Sequence[str]
) -> list[Disagreement]:
    """Every leaf whose analytic ``fields`` differ from the measured ones."""
    out = []
    for r in rows:
        if r.kind != "leaf":
            continue
        m = measured.get(r.module_id, LeafMeasure())
        for field in fields:
            a, b = getattr(r.cost, field), getattr(m, field)
            if a != b:
                out.append(Disagreement(r.module_id, r.rule or "", field, a, b))
    return out


@attrs.frozen
class ByteConvention:
    """Leaves whose fused-ideal bytes follow a convention the traced data flow does not.

    ``leaves`` is a regular expression over video-wide leaf ids (full match);
    ``fields`` the byte counts that differ because of it.
    """

    leaves: str
    fields: tuple[str, ...]
    why: str

    def covers(self, leaf: str, field: str) -> bool:
        return field in self.fields and re.fullmatch(self.leaves, leaf) is not None


_R, _W = "bytes_read", "bytes_written"
_VAE = r"vae_(?:en|de)code\."

#: Where the rules' byte conventions and the traced data flow part ways (each entry must
#: still differ somewhere, or the check says it is stale).
BYTE_CONVENTIONS: tuple[ByteConvention, ...] = (
    ByteConvention(
        _VAE + r".*(?:conv_in|conv_out|conv1|conv2|resample\.1|time_conv)",
        (_R, _W),
        "the rule reads the zero-padded (and causal-cache) input; the padding is made inside the "
        "conv's leaf by constant_pad_nd, so the trace reads only the unpadded activation",
    ),
    ByteConvention(
        _VAE + r"(?:output_concat|latent_concat)",
        (_R, _W),
        "the per-call concat: the rule counts every re-copy of the output so far (each call's cat "
        "reads and writes it again); inside one leaf those copies are internal",
    ),
    ByteConvention(
        _VAE + r"(?:en|de)coder\.mid_block\.attentions\.\d+\.add",
        (_W,),
        "mapping: the layout views at the start of the attention block's next call follow its "
        "last child (proj) in the segment order, so they join this leaf (zero-cost views; their "
        "outputs are read by the next call's norm)",
    ),
    ByteConvention(
        _VAE + r".*(?:feat_cache|reshuffle|resample\.0)",
        (_R, _W),
        "layout copies: the causal-cache slices are kept for the next call (never read in this "
        "run) and the frame reshuffles are views and copies the rule counts as one pass",
    ),
    ByteConvention(
        r"(?:text_encoder|vae_(?:en|de)code|dit)\..*attn_core",
        (_R, _W),
        "flash-style attention in the rule (scores stay on chip); on meta the port runs the math "
        "path, whose scores cross the leaf boundary (UMT5: into the bias add; I2V cross-attention: "
        "two of them and the add of their outputs)",
    ),
    ByteConvention(
        r"text_encoder\.blocks\.\d+\.(?:pos_embedding|attn\.bias_add)",
        (_R, _W),
        "the relative-position bias: the rule reads only the bucket table and writes the gathered "
        "bias once; the port materialises the bucket ids and adds the bias to fp32 scores",
    ),
    ByteConvention(
        r"text_encoder\.token_embedding",
        (_R,),
        "a gather reads the rows it looks up (the rule); the op's input is the whole table",
    ),
    ByteConvention(
        r"image_encoder\.pos_embedding",
        (_R,),
        "the position table is gathered by an embedding op whose input is the int64 position ids",
    ),
    ByteConvention(
        r"image_encoder\.cls_embedding",
        (_R,),
        "the rule reads one CLS row per image; the port expands the one parameter row",
    ),
    ByteConvention(
        r"image_encoder\.post_norm",
        (_R,),
        "the final norm of the CLS token: the port selects the token from the whole last hidden "
        "state inside this leaf",
    ),
    ByteConvention(
        r"dit\.(?:blocks\.\d+\.|head\.)?modulation",
        (_R, _W),
        "the block's x.float() before norm1 runs before any child and is assigned to the modulation "
        "leaf; the rule fuses casts into the producing op",
    ),
    ByteConvention(
        r"dit\.(?:blocks\.\d+\.(?:norm1|norm2|norm3)|head\.norm)",
        (_R,),
        "the fp32 norms read the fp32 copy the port makes before them; the rule reads the "
        "activation dtype (casts fused into the producer)",
    ),
    ByteConvention(
        r"dit\.(?:blocks\.\d+\.(?:residual[123]|ffn\.2)|time_embedding\.2|img_emb\.proj\.[04])",
        (_R, _W),
        "casts to and from fp32 around residuals and the fp32 image-embedding norms sit in these "
        "leaves' segments; the rule fuses them into the producing op",
    ),
    ByteConvention(
        r"dit\.(?:blocks\.\d+\.self_attn\.rope|rope)",
        (_R, _W),
        "RoPE: the rule reads q, k and fp32 cos/sin tables and writes q, k; the port slices the "
        "complex-pair tables and writes each half into a preallocated buffer",
    ),
    ByteConvention(
        r"dit\.img_emb\.emb_pos",
        (_R,),
        "FLF2V's learned position table: the rule reads it once per sample (a broadcast add), the "
        "port reads the one parameter",
    ),
    ByteConvention(
        r"dit\.time_embedding\.sinusoid",
        (_R,),
        "the timestep is read as an int64 (8 bytes) by the port, as fp32 (4) by the rule",
    ),
    ByteConvention(
        _VAE.removesuffix(r"\.") + r"\.posterior",
        (_R, _W),
        "the posterior reads the log-variance half of the moments; the port splits the moments "
        "and writes only the mode (what the pipeline takes)",
    ),
)


def unexplained(found: Iterable[Disagreement]) -> list[Disagreement]:
    """Byte disagreements that no :data:`BYTE_CONVENTIONS` entry explains."""
    return [d for d in found if not any(c.covers(d.leaf, d.field) for c in BYTE_CONVENTIONS)]
