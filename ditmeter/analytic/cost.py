"""The cost record every rule returns: exact integer counts in base units.

Conventions (also written into every artifact's metadata):

* FLOPs, not MACs: a multiply-add is 2 FLOPs (``torch.utils.flop_counter``).
* ``tensor_flops``: matmul, convolution and the two attention-core matmuls, the
  work tensor cores run. Bias adds are excluded, as FlopCounterMode excludes them.
* ``cuda_flops``: element-wise work (bias adds, norms, softmax, activations, RoPE,
  modulation, residual adds), with per-element constants named in ``rules``.
* Bytes assume an ideal fused execution: each module reads its inputs and
  weights once and writes its outputs once (attention with flash-style tiling,
  so no L×L matrix ever reaches memory).
"""

from __future__ import annotations

import attrs

#: Bytes per element of each dtype name a workload may use.
DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4}

#: fp32 is used where the real model keeps work in fp32 (time embedding, modulation).
FP32_BYTES = DTYPE_BYTES["fp32"]

COST_FIELDS: tuple[str, ...] = (
    "tensor_flops",
    "cuda_flops",
    "params",
    "weight_bytes",
    "activation_bytes",
    "bytes_read",
    "bytes_written",
    "kv_cache_bytes",
)

#: Every field of a :class:`Cost`: the artifact columns plus ``elements`` (checked, not published).
_ALL_FIELDS: tuple[str, ...] = (*COST_FIELDS, "elements")

#: Fields that grow with the number of forwards; parameters and weights do not.
PER_FORWARD_FIELDS: tuple[str, ...] = tuple(
    f for f in _ALL_FIELDS if f not in ("params", "weight_bytes", "kv_cache_bytes")
)


@attrs.frozen(cache_hash=True)
class Cost:
    """Costs of one module for one forward, in base units (FLOPs, bytes, elements).

    ``activation_bytes`` is the size of the module's output activations;
    ``bytes_read``/``bytes_written`` are DRAM traffic under the fused ideal;
    ``kv_cache_bytes`` is 0 for a diffusion transformer (no autoregressive cache).
    ``elements`` is the count a rule's per-element CUDA-core constant multiplies
    (the values normalised, activated, rotated, modulated; the scores of a
    softmax; the outputs a bias is added to): ``compare.leaf_checks`` checks it
    exactly against the traced ops. It is not an artifact column.
    """

    tensor_flops: int = 0
    cuda_flops: int = 0
    params: int = 0
    weight_bytes: int = 0
    activation_bytes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    kv_cache_bytes: int = 0
    elements: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(getattr(self, f) + getattr(other, f) for f in _ALL_FIELDS))

    def times(self, count: int) -> Cost:
        """Every count multiplied by ``count`` (repeated identical modules)."""
        return Cost(*(getattr(self, f) * count for f in _ALL_FIELDS))

    def called(self, count: int) -> Cost:
        """``count`` calls of one module: work and traffic multiplied, its parameters and weights
        held once (fields by position: ``tests/test_sweep.py`` checks it against ``attrs.evolve``)."""
        return Cost(
            self.tensor_flops * count,
            self.cuda_flops * count,
            self.params,
            self.weight_bytes,
            self.activation_bytes * count,
            self.bytes_read * count,
            self.bytes_written * count,
            self.kv_cache_bytes * count,
            self.elements * count,
        )

    def plus_calls(self, other: Cost) -> Cost:
        """More calls of the same module: ``other``'s work and traffic added, the parameters and
        weights ``self``'s (held once)."""
        return Cost(
            self.tensor_flops + other.tensor_flops,
            self.cuda_flops + other.cuda_flops,
            self.params,
            self.weight_bytes,
            self.activation_bytes + other.activation_bytes,
            self.bytes_read + other.bytes_read,
            self.bytes_written + other.bytes_written,
            self.kv_cache_bytes + other.kv_cache_bytes,
            self.elements + other.elements,
        )

    def per_video(self, forwards: int) -> Cost:
        """Work of ``forwards`` forwards; parameters and weights are held once."""
        values = {f: getattr(self, f) for f in _ALL_FIELDS}
        for f in PER_FORWARD_FIELDS:
            values[f] *= forwards
        return Cost(**values)

    @property
    def flops(self) -> int:
        """Tensor-core plus CUDA-core FLOPs."""
        return self.tensor_flops + self.cuda_flops

    @property
    def moved_bytes(self) -> int:
        """Fused-ideal DRAM traffic: bytes read plus bytes written."""
        return self.bytes_read + self.bytes_written

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in COST_FIELDS}


ZERO = Cost()


def total(costs: list[Cost] | tuple[Cost, ...]) -> Cost:
    """Exact sum of costs."""
    out = ZERO
    for c in costs:
        out = out + c
    return out
