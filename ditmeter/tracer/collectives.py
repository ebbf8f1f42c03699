"""Collectives of real parallel code, run in one process under torch's fake process group.

:func:`fake_rank` makes this process rank ``r`` of ``N`` (``init_process_group("fake",
…)``: collectives return without moving data, shapes and dtypes are real), and
:class:`CollectiveRecorder` is a ``TorchDispatchMode`` that writes down every
collective the code issues with its group, dtype and bytes. Together they
measure, rank by rank, what a multi-GPU plan sends, with the parallel code the
user runs (diffusers' context parallelism, FSDP2) on meta or fake tensors; see
``docs/parallel.md`` for what they see and the workarounds the real code needs.

The ops are the functional collectives (``_c10d_functional.all_to_all_single``,
``all_gather_into_tensor``, ``reduce_scatter_tensor``, ``all_reduce``) and the
c10d in-place ones FSDP2 and older code use (``c10d._allgather_base_``,
``c10d.allgather_``, ``c10d.alltoall_``, …); ``wait_tensor`` and
``_wrap_tensor_autograd`` are bookkeeping and are not recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from ditmeter.tracer.memory import flat_tensors

_NAMESPACES = frozenset({"c10d", "_c10d_functional", "_c10d_functional_autograd"})
_BOOKKEEPING = frozenset({"wait_tensor", "_wrap_tensor_autograd"})


@attrs.frozen
class Collective:
    """One collective on this rank: the op, its group, and the bytes of its input and output."""

    op: str  # the aten overload's name without namespace (``all_to_all_single``)
    group_size: int
    group_ranks: tuple[int, ...]
    dtype: str
    input_bytes: int
    output_bytes: int
    input_shape: tuple[int, ...]


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _group(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dist.ProcessGroup | None:
    """The process group an op runs on: a group name (functional ops) or a ProcessGroup object."""
    from torch.distributed import distributed_c10d

    resolve = distributed_c10d._resolve_process_group  # type: ignore[attr-defined]  # group name → group
    for value in (*args, *kwargs.values()):
        if isinstance(value, dist.ProcessGroup):
            return value
        if isinstance(value, str):
            with contextlib.suppress(Exception):
                return resolve(value)  # type: ignore[no-any-return,arg-type]
    return None


def collective_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Collective | None:
    """The collective an aten call is (None for any other op, and for the bookkeeping ops)."""
    if func.namespace not in _NAMESPACES or func._opname in _BOOKKEEPING:
        return None
    if func.namespace == "c10d":  # in-place ops: (outputs, inputs, …)
        outputs, inputs = flat_tensors(args[0]), flat_tensors(args[1]) if len(args) > 1 else []
    else:  # functional ops: (input, …) → output
        inputs, outputs = flat_tensors(args[0]), flat_tensors(out)
    group = _group(args, kwargs)
    ranks = tuple(dist.get_process_group_ranks(group)) if group is not None else ()
    first = (inputs or outputs)[0]
    return Collective(
        op=str(func._opname),
        group_size=len(ranks) or dist.get_world_size(),
        group_ranks=ranks,
        dtype=str(first.dtype).removeprefix("torch."),
        input_bytes=_nbytes(inputs),
        output_bytes=_nbytes(outputs),
        input_shape=tuple(first.shape),
    )


class CollectiveRecorder(TorchDispatchMode):
    """Records every collective run under it (see the module docstring), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Collective] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        call = collective_call(func, args, kwargs, out)
        if call is not None:
            self.calls.append(call)
        return out


@contextlib.contextmanager
def fake_rank(rank: int, world_size: int) -> Iterator[None]:
    """This process as rank ``rank`` of ``world_size`` under torch's fake process group (no data
    moves; every collective returns at once), for the duration of the block."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def cpu_flash_attention() -> Iterator[None]:
    """Give ``aten._scaled_dot_product_flash_attention`` a CPU kernel for the duration, so that real
    CPU processes can run diffusers' ``_native_flash`` backend, the one a Ring plan needs (it
    returns the log-sum-exp).

    NB a workaround: the op has CUDA kernels only (on a CPU it raises, and in a multi-process run
    the other ranks then wait forever in their next collective); PyTorch's own CPU flash kernel,
    ``_scaled_dot_product_flash_attention_for_cpu``, takes the same [batch, heads, tokens, dim]
    layout and returns the output and log-sum-exp; the rest of the CUDA op's outputs (sequence
    offsets, RNG state, debug mask) are unused without dropout and returned empty.
    """

    def flash(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        return_debug_mask: bool = False,
        *,
        scale: float | None = None,
    ) -> tuple[Any, ...]:
        cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out, lse = cpu(q, k, v, dropout_p, is_causal, scale=scale)
        empty, state = q.new_empty(0), torch.empty((), dtype=torch.long)
        return out, lse, empty, empty, q.shape[2], k.shape[2], state, state, empty

    lib = torch.library.Library("aten", "IMPL")
    lib.impl("_scaled_dot_product_flash_attention", flash, "CPU")
    try:
        yield
    finally:
        lib._destroy()
