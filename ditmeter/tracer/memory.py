"""Peak live bytes of one run of a real module, measured from tensor lifetimes (no GPU needed).

:class:`LiveBytes` is a ``TorchDispatchMode``: every storage an aten op
creates is counted from its creation until the last tensor viewing it dies
(a ``weakref.finalize`` on the storage, the mechanism
``torch.distributed._tools.mem_tracker.MemTracker`` uses), so the peak is the
most bytes of op-made tensors alive at once. It runs on meta tensors: nothing
is allocated, shapes and dtypes are exact.

What is counted: every tensor the run makes (activations, temporaries, the
output). Not counted: the weights, the inputs, the caching allocator's
rounding and reuse, fragmentation, workspaces of cuBLAS/cuDNN, the CUDA
context. Why not MemTracker itself: on the 14B DiT at 480p it took 9× a
bare FlopCounterMode pass (module snapshots on every hook); this mode does one
dictionary update per output.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


def flat_tensors(tree: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) tuple or list of op outputs or arguments, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, tuple | list):
        return [t for item in tree for t in flat_tensors(item)]
    return []


class LiveBytes(TorchDispatchMode):
    """Live and peak bytes of the storages made by ops run under this mode."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}
        self._views: dict[Any, tuple[bool, ...]] = {}  # op → which returns alias an input

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def _aliasing(self, func: Any) -> tuple[bool, ...]:
        """Per return of ``func``: whether it aliases an input (a view, an in-place result)."""
        flags = self._views.get(func)
        if flags is None:
            flags = tuple(r.alias_info is not None for r in func._schema.returns)
            self._views[func] = flags
        return flags

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        flags = self._aliasing(func)
        returns = out if isinstance(out, tuple | list) and len(flags) > 1 else (out,)
        made = [
            t for r, view in zip(returns, flags, strict=False) if not view for t in flat_tensors(r)
        ]  # a view or an in-place result makes no new bytes
        for t in made:
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._sizes:
                continue
            size = storage.nbytes()
            self._sizes[key] = size
            weakref.finalize(storage, self._free, key)
            self.live += size
        self.peak = max(self.peak, self.live)
        return out


@contextlib.contextmanager
def flash_attention() -> Iterator[None]:
    """``scaled_dot_product_attention`` without a mask runs as the flash kernel
    (``aten._scaled_dot_product_flash_attention``), as on a GPU.

    NB: on meta tensors SDPA picks its math path, which materialises the L×L
    scores (hundreds of GiB for a 14B video) that no GPU run holds; the flash
    op has a meta kernel with the real output and log-sum-exp shapes.
    """
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        mask = args[0] if args else kwargs.get("attn_mask")
        if mask is not None or kwargs.get("enable_gqa") or query.shape[-1] != value.shape[-1]:
            return original(query, key, value, *args, **kwargs)
        dropout = args[1] if len(args) > 1 else kwargs.get("dropout_p", 0.0)
        causal = args[2] if len(args) > 2 else kwargs.get("is_causal", False)
        scale = args[3] if len(args) > 3 else kwargs.get("scale")
        return torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, dropout, causal, False, scale=scale
        )[0]

    F.scaled_dot_product_attention = flash
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def peak_live_bytes(module: nn.Module, inputs: Mapping[str, Any]) -> int:
    """The peak bytes of tensors one ``module(**inputs)`` keeps alive at once (no grad), with
    flash-style attention."""
    mode = LiveBytes()
    with torch.no_grad(), flash_attention(), mode:
        out = module(**inputs)
        del out
    return mode.peak
