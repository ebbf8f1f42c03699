"""A torch.profiler Chrome trace of a user's own run, read into ops, module calls and GPU work.

What ``ditmeter ingest`` joins to the module tree (``docs/ingest.md`` has the
facts this rests on). Three links, each from the trace's own ids and times:

1. **GPU event → op**: the ``cpu_op`` whose ``External id`` the kernel (memcpy,
   memset) carries; failing that, its launch (``cuda_runtime``/``cuda_driver``
   with the same ``correlation``) and the op that contains the launch on its thread.
2. **op → module call**: per thread, one sweep over the ``python_function`` and
   ``cpu_op`` events sorted by (start, −duration) with a stack: an op's module is
   the innermost ``nn.Module: <Class>_<k>`` event around it. Only top-level ops
   (no op around them) are kept: an op's nested ops and their kernels are its own, and
   so are their FLOPs where torch has a formula for them (:mod:`~ditmeter.tracer.trace_flops`,
   from the shapes the trace recorded; the outermost such op of each nesting counts).
3. **module call → dotted path** (:func:`resolve_calls`): against the real
   module's ``named_modules()``: a call of a stage's root class with no stage
   around it starts a run at path ``""``; a child ``C_k`` under a parent at ``P``
   takes the first unused module of class ``C`` under ``P`` (through
   ``ModuleList``/``ModuleDict``) in registration order whose own modules can hold the
   classes the call's children were seen with (the official ``WanModel`` calls
   ``time_embedding`` before ``text_embedding``, both ``Sequential``, in the other
   order than it registers them) and, where the trace recorded shapes, whose own
   parameters' shapes the call's ops took (diffusers' residual block calls
   ``conv_shortcut`` before ``conv1``); the same label under the same parent keeps
   its path (the same instance called again, in every run). Python frames can
   stand for module calls (``frame_calls``: diffusers' ``AutoencoderKLWan._decode``,
   a method the pipeline calls instead of the module).

NB: a trace recorded without ``with_stack=True`` has no ``python_function``
events and so no modules; :attr:`TraceEvents.has_stack` says so and the
command refuses it rather than guess. Ops run inside ``torch.compile``d or
CUDA-graph regions are not seen one by one.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ditmeter.tracer.chrome_trace import (
    DEVICE_CATS,
    LAUNCH_CATS,
    args_of,
    complete_events,
    load_trace,
    recorded_run,
    timed,
)
from ditmeter.tracer.trace_flops import counted as has_formula
from ditmeter.tracer.trace_flops import op_flops

MODULE_PREFIX = "nn.Module: "
#: Containers that are never called: their children count as their parent's.
CONTAINERS = frozenset({"ModuleList", "ModuleDict"})
_EPS_US = 1e-3  # one nanosecond of slack for the profiler's float microseconds (launch → op)


@attrs.frozen
class ModuleCall:
    """One ``nn.Module`` call in the trace."""

    label: str  # "WanAttention_0": the class and the instance's first-call rank
    cls: str
    parent: int | None  # the enclosing module call
    ts_us: float
    end_us: float


@attrs.frozen
class Op:
    """One top-level op (no op around it) with the GPU work it launched."""

    thread: str
    ts_us: float
    dur_us: float
    name: str  # the profiler's name, e.g. "aten::linear"
    call: int | None  # the innermost module call around it
    functions: tuple[str, ...] = ()  # the Python functions between that module's call and the op
    flops: int | None = None  # by torch's formulas from the recorded shapes (trace_flops); None: none
    shapes: frozenset[tuple[int, ...]] = frozenset()  # its tensor inputs' shapes (record_shapes)
    gpu_us: float = 0.0
    kernels: tuple[str, ...] = ()  # names of the GPU events it launched, in order


@attrs.frozen
class DeviceEvent:
    """One kernel, memcpy or memset on a GPU."""

    name: str
    cat: str
    ts_us: float
    dur_us: float
    device: str
    op: int | None  # the top-level op that launched it


@attrs.frozen
class TraceEvents:
    """What :func:`read_trace` found: module calls, top-level ops and GPU events."""

    calls: list[ModuleCall]
    ops: list[Op]
    device: list[DeviceEvent]
    has_stack: bool
    device_names: tuple[str, ...]  # the trace's deviceProperties (GPU names)
    span_us: float  # first event's start to last event's end
    run: dict[str, Any] | None = None  # what a ditmeter profile says it ran (chrome_trace.recorded_run)


def _op_name(e: dict[str, Any]) -> str:
    return str(e.get("name", ""))


def _function(name: str) -> str:
    """``rope_apply`` of a frame named ``wan/modules/model.py(39): rope_apply``."""
    return name.rpartition(": ")[2]


_Top = tuple[int, int | None, tuple[str, ...]]  # (op event, innermost module event, functions)


@attrs.frozen
class _Swept:
    parent: dict[int, int | None]  # module event → the module event around it
    top_of: dict[int, int]  # op event → its top-level op event
    tops: list[_Top]
    flops: dict[int, int]  # top-level op event → the FLOPs of the counted ops in it


#: The Python functions kept between a module's call and an op, innermost last: a rule matches the
#: function that wraps its ops (``rope_apply``), and a trace nested deeper than this (one crafted to
#: be, or a recursion) keeps a bounded chain per event.
MAX_FUNCTIONS = 64


def _sweep(
    items: list[tuple[int, int, int, int]],
    modules: Mapping[int, str],
    names: Mapping[int, str],
    flops_of: Callable[[int], int | None],
) -> _Swept:
    """One thread's events (start ns, end ns, kind 0 python / 1 op, event index), sorted by
    (start, −duration, kind): a stack of the events around the current one.

    An event is inside the one below it on the stack when it ends no later; one that starts where a
    timed event (or any op) ends is after it, not in it (zero-duration ops at an op's end are its
    siblings). Gives each module event's parent module event, each op's top-level op, the
    top-level ops with their innermost module event and the Python functions between that module
    and them, and the FLOPs in each top-level op (the outermost op with a formula on each nesting
    chain).
    """
    # (end, duration, kind, innermost module, outermost op, functions since that module, counted)
    stack: list[tuple[int, int, int, int | None, int | None, tuple[str, ...], bool]] = []
    out = _Swept({}, {}, [], {})
    for ts, end, kind, i in items:
        while stack and (end > stack[-1][0] or (ts >= stack[-1][0] and (stack[-1][1] > 0 or stack[-1][2]))):
            stack.pop()
        module, top, funcs, counted = stack[-1][3:] if stack else (None, None, (), False)
        if kind == 0:
            if i in modules:
                out.parent[i], module, funcs = module, i, ()
            else:  # the innermost few only: a chain copied whole at every level grows as its square
                funcs = (*funcs[1 - MAX_FUNCTIONS :], _function(names[i]))
        else:
            if top is None:
                out.tops.append((i, module, funcs))
                top = i
            out.top_of[i] = top
            flops = None if counted else flops_of(i)
            if flops is not None:
                out.flops[top] = out.flops.get(top, 0) + flops
                counted = True
        stack.append((end, end - ts, kind, module, top, funcs, counted))
    return out


def _ns(us: float) -> int:
    """The profiler's float microseconds as integer nanoseconds (its own resolution): containment
    is decided on integers, not on floats whose last digit is rounding at 5.6e12 µs."""
    return round(us * 1000)


#: Python frames taken as module calls: (file name, function) → the call's class name. A pipeline
#: that calls a method (``vae.decode``) rather than the module leaves no ``nn.Module`` event for it.
FrameCalls = Mapping[tuple[str, str], str]


def _frame_key(name: str) -> tuple[str, str]:
    """``("autoencoder_kl_wan.py", "_decode")`` of ``…/autoencoder_kl_wan.py(1063): _decode``."""
    where, _, function = name.rpartition(": ")
    return where.partition("(")[0].rpartition("/")[2], function


def read_trace(path: Path, frame_calls: FrameCalls | None = None) -> TraceEvents:
    """Module calls, top-level ops and GPU events of the Chrome trace at ``path`` (module
    docstring); ``frame_calls`` are Python frames to take as module calls too."""
    data = load_trace(path)
    events = complete_events(data, path)
    props = data.get("deviceProperties") if isinstance(data, dict) else None
    names = tuple(str(p.get("name", "?")) for p in props if isinstance(p, dict)) if props else ()
    return attrs.evolve(events_of(events, names, frame_calls), run=recorded_run(data))


def events_of(
    events: list[dict[str, Any]], device_names: tuple[str, ...] = (), frame_calls: FrameCalls | None = None
) -> TraceEvents:
    """:func:`read_trace` of already loaded complete events."""
    frame_calls = frame_calls or {}
    spans = {i: timed(i, e) for i, e in enumerate(events) if e.get("cat") in _TIMED_CATS}
    ns = {i: (_ns(ts), _ns(ts) + _ns(dur)) for i, (ts, dur) in spans.items()}
    by_thread: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    module_events: dict[int, str] = {}  # event index -> its label ("WanAttention_0")
    frames: dict[int, str] = {}  # event index -> the frame's name, for the other Python events
    has_stack = False
    for i, e in enumerate(events):
        cat = e.get("cat")
        if cat not in ("python_function", "cpu_op"):
            continue
        thread = f"{e.get('pid')}:{e.get('tid')}"
        if cat == "python_function":
            has_stack = True
            name = _op_name(e)
            if name.startswith(MODULE_PREFIX):
                module_events[i] = name.removeprefix(MODULE_PREFIX)
            elif frame_calls and (key := _frame_key(name)) in frame_calls:
                module_events[i] = f"{frame_calls[key]}_0"
            else:
                frames[i] = name
        by_thread[thread].append((*ns[i], 0 if cat == "python_function" else 1, i))
    parent_ev: dict[int, int | None] = {}
    top_of: dict[int, int] = {}
    tops: list[tuple[str, _Top]] = []
    flops: dict[int, int] = {}

    def flops_of(i: int) -> int | None:
        name = _op_name(events[i])
        return op_flops(name, args_of(events[i])) if has_formula(name) else None

    for thread, items in by_thread.items():
        items.sort(key=_order)
        swept = _sweep(items, module_events, frames, flops_of)
        parent_ev.update(swept.parent)
        top_of.update(swept.top_of)
        flops.update(swept.flops)
        tops += [(thread, top) for top in swept.tops]

    order = sorted(module_events, key=lambda i: _order((*ns[i], 0, i)))  # the sweep's order
    call_of = {ev: n for n, ev in enumerate(order)}
    calls = []
    for ev in order:
        label = module_events[ev]
        ts, dur = spans[ev]
        up = parent_ev.get(ev)
        parent = call_of.get(up) if up is not None else None
        calls.append(ModuleCall(label, label.rpartition("_")[0] or label, parent, ts, ts + dur))

    tops.sort(key=lambda t: spans[t[1][0]][0])
    op_row = {top[0]: n for n, (_, top) in enumerate(tops)}
    ops = [
        Op(
            thread,
            *spans[i],
            _op_name(events[i]),
            call_of.get(m) if m is not None else None,
            funcs,
            flops=flops.get(i),
            shapes=_shapes(args_of(events[i]).get("Input Dims")),
        )
        for thread, (i, m, funcs) in tops
    ]
    device = _device_events(events, spans, top_of, op_row, ops)
    gpu: dict[int, float] = defaultdict(float)
    kernels: dict[int, list[str]] = defaultdict(list)
    for d in device:
        if d.op is not None:
            gpu[d.op] += d.dur_us
            kernels[d.op].append(d.name)
    ops = [
        attrs.evolve(o, gpu_us=gpu[n], kernels=tuple(kernels[n])) if n in gpu else o
        for n, o in enumerate(ops)
    ]
    bounds = [(ts, ts + dur) for ts, dur in spans.values()]
    span = max(e for _, e in bounds) - min(s for s, _ in bounds) if bounds else 0.0
    return TraceEvents(calls, ops, device, has_stack, device_names, span)


_TIMED_CATS = frozenset({"python_function", "cpu_op", *DEVICE_CATS, *LAUNCH_CATS})


def _shapes(dims: Any) -> frozenset[tuple[int, ...]]:
    """The tensor shapes of an op's ``Input Dims`` (scalars' ``[]`` and tensor lists left out)."""
    if not isinstance(dims, list):
        return frozenset()
    return frozenset(
        tuple(d) for d in dims if isinstance(d, list) and d and all(isinstance(v, int) for v in d)
    )


def _order(item: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """The sweep's order: start, then the longer first (the parent), then Python before ops."""
    ts, end, kind, _ = item
    return ts, ts - end, kind


