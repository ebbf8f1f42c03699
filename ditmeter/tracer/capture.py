"""Capture one forward as a torch.fx graph of aten ops with module paths and FLOPs.

Why not ``torch.export`` or ``make_fx``: on the 14B model at w003-720p,
non-strict ``torch.export`` took 6.6 s and ``make_fx(record_module_stack=True)``
8.4 s (and lost the module stack on addmm nodes), against 0.74 s for a bare
``FlopCounterMode`` pass. This recorder uses FlopCounterMode's own mechanism, a
``TorchDispatchMode`` under ``torch.utils.module_tracker.ModuleTracker``, so it
sees exactly the aten ops FlopCounterMode counts, at about the same cost
(measured 1.06×), and builds the fx graph directly.

Each node's ``meta`` holds: ``module_path`` (diffusers path, "" for the root),
``module_class``, ``flops`` (the node's own count from ``torch.utils.flop_counter``'s
registered formula, 0 when none is registered), ``in_shapes``, ``in_dtypes``,
``out_shapes``, ``out_dtypes``, ``bytes_in`` and ``bytes_out``; per input tensor
``in_bytes`` and ``in_sources`` (the ``(node, output index)`` whose data it reads,
None for parameters and model inputs), per output ``out_bytes``, and
``returned`` (the output indices the model returns) on the nodes that made them; a collective
(run under a process group: ``ditmeter.tracer.collectives``) also holds ``collective`` (op,
group size and ranks, dtype, bytes in and out).

Edges are data flow between recorded ops: from the op that produced each input
tensor, and from the last op that wrote into the input's storage in place
(``out[..., 0::2].copy_(x)`` in the RoPE of the diffusers port).
NB: parameters and model inputs are not nodes; their bytes are in ``bytes_in``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry
from torch.utils.module_tracker import ModuleTracker

from ditmeter.tracer.collectives import Collective, collective_call
from ditmeter.tracer.memory import flat_tensors


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _storage(t: torch.Tensor) -> int:
    """Identity of ``t``'s storage: views of one buffer share it (meta tensors too)."""
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError):  # tensors without storage: only the object
        return id(t)


