"""The kernels a real module launches when it runs eagerly: every aten op that moves data.

A ``TorchDispatchMode`` under ``torch.utils.module_tracker.ModuleTracker`` (the mechanism
``capture.py`` uses) records, for every aten op a forward dispatches, the op, the dtypes and
the bytes of its tensor inputs and outputs, and the module path it ran in. Ops that launch no
kernel are dropped: the caller names them (``free``: views, which give a new shape or stride over
the same storage, and allocations, which no kernel writes until an op does:
``compare.mapping.ZERO_OPS``). What is left is the eager kernel list
:mod:`ditmeter.analytic.eager` predicts, compared per module in ``tests/test_eager.py``.

NB: on meta tensors ``scaled_dot_product_attention`` picks its math path (bmm, softmax); a GPU
picks the flash kernel for 16-bit inputs of head dim up to 256, so the capture sends such calls
to ``aten._scaled_dot_product_flash_attention`` (``memory.flash_attention(gpu_kernel=True)``):
one op, as on a GPU.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.module_tracker import ModuleTracker

from ditmeter.tracer.memory import flash_attention, flat_tensors

_DTYPES = {
    torch.float64: "fp64",
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.complex128: "fp64",
    torch.complex64: "fp32",
    torch.bool: "bool",
}


@attrs.frozen
class Launch:
    """One kernel launch of a captured op."""

    op: str  # the aten op's packet name (``addmm``, ``_to_copy``)
    dtype: str  # the widest float dtype of its tensors (attention: of q)
    bytes: int  # its float tensor inputs plus outputs (a flash kernel's RNG state is not data)
    module: str  # the innermost module path it ran in ("" for the root)


class _Recorder(TorchDispatchMode):
    def __init__(self, tracker: ModuleTracker, free: frozenset[str]) -> None:
        super().__init__()
        self.tracker = tracker
        self.free = free
        self.launches: list[Launch] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        op = func.overloadpacket.__name__
        if f"aten.{op}" not in self.free:
            tensors = [t for t in flat_tensors((args, kwargs or {}, out)) if t.dtype in _DTYPES]
            # ModuleTracker's parents are a set: the innermost module has the longest path
            parents = sorted((p for p in self.tracker.parents if p != "Global"), key=len)
            self.launches.append(
                Launch(
                    op,
                    _kernel_dtype(op, tensors),
                    sum(t.numel() * t.element_size() for t in tensors),
                    _strip(parents[-1]) if parents else "",
                )
            )
        return out


_WIDTH = {"fp64": 3, "fp32": 2, "bf16": 1, "fp16": 1}


def _kernel_dtype(op: str, tensors: list[torch.Tensor]) -> str:
    names = [_DTYPES[t.dtype] for t in tensors]
    floats = [n for n in names if n in _WIDTH]
    if "attention" in op and floats:
        return floats[0]
    return max(floats, key=_WIDTH.__getitem__) if floats else (names[0] if names else "")


def _strip(path: str) -> str:
    """ModuleTracker's ``WanTransformer3DModel.blocks.0.attn1`` → ``blocks.0.attn1``."""
    head, _, rest = path.partition(".")
    return rest if head[:1].isupper() else path


def eager_launches(run: Callable[[], Any], free: frozenset[str], *modes: TorchDispatchMode) -> list[Launch]:
    """Every kernel launch of ``run()`` (a module's forward), in order; ``free``: the aten ops
    (``aten.view``) that launch none; ``modes``: other dispatch modes measuring the same run
    (``memory.LiveBytes``: its peak from this run, not another)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        tracker = stack.enter_context(ModuleTracker())
        stack.enter_context(flash_attention(gpu_kernel=True))
        for mode in modes:
            stack.enter_context(mode)
        recorder = stack.enter_context(_Recorder(tracker, free))
        run()
    launches: list[Launch] = recorder.launches
    return launches


def under(launches: Iterable[Launch], prefix: str) -> list[Launch]:
    """The launches that ran inside module ``prefix`` (``blocks.1``)."""
    return [x for x in launches if x.module == prefix or x.module.startswith(prefix + ".")]


@contextlib.contextmanager
def cuda_autocast_on_cpu(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """Run code written for CUDA autocast on CPU tensors with the casts autocast inserts.

    The official Wan code wraps its forward in ``autocast('cuda', bf16)`` and its fp32 regions in
    ``autocast('cuda', dtype=float32)``; on a CPU build CUDA autocast is disabled. Here every
    ``torch.amp.autocast('cuda', …)`` becomes the CPU's autocast (the dispatcher's own cast
    insertion, not an emulation), inside an outer CPU autocast in ``dtype``. CPU autocast does not
    take fp32: such a region runs with autocast off, which is what CUDA's fp32 autocast does to the
    fp32 tensors and weights those regions hold.

    NB: CPU and CUDA autocast list different ops; they agree on every op the Wan DiT gives a
    16-bit tensor (``linear``/``addmm``, ``conv3d``; its norms take ``.float()`` first), which
    ``tests/test_eager.py`` checks on the captured ops.
    """
    real = torch.amp.autocast

    class _OnCpu(real):  # type: ignore[misc, valid-type]
        def __init__(
            self, device_type: str = "cuda", dtype: torch.dtype | None = None, **kwargs: Any
        ) -> None:
            on = kwargs.pop("enabled", True) and dtype in (None, torch.bfloat16, torch.float16)
            super().__init__(
                "cpu" if device_type == "cuda" else device_type, dtype=dtype, enabled=on, **kwargs
            )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.amp.autocast = _OnCpu  # type: ignore[misc, assignment]
        try:
            with real("cpu", dtype=dtype):
                yield
        finally:
            torch.amp.autocast = real  # type: ignore[misc]
