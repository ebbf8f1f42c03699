"""A module tree of costs: leaves carry rule results, composites sum children.

Repeated identical modules (the transformer blocks) are one ``Repeated`` node
holding a single template, costed once and multiplied, so evaluating a workload
never builds 40 block objects. :func:`walk` expands the template into one row
per real module id (``blocks.0`` … ``blocks.39``) only when a report asks.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar, cast

import attrs

from ditmeter.analytic.cost import Cost, total
from ditmeter.analytic.registry import apply_rule

Dims = tuple[tuple[str, int | bool], ...]
#: A leaf the real code calls several times per run with different shapes (the VAE: once per chunk
#: of frames): each distinct call's dims and how many calls had them.
Runs = tuple[tuple[Dims, int], ...]


@attrs.frozen
class Leaf:
    """One module the rules cost directly; ``dims`` are the rule's arguments (the kernel's shape).

    ``runs``: where one run calls the module several times (the VAE's per-chunk calls), each
    distinct call's dims with its count, ``cost`` their sum and ``dims`` the first call's; empty
    where ``dims`` is the one call (the eager kernels are derived per call from these)."""

    name: str
    category: str
    rule: str
    cost: Cost
    dims: Dims = ()
    runs: Runs = ()

    @property
    def total(self) -> Cost:
        return self.cost


def rule_leaf(name: str, category: str, rule: str, **dims: int | bool) -> Leaf:
    """A leaf costed by the registered cost rule ``rule`` at ``dims``."""
    return Leaf(name, category, rule, apply_rule(rule, **dims), tuple(dims.items()))


@attrs.frozen
class Composite:
    """A module whose cost is the exact sum of its children."""

    name: str
    children: tuple[Node, ...]
    total: Cost = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names under {self.name!r}: {names}")
        object.__setattr__(self, "total", total(tuple(c.total for c in self.children)))


@attrs.frozen
class Repeated:
    """``count`` identical copies of ``template`` named ``name.0`` … ``name.{count-1}``."""

    name: str
    count: int
    template: Composite
    total: Cost = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "total", self.template.total.times(self.count))


Node = Leaf | Composite | Repeated
V = TypeVar("V")


@attrs.frozen(cache_hash=True)
class ModuleRow:
    """One module of the walked tree (a stage's root has the stage's name as its id).

    ``copies`` is how many real modules the row stands for: 1 in an expanded
    walk; in a compact walk the template of a ``Repeated`` node is visited
    once, under ``<name>.*``, with ``copies`` = the product of the counts above it.
    """

    module_id: str
    parent_id: str | None
    depth: int
    kind: str  # "leaf", "composite" or "repeated"
    category: str | None
    rule: str | None
    cost: Cost
    copies: int = 1
    dims: Dims = ()
    runs: Runs = ()  # a leaf's per-call dims (:class:`Leaf`)

    def with_copies(self, copies: int) -> ModuleRow:
        """This row standing for ``copies`` modules (``attrs.evolve``'s result, built directly: the
        sweep makes one per eager kernel)."""
        return ModuleRow(
            self.module_id,
            self.parent_id,
            self.depth,
            self.kind,
            self.category,
            self.rule,
            self.cost,
            copies,
            self.dims,
            self.runs,
        )

    @property
    def total(self) -> Cost:
        """The cost of every copy the row stands for."""
        return self.cost if self.copies == 1 else self.cost.times(self.copies)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def walk(node: Node, prefix: str = "", *, expand: bool = True) -> Iterator[ModuleRow]:
    """Every module of ``node``'s tree, parents before children: the one traversal of a cost tree.

    The root's id is ``prefix`` (a stage name, or "" as in ``nn.Module.named_modules``).
    ``expand`` gives one row per real module (``blocks.0`` … ``blocks.39``);
    ``expand=False`` visits a repeated template once (``blocks.*``, see ``copies``),
    which is what totals by category or dtype need.
    """
    stack: list[tuple[Node, str, str | None, int, int]] = [(node, prefix, None, 0, 1)]
    while stack:
        n, module_id, parent, depth, copies = stack.pop()
        if isinstance(n, Leaf):
            c, r = n.category, n.rule
            yield ModuleRow(module_id, parent, depth, "leaf", c, r, n.cost, copies, n.dims, n.runs)
            continue
        kind = "composite" if isinstance(n, Composite) else "repeated"
        yield ModuleRow(module_id, parent, depth, kind, None, None, n.total, copies)
        if isinstance(n, Composite):
            children = [(c, _join(module_id, c.name), module_id, depth + 1, copies) for c in n.children]
        elif expand:
            children = [
                (n.template, _join(module_id, str(i)), module_id, depth + 1, copies) for i in range(n.count)
            ]
        else:
            children = [(n.template, _join(module_id, "*"), module_id, depth + 1, copies * n.count)]
        stack.extend(reversed(children))


def leaf_totals_by(node: Node, key: str = "category") -> dict[str, Cost]:
    """Sum leaf costs by ``category`` or ``rule`` (a compact walk: repeats are not expanded)."""
    out: dict[str, Cost] = {}
    for row in walk(node, expand=False):
        if row.kind == "leaf":
            k = getattr(row, key)
            out[k] = out.get(k, Cost()) + row.total
    return out


def rollup(rows: Iterable[ModuleRow], values: Mapping[str, V], zero: V) -> dict[str, V]:
    """Sum per-module ``values`` (usually the leaves') into every ancestor: each module gets its
    own value plus its children's totals, added in the children's order. ``rows`` come parents
    first, as :func:`walk` yields them."""
    ordered = list(rows)
    children: dict[str, list[str]] = {}
    for r in ordered:
        if r.parent_id is not None:
            children.setdefault(r.parent_id, []).append(r.module_id)
    out: dict[str, V] = {}
    for r in reversed(ordered):  # every child before its parent
        value = values.get(r.module_id, zero)
        for child in children.get(r.module_id, ()):
            value = value + out[child]  # type: ignore[operator]
        out[r.module_id] = value
    return out


def layer_pattern(module_id: str, repeated: Iterable[str]) -> str:
    """``blocks.7.ffn.0`` → ``blocks.*.ffn.0``: one layer across the copies of a repeated module.

    ``repeated`` holds the ids of ``Repeated`` modules (``kind == "repeated"``);
    other numeric names (``time_embedding.0``) are kept.
    """
    for rep in repeated:
        prefix = f"{rep}." if rep else ""
        if module_id.startswith(prefix):
            head, _, rest = module_id[len(prefix) :].partition(".")
            if head.isdigit():
                return f"{prefix}*" + (f".{rest}" if rest else "")
    return module_id


#: Trees built while :func:`shared_builds` is active, by their builder's key (None: not active).
_SHARED: dict[Hashable, Node] | None = None


@contextmanager
def shared_builds() -> Iterator[None]:
    """Within the block, a tree built by :func:`shared` with an equal key is built once: a sweep's
    analyses share their stages (the 1.3B's and the 14B's VAE decode alike). The trees go with the
    block, so a rule changed afterwards (a test's patch) is never hidden by a stale tree."""
    global _SHARED
    outer = _SHARED
    _SHARED = {} if outer is None else outer
    try:
        yield
    finally:
        _SHARED = outer


N = TypeVar("N", Leaf, Composite, Repeated)


def shared(key: Hashable, build: Callable[[], N]) -> N:
    """``build()``, or within :func:`shared_builds` the tree already built for ``key`` (a key
    names one builder, so the tree is of the type it builds)."""
    if _SHARED is None:
        return build()
    if key not in _SHARED:
        _SHARED[key] = build()
    return cast(N, _SHARED[key])