def _written_args(func: Any, args: Any, kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors ``func`` mutates in place (``copy_``'s destination, ``add_``'s self)."""
    out: list[torch.Tensor] = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        out += flat_tensors(value)
    return out


def _name(source: tuple[fx.Node, int] | None) -> tuple[str, int] | None:
    return None if source is None else (source[0].name, source[1])


#: Prefix of the ``record_function`` range around each op when profiling.
NODE_RANGE_PREFIX = "ditmeter::"
#: Between a range's node name and the module path that ran the op (``ditmeter::addmm_3 @ blocks.0.ffn.0``).
RANGE_MODULE_SEP = " @ "


def range_node(name: str) -> str:
    """The node name of a ``ditmeter::`` range name (without the prefix and the module path)."""
    return name[len(NODE_RANGE_PREFIX) :].split(RANGE_MODULE_SEP)[0]


class _Recorder(TorchDispatchMode):
    """Records every aten op as an fx node; with ``annotate``, runs each op inside a
    ``record_function`` range named after its node, so torch.profiler times it."""

    def __init__(self, tracker: ModuleTracker, root_prefix: str, annotate: str | None = None) -> None:
        super().__init__()
        self.tracker = tracker
        self.root_prefix = root_prefix
        self.annotate = annotate  # None, or the prefix of each range's node name
        self.graph = fx.Graph()
        self._producer: dict[int, tuple[fx.Node, int]] = {}  # tensor → (node, output index)
        self._writer: dict[int, tuple[fx.Node, int]] = {}  # storage → last in-place writer
        self._alive: list[torch.Tensor] = []  # keeps ids unique for the whole capture

    def _module_path(self) -> str:
        deepest = max(self.tracker.parents, key=len, default="")
        if deepest in ("", "Global", self.root_prefix):
            return ""
        return deepest.removeprefix(self.root_prefix + ".")

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = flat_tensors((args, kwargs))
        made = [self._producer.get(id(t)) for t in inputs]
        written = [self._writer.get(_storage(t)) for t in inputs]
        parents = list(dict.fromkeys(s[0] for s in (*made, *written) if s is not None))
        node = self.graph.create_node("call_function", func, tuple(parents), {})
        if self.annotate is not None:  # the module path in the name too: Perfetto shows where it ran
            path = self._module_path()
            name = NODE_RANGE_PREFIX + self.annotate + node.name + (RANGE_MODULE_SEP + path if path else "")
            with torch.profiler.record_function(name):
                out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        packet = func._overloadpacket
        flops = int(flop_registry[packet](*args, **kwargs, out_val=out)) if packet in flop_registry else 0
        outputs = flat_tensors(out)
        node.meta.update(
            module_path=self._module_path(),
            flops=flops,
            in_shapes=[tuple(t.shape) for t in inputs],
            in_dtypes=[str(t.dtype).removeprefix("torch.") for t in inputs],
            out_shapes=[tuple(t.shape) for t in outputs],
            out_dtypes=[str(t.dtype).removeprefix("torch.") for t in outputs],
            bytes_in=sum(_nbytes(t) for t in inputs),
            bytes_out=sum(_nbytes(t) for t in outputs),
            # per input: (node name, output index) of the op whose data it reads (the last
            # in-place writer of its storage, else its producer); None for parameters and inputs
            in_sources=[_name(w or m) for m, w in zip(made, written, strict=True)],
            in_bytes=[_nbytes(t) for t in inputs],
            out_bytes=[_nbytes(t) for t in outputs],
        )
        call = collective_call(func, args, kwargs, out)
        if call is not None:  # under a process group: the collective beside the compute nodes
            node.meta["collective"] = call
        for i, t in enumerate(outputs):
            self._producer[id(t)] = (node, i)
            self._alive.append(t)
        for t in _written_args(func, args, kwargs):
            self._writer[_storage(t)] = (node, 0)
        return out

    def mark_outputs(self, result: Any) -> None:
        """Flag the nodes whose outputs the model returns (``meta["returned"]``: output indices)."""
        for t in flat_tensors(result):
            source = self._producer.get(id(t))
            if source is not None:
                source[0].meta.setdefault("returned", set()).add(source[1])


def flop_counter_pass(model: nn.Module, inputs: Mapping[str, Any]) -> FlopCounterMode:
    """The bare reference: ``model(**inputs)`` under ``FlopCounterMode``, nothing else.

    ``get_total_flops()`` and ``get_flop_counts()`` (keyed by the root class name
    plus the module path) are what ``capture_forward`` must agree with.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**inputs)
    return counter


def capture_forward(model: nn.Module, inputs: Mapping[str, Any], *, annotate: str | None = None) -> fx.Graph:
    """Run ``model(**inputs)`` once and record every aten op (inputs may hold non-tensor
    keywords such as ``return_dict=False``).

    On meta tensors nothing computes. With ``annotate`` (a name prefix such as
    ``"dit."``; real tensors, under ``torch.profiler``) each op runs inside a
    ``record_function`` range named ``ditmeter::<prefix><node name>``. NB: the
    recorder keeps every intermediate alive until the forward ends (so tensor
    ids stay unique), which raises peak memory.
    """
    tracker = ModuleTracker()
    recorder = _Recorder(tracker, type(model).__name__, annotate)
    with torch.no_grad(), tracker, recorder:
        result = model(**inputs)
    recorder.mark_outputs(result)
    classes = {name: type(m).__name__ for name, m in model.named_modules()}
    for node in recorder.graph.nodes:
        node.meta["module_class"] = classes[node.meta["module_path"]]
    return recorder.graph


def graph_collectives(graph: fx.Graph) -> list[Collective]:
    """The collectives of a captured run, in order (nodes whose ``meta`` holds ``collective``)."""
    return [n.meta["collective"] for n in graph.nodes if "collective" in n.meta]
