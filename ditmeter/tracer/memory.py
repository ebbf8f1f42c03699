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

import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: The largest head dim FlashAttention's kernels take (2 and 3: 256).
MAX_FLASH_HEAD_DIM = 256


def flat_tensors(tree: Any) -> list[torch.Tensor]:
    """Tensors in an aten op's arguments or result (nested tuples, lists, dicts), in order.

    NB: aten schemas only nest these containers, so this is ``tree_flatten``
    without its generality (it was a tenth of the capture's time).
    """
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, tuple | list):
        return [t for item in tree for t in flat_tensors(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in flat_tensors(item)]
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


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class FlashAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` without a mask runs as the flash kernel
    (``aten._scaled_dot_product_flash_attention``), as on a GPU; with ``gpu_kernel`` only the calls
    a GPU's flash kernel takes (16-bit q, k, v of head dim up to 256: ``tracer/kernels.py`` counts
    launches, and an fp32 call runs another kernel there). A function mode, so it sees every call
    however the code bound the function, and leaves the others to the modes around it.

    NB: on meta tensors SDPA picks its math path, which materialises the L×L
    scores (hundreds of GiB for a 14B video) that no GPU run holds; the flash
    op has a meta kernel with the real output and log-sum-exp shapes.
    """

    def __init__(self, gpu_kernel: bool = False) -> None:
        super().__init__()
        self.gpu_kernel = gpu_kernel

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is not torch.nn.functional.scaled_dot_product_attention:
            return func(*args, **kwargs)
        named = dict(zip(_SDPA_ARGS, args, strict=False)) | kwargs
        q, v = named["query"], named["value"]
        fused = q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] <= MAX_FLASH_HEAD_DIM
        plain = named.get("attn_mask") is None and not named.get("enable_gqa") and q.shape[-1] == v.shape[-1]
        if not plain or (self.gpu_kernel and not fused):
            return func(*args, **kwargs)
        return torch.ops.aten._scaled_dot_product_flash_attention(
            q,
            named["key"],
            v,
            named.get("dropout_p", 0.0),
            named.get("is_causal", False),
            False,
            scale=named.get("scale"),
        )[0]


def flash_attention(gpu_kernel: bool = False) -> FlashAttention:
    """The :class:`FlashAttention` mode, to use as ``with flash_attention(): …``."""
    return FlashAttention(gpu_kernel)


def peak_live_bytes(module: nn.Module, inputs: Mapping[str, Any]) -> int:
    """The peak bytes of tensors one ``module(**inputs)`` keeps alive at once (no grad), with
    flash-style attention."""
    mode = LiveBytes()
    with torch.no_grad(), flash_attention(), mode:
        out = module(**inputs)
        del out
    return mode.peak