def _device_events(
    events: list[dict[str, Any]],
    spans: Mapping[int, tuple[float, float]],
    top_of: Mapping[int, int],
    op_row: Mapping[int, int],
    ops: list[Op],
) -> list[DeviceEvent]:
    """Every GPU event with the top-level op that launched it (External id, else correlation)."""
    by_external: dict[Any, int] = {}
    for i, e in enumerate(events):
        if e.get("cat") == "cpu_op" and i in top_of:
            ext = args_of(e).get("External id")
            if ext is not None:
                by_external[ext] = op_row[top_of[i]]
    tops_by_thread: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for n, o in enumerate(ops):
        tops_by_thread[o.thread].append((o.ts_us, o.ts_us + o.dur_us, n))
    launch_op: dict[Any, int] = {}
    for i, e in enumerate(events):
        if e.get("cat") in LAUNCH_CATS:
            corr = args_of(e).get("correlation")
            ext = args_of(e).get("External id")
            if corr is None:
                continue
            if ext in by_external:
                launch_op[corr] = by_external[ext]
                continue
            spans_t = tops_by_thread.get(f"{e.get('pid')}:{e.get('tid')}", [])
            ts = spans[i][0]
            j = bisect.bisect_right(spans_t, (ts, float("inf"), 0)) - 1
            if j >= 0 and spans_t[j][0] <= ts <= spans_t[j][1] + _EPS_US:
                launch_op[corr] = spans_t[j][2]
    out = []
    for i, e in enumerate(events):
        if e.get("cat") not in DEVICE_CATS:
            continue
        a = args_of(e)
        op = by_external.get(a.get("External id")) if a.get("External id") is not None else None
        if op is None:
            op = launch_op.get(a.get("correlation"))
        ts, dur = spans[i]
        device = f"{a.get('device', e.get('pid'))}"
        out.append(DeviceEvent(_op_name(e), str(e.get("cat")), ts, dur, device, op))
    return out


