"""The kernels a leaf launches when its code runs eagerly, kernel by kernel, in its own dtypes.

The cost rules (:mod:`ditmeter.analytic.rules`) give a leaf's work under the fused ideal: one
kernel that reads its inputs once and writes its outputs once. Neither the official
``generate.py`` nor diffusers compiles anything: every aten op that moves data is a kernel of
its own, in the dtype the code gives it (fp32 norms and modulation, float64 RoPE in the
official code, the casts autocast inserts). An *eager recipe* lists those kernels for one rule
as a function of the leaf's dims (ints, like the cost rules), so ``report`` still builds no
module; a family registers its recipes per *flavour* (whose code runs: ``official`` or
``diffusers``) and ``tests/test_eager.py`` checks them against the ops of the real modules.

Conventions of a :class:`KernelCall`:

* ``bytes`` is the bytes of every tensor the op takes plus every tensor it returns (what the
  captured op records: an in-place op's destination counts as read and written; a broadcast
  operand counts once, at its own size). Views (``view``, ``permute``, ``expand``, slices)
  launch nothing and are not calls.
* ``kind`` says how the kernel is timed: ``gemm``, ``attention`` and ``conv`` on the kernel
  table's curves; ``memory`` at the device's achieved bandwidth in the kernel's ``dtype``.
* ``count`` identical launches (the per-head loop of a kernel, the q and k of RoPE).

NB: reductions (``mean``, the LayerNorm statistics) are timed as memory-bound passes like
the rest; their arithmetic is below the bandwidth bound on every device of the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import attrs

#: How a kernel is timed (see the module docstring).
KernelKind = Literal["gemm", "attention", "conv", "memory"]
#: Whose eager code a recipe follows.
Flavour = Literal["official", "diffusers"]
#: Bytes per element of every dtype an eager kernel runs in (float64 and int64 included).
EAGER_DTYPE_BYTES: dict[str, int] = {"fp64": 8, "fp32": 4, "bf16": 2, "fp16": 2, "i64": 8, "i32": 4}
#: Bytes of an fp32 value, which the recipes' fp32 statistics, residuals and log-sum-exps are in
F32 = EAGER_DTYPE_BYTES["fp32"]
_BY_SIZE = {8: "fp64", 4: "fp32", 2: "bf16"}


def dtype_of(element_bytes: int, half: str = "bf16") -> str:
    """The float dtype of ``element_bytes`` (2 bytes: ``half``, the stage's 16-bit dtype)."""
    return half if element_bytes == 2 else _BY_SIZE[element_bytes]


@attrs.frozen
class KernelCall:
    """``count`` launches of one kernel (see the module docstring for the conventions)."""

    op: str  # the aten op (``addmm``, ``_to_copy``, ``mul``) or the fused kernel (``flash_attention``)
    kind: KernelKind
    dtype: str  # the dtype it computes in (a cast: the wider of its two)
    bytes: int  # of one launch: inputs + outputs
    tensor_flops: int = 0  # of one launch
    cuda_flops: int = 0
    count: int = 1
    #: the shape the curves read: GEMM and convolution FLOPs of one launch; attention: its dims
    call_flops: int = 0
    dims: tuple[tuple[str, int], ...] = ()
    #: what a cast converts where a what-if needs to know (``weight``: a module's weight cast per
    #: call, which FP8 checkpoints do not need); "" otherwise
    operand: str = ""

    def launched(self, times: int) -> KernelCall:
        """The same kernel launched ``times`` as often (a module called that many times); fields by
        position, checked against ``attrs.evolve`` in ``tests/test_sweep.py``."""
        return KernelCall(
            self.op,
            self.kind,
            self.dtype,
            self.bytes,
            self.tensor_flops,
            self.cuda_flops,
            self.count * times,
            self.call_flops,
            self.dims,
            self.operand,
        )


def memory(op: str, dtype: str, *tensor_bytes: int, count: int = 1, cuda_flops: int = 0) -> KernelCall:
    """A memory-bound kernel reading and writing ``tensor_bytes`` (inputs and outputs)."""
    return KernelCall(op, "memory", dtype, sum(tensor_bytes), cuda_flops=cuda_flops, count=count)


def cast(elements: int, src: str, dst: str, *, count: int = 1, operand: str = "") -> KernelCall:
    """``x.to(dst)``: one ``_to_copy`` reading ``elements`` in ``src``, writing them in ``dst``; no
    launch when the two are the same dtype (``x.float()`` of an fp32 tensor returns it); ``operand``
    names what is cast where a what-if needs to know (see :class:`KernelCall`)."""
    a, b = EAGER_DTYPE_BYTES[src], EAGER_DTYPE_BYTES[dst]
    launches = 0 if src == dst else count
    call = memory("_to_copy", src if a >= b else dst, elements * a, elements * b, count=launches)
    return attrs.evolve(call, operand=operand) if operand else call


def attention(
    op: str,
    dtype: str,
    batch: int,
    heads: int,
    q_tokens: int,
    kv_tokens: int,
    head_dim: int,
    *,
    lse: bool,
    bias: bool = False,
) -> KernelCall:
    """One fused attention kernel in ``dtype``: q, k, v (and a [batch, heads, q, kv] bias) in, o
    out, and the fp32 log-sum-exp when it writes one (flash always; memory-efficient only with
    grad); 4·q·kv·head_dim FLOPs per head (the two matmuls)."""
    a = EAGER_DTYPE_BYTES[dtype]
    q = batch * heads * q_tokens * head_dim
    kv = batch * heads * kv_tokens * head_dim
    scores = batch * heads * q_tokens * kv_tokens
    return KernelCall(
        op,
        "attention",
        dtype,
        (2 * q + 2 * kv + (scores if bias else 0)) * a + (batch * heads * q_tokens * 4 if lse else 0),
        4 * scores * head_dim,
        dims=(("head_dim", head_dim), ("kv_tokens", kv_tokens), ("q_tokens", q_tokens)),
    )


Recipe = Callable[..., tuple[KernelCall, ...]]
#: (flavour, stage, rule) → recipe(act=<the stage's 16-bit dtype>, leaf=<the leaf's id>, **dims)
RECIPES: dict[tuple[str, str, str], Recipe] = {}


def register_recipe(flavour: Flavour, stage: str, *rules: str) -> Callable[[Recipe], Recipe]:
    """Register ``fn`` as the eager kernels of ``rules`` in ``stage`` under ``flavour`` (a rule runs
    different code in different stages: the DiT's RMSNorm is not the VAE's); duplicates are refused."""

    def wrap(fn: Recipe) -> Recipe:
        for rule in rules:
            if (flavour, stage, rule) in RECIPES:
                raise ValueError(f"eager recipe ({flavour}, {stage}, {rule}) is already registered")
            RECIPES[(flavour, stage, rule)] = fn
        return fn

    return wrap


def eager_calls(
    flavour: str, stage: str, leaf: str, rule: str | None, dims: Mapping[str, int | bool], act: str
) -> tuple[KernelCall, ...] | None:
    """The eager kernels of leaf ``leaf`` (its id in the stage) of ``rule`` at ``dims`` under
    ``flavour`` (None: no recipe for it)."""
    recipe = RECIPES.get((flavour, stage, rule or ""))
    if recipe is None or not dims:  # a leaf with no dims has no shape to derive kernels from
        return None
    return recipe(act=act, leaf=leaf, **{k: int(v) for k, v in dims.items()})
