"""FLOPs of a profiled op from the input shapes the trace recorded (``record_shapes=True``), by
torch's own formulas (``torch.utils.flop_counter.flop_registry``).

A Chrome trace names each op (``aten::addmm``) with its inputs' ``Input Dims``
and its scalars' ``Concrete Inputs``. The formulas that need no more than that
are applied as registered: matmuls (``mm``, ``addmm``, ``bmm``, ``baddbmm``) and
the attention kernels SDPA dispatches to (``_scaled_dot_product_flash_attention``,
``_efficient_attention``, ``_cudnn_attention``). A convolution's formula needs
its output shape, which the trace does not record: it is computed from the
input, the weight and the stride, padding and dilation the trace gives (not
transposed; ``convolution`` and ``_convolution``, whose arguments share that order).

NB: where ``aten::_scaled_dot_product_flash_attention_for_cpu`` has no registered
formula it is counted with the CUDA flash kernel's (the same attention). Ops no
formula covers count None: flash-attn's varlen kernel (the official code on a
GPU), the raw ``_flash_attention_forward`` (its formula needs the outputs),
element-wise ops. The trace's FLOPs are those of the matmuls, attention and
convolutions it can see.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

#: Ops counted with another op's formula (same arguments, same maths).
_ALIASES = {"_scaled_dot_product_flash_attention_for_cpu": "_scaled_dot_product_flash_attention"}
#: The longest Concrete Inputs entry parsed (a stride, padding or dilation list is a few characters).
_MAX_LITERAL = 1000
_CONVOLUTIONS = frozenset({"convolution", "_convolution"})
#: Registered formulas that need the op's outputs (``get_raw``), which a trace does not hold.
_NEED_OUTPUTS = frozenset(
    {
        "_flash_attention_forward",
        "_efficient_attention_forward",
        "cudnn_convolution",
        "convolution_overrideable",
    }
)


@cache
def _formulas() -> dict[str, Callable[..., int]]:
    """aten op name (no namespace, no overload) → its registered formula."""
    from torch.utils.flop_counter import flop_registry

    out = {str(packet).removeprefix("aten."): f for packet, f in flop_registry.items()}
    for name in _NEED_OUTPUTS:
        out.pop(name, None)
    for alias, target in _ALIASES.items():
        out.setdefault(alias, out[target])
    return out


def counted(name: str) -> bool:
    """Whether ``name`` (``aten::addmm``) has a formula (cheap: decides before parsing args)."""
    namespace, _, op = name.partition("::")
    return namespace == "aten" and op in _formulas()


def _ints(text: Any) -> list[int] | None:
    """``"[1, 2]"`` → [1, 2] (a Concrete Inputs entry); None for anything else (another literal, a
    list holding other than ints, text nested too deeply or with an over-long integer)."""
    if not isinstance(text, str) or not text or len(text) > _MAX_LITERAL:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list | tuple) or not all(type(v) is int for v in value):
        return None
    return list(value)


def _shape(dims: Any) -> list[int] | None:
    """A recorded tensor shape (a non-empty list of sizes >= 0); None for a scalar or anything else."""
    if not isinstance(dims, list) or not dims or not all(type(d) is int and d >= 0 for d in dims):
        return None
    return dims


def _conv_out(dims: Sequence[Any], concrete: Sequence[Any]) -> list[int] | None:
    """The output shape of ``convolution(input, weight, bias, stride, padding, dilation,
    transposed, …)`` from the trace's shapes and scalars; None when transposed or unreadable."""
    if len(dims) < 7 or len(concrete) < 7 or str(concrete[6]).lower() != "false":
        return None
    x, w = _shape(dims[0]), _shape(dims[1])
    stride, padding, dilation = (_ints(concrete[i]) for i in (3, 4, 5))
    if x is None or w is None or stride is None or padding is None or dilation is None:
        return None
    spatial = len(x) - 2
    expand = [v * spatial if len(v) == 1 else v for v in (stride, padding, dilation)]
    if spatial < 1 or len(w) != len(x) or any(len(v) != spatial for v in expand):
        return None
    if min(expand[0]) < 1 or min(expand[1]) < 0 or min(expand[2]) < 1:
        return None
    out = [
        (x[2 + i] + 2 * expand[1][i] - expand[2][i] * (w[2 + i] - 1) - 1) // expand[0][i] + 1
        for i in range(spatial)
    ]
    return [x[0], w[0], *out] if min(out) > 0 else None


def op_flops(name: str, args: dict[str, Any]) -> int | None:
    """FLOPs of one op by torch's formula from its recorded shapes; None without a formula or
    without shapes (a trace recorded without ``record_shapes``)."""
    namespace, _, op = name.partition("::")
    formula = _formulas().get(op) if namespace == "aten" else None
    dims = args.get("Input Dims")
    if formula is None or not isinstance(dims, list):
        return None
    concrete = args.get("Concrete Inputs")
    concrete = concrete if isinstance(concrete, list) else []
    shapes: list[Any] = [_shape(d) for d in dims]
    out: list[int] | None = None
    if op in _CONVOLUTIONS:
        out = _conv_out(dims, concrete)
        if out is None:
            return None
        shapes[6] = False  # transposed (refused above otherwise)
    else:  # the tensors' shapes; scalars (beta, dropout_p …) are the formulas' defaults
        while shapes and shapes[-1] is None:
            shapes.pop()
    try:
        flops = formula(*shapes, out_val=out)  # torch's shape_wrapper takes the output as out_val
    except (TypeError, ValueError, IndexError, AttributeError, KeyError, ArithmeticError, RecursionError):
        return None
    return int(flops) if isinstance(flops, int | float) and math.isfinite(flops) else None