#: A real module's modules: path → (class name, its own parameters' shapes), registration order.
Modules = Mapping[str, tuple[str, tuple[tuple[int, ...], ...]]]


@attrs.frozen
class Root:
    """A stage's real module as a run calls it: the class names of its root in a trace, and its
    modules where the stage is mapped module by module."""

    stage: str
    classes: tuple[str, ...]
    modules: Modules | None = None
    transparent: tuple[str, ...] = ()  # classes never called themselves: their children are their parent's


@attrs.frozen
class Place:
    """Where one module call sits: its stage, the run of that stage (the root call it is under)
    and its dotted path in the stage's module. ``resolved`` is False where no module of the stage
    matched the call; ``path`` is then its nearest resolved ancestor's."""

    stage: str | None
    run: int | None
    path: str = ""
    resolved: bool = True


_OUTSIDE = Place(None, None)


def _reachable(modules: Modules, transparent: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Per path, the modules a call under it can be: its children, and through containers (and
    the ``transparent`` classes) theirs."""
    kids: dict[str, list[str]] = defaultdict(list)
    for path in modules:
        if path:
            kids[path.rpartition(".")[0]].append(path)

    def reach(path: str) -> list[str]:
        out = []
        for child in kids.get(path, []):
            out.append(child)
            if modules[child][0] in CONTAINERS or modules[child][0] in transparent:
                out += reach(child)
        return out

    return {path: reach(path) for path in modules}


def _fits(
    call_kids: Counter[str],
    module_kids: Counter[str],
    took: set[tuple[int, ...]],
    params: tuple[tuple[int, ...], ...],
) -> bool:
    """A call whose children had these classes, and whose own ops took these shapes (none known:
    no constraint), can be a module holding these and owning parameters of these shapes."""
    kids = all(module_kids[cls] >= n for cls, n in call_kids.items())
    return kids and (not took or all(shape in took for shape in params))


def resolve_calls(calls: Sequence[ModuleCall], roots: Sequence[Root], ops: Sequence[Op] = ()) -> list[Place]:
    """The :class:`Place` of every call (module docstring, link 3). A stage without ``modules``
    is taken whole: every call under its root sits at its root. With ``ops`` (recorded with
    shapes) a module whose own parameters' shapes none of the call's ops took is not the call's
    (diffusers' residual block calls ``conv_shortcut`` before ``conv1``, both causal convs)."""
    root_of = {cls: r for r in roots for cls in r.classes}
    tables = {r.stage: r.modules for r in roots if r.modules is not None}
    reach = {r.stage: _reachable(r.modules, r.transparent) for r in roots if r.modules is not None}
    holds = {
        stage: {p: Counter(modules[k][0] for k in kids) for p, kids in reach[stage].items()}
        for stage, modules in tables.items()
    }
    seen: dict[int, dict[str, str]] = defaultdict(dict)  # call -> its children's labels -> classes
    for c in calls:
        if c.parent is not None:
            seen[c.parent][c.label] = c.cls
    took: dict[int, set[tuple[int, ...]]] = defaultdict(set)  # call -> shapes its own ops took
    for o in ops:
        if o.call is not None:
            took[o.call] |= o.shapes
    memo: dict[tuple[str, str, str, str], str | None] = {}  # (stage, root label, parent path, label)
    used: dict[tuple[str, str], set[str]] = defaultdict(set)
    root_label: dict[int, str] = {}
    places: list[Place] = []
    for n, c in enumerate(calls):
        up = places[c.parent] if c.parent is not None else _OUTSIDE
        if up.stage is None or up.run is None:
            root = root_of.get(c.cls)
            if root is not None:
                root_label[n] = c.label
            places.append(_OUTSIDE if root is None else Place(root.stage, n))
            continue
        if up.stage not in tables or not up.resolved:
            places.append(up)
            continue
        label = root_label[up.run]
        key = (up.stage, label, up.path, c.label)
        if key not in memo:
            modules, taken = tables[up.stage], used[(up.stage, label)]
            free = [p for p in reach[up.stage][up.path] if modules[p][0] == c.cls and p not in taken]
            kids, held = Counter(seen[n].values()), holds[up.stage]
            fit = [p for p in free if _fits(kids, held[p], took[n], modules[p][1])]
            found = fit[0] if fit else free[0] if free else None
            if found is not None:
                taken.add(found)
            memo[key] = found
        path = memo[key]
        places.append(attrs.evolve(up, path=path) if path is not None else attrs.evolve(up, resolved=False))
    return places
