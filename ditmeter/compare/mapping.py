"""Map every traced node to the analytic module whose rule costs it.

One registry of node rules per reference module, duplicates refused. A node
is assigned, in this order:

1. **alias**: its module path maps (through the reference's alias table) onto
   an analytic *leaf*, e.g. ``blocks.3.attn1.to_q`` → ``blocks.3.self_attn.q``.
2. **cast**: a dtype conversion a container runs on a child module's result
   (``self.norm2(x).type_as(x)``) belongs to that child's leaf: the analytic
   rules fuse casts into the op that produces them. Other casts (the
   ``x.float()`` in ``self.norm1(x.float())``) stay in the container's segment.
3. **rule**: a :class:`NodeRule` for ops a container runs inline (modulate,
   residuals, the attention core, RoPE). It matches the module path, and
   optionally the module class, the aten op, and ``after``: the child module
   that ran last inside that container before the node (the segment of the
   container's ``forward`` the op sits in). The most specific matching rule
   wins; two equally specific matches are a bug in the rules and raise.

Each assigned node is then ``zero`` (a view or allocation op, or a leaf whose
rule is registered as zero) or ``costed``; a node with no assignment is
``unmatched``. Unmatched nodes with FLOPs fail the gate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from ditmeter.analytic.registry import ZERO_RULES
from ditmeter.analytic.tree import ModuleRow

#: aten ops (overload packets) that move no data and compute nothing: views,
#: metadata and allocation without initialisation.
ZERO_OPS: frozenset[str] = frozenset(
    f"aten.{name}"
    for name in (
        "view",
        "_unsafe_view",
        "reshape",
        "t",
        "transpose",
        "permute",
        "expand",
        "unsqueeze",
        "squeeze",
        "slice",
        "select",
        "split",
        "split_with_sizes",
        "unbind",
        "chunk",
        "detach",
        "alias",
        "as_strided",
        "view_as_real",
        "view_as_complex",
        "empty",
        "empty_like",
        "lift_fresh",
    )
)

#: dtype conversions the cast step may attach to a neighbouring module (any overload): the aten
#: op a captured graph holds, and the composite ops a profiler trace names (``x.to``, ``type_as``).
CAST_OPS: frozenset[str] = frozenset({"aten._to_copy", "aten.to", "aten.type_as"})

STATUSES = ("costed", "zero", "unmatched")


@attrs.frozen
class NodeRule:
    """Nodes run inline by a container module → the analytic leaf that costs them.

    ``path`` is a regular expression over the reference's module path (full
    match); ``target`` an analytic leaf id, with ``\\1``-style groups from
    ``path``. ``after`` is the name of the child module that ran last in the
    container before the node ("" = none yet; None = any). ``ops`` and
    ``classes`` (module class names) restrict the match when not empty.
    """

    name: str
    path: str
    target: str
    after: str | None = None
    ops: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    _compiled: re.Pattern[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.path + r"\Z"))

    @property
    def key(self) -> tuple[str, str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        return (
            self.path,
            self.after,
            tuple(sorted(self.ops)),
            tuple(sorted(self.classes)),
            tuple(sorted(self.functions)),
        )

    @property
    def specificity(self) -> int:
        return (self.after is not None) + bool(self.ops) + bool(self.classes) + bool(self.functions)

    def match(
        self, path: str, module_class: str, op: str, after: str, functions: tuple[str, ...] = ()
    ) -> str | None:
        """The target leaf id if this rule applies to the node, else None."""
        if self.ops and op not in self.ops:
            return None
        if self.functions and not set(self.functions) & set(functions):
            return None
        if self.classes and module_class not in self.classes:
            return None
        if self.after is not None and after != self.after:
            return None
        m = self._compiled.match(path)
        if m is None:
            return None
        return m.expand(self.target) if m.groups() else self.target


@attrs.frozen
class NodeRules:
    """The node rules of one reference module; a second rule with the same name or the same
    match key is refused when the set is built."""

    reference: str
    rules: tuple[NodeRule, ...]

    def __attrs_post_init__(self) -> None:
        names: dict[str, NodeRule] = {}
        keys: dict[object, NodeRule] = {}
        for rule in self.rules:
            if rule.name in names:
                raise ValueError(f"node rule {rule.name!r} is already registered for {self.reference!r}")
            if rule.key in keys:
                raise ValueError(
                    f"node rule {rule.name!r} duplicates {keys[rule.key].name!r} for {self.reference!r}"
                )
            names[rule.name], keys[rule.key] = rule, rule

    def __iter__(self) -> Iterator[NodeRule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def any_overload(self, overload: str) -> NodeRules:
        """The same rules for a trace that names ops without their overload (torch.profiler's
        ``aten::mul``, given to the mapper as ``aten.mul.<overload>``): each rule's ``ops`` match
        every overload of their op."""
        return NodeRules(
            self.reference,
            tuple(
                attrs.evolve(r, ops=tuple(dict.fromkeys(f"{_packet(o)}.{overload}" for o in r.ops)))
                for r in self.rules
            ),
        )

    def without(self, name: str) -> NodeRules:
        """The same set less the rule ``name`` (to show what the gate does when a rule is missing)."""
        return NodeRules(self.reference, tuple(r for r in self.rules if r.name != name))


class AmbiguousRules(Exception):
    """Two equally specific node rules match one node: the rule set is wrong."""


@attrs.frozen
class NodeInfo:
    """What the mapping needs to know about one traced node (execution order)."""

    name: str
    op: str
    module_path: str
    module_class: str
    inputs: tuple[str, ...]  # names of the nodes this one reads
    functions: tuple[str, ...] = ()  # Python functions it ran under inside its module (profiler stacks)


@attrs.frozen
class Assignment:
    """Where one node's cost lives in the analytic tree."""

    node: str
    module_id: str | None  # analytic id of the node's own module path (may be a container)
    leaf_id: str | None  # analytic leaf that costs the node; None when unmatched
    rule: str | None  # the leaf's analytic cost rule
    category: str | None
    mapping: str | None  # "alias", "cast", "rule:<name>"
    status: str  # "costed", "zero", "unmatched"


def _packet(op: str) -> str:
    return op.rsplit(".", 1)[0]


def _is_under(path: str, parent: str) -> bool:
    """True when ``path`` is a strict descendant of ``parent`` ("" is the root)."""
    return path != parent and (parent == "" or path.startswith(parent + "."))


def _segments(nodes: Sequence[NodeInfo]) -> list[str]:
    """For each node, the child of its module that ran last before it ("" if none)."""
    last_child: dict[str, str] = {}
    out: list[str] = []
    for n in nodes:
        out.append(last_child.get(n.module_path, ""))
        parts = n.module_path.split(".") if n.module_path else []
        for depth in range(len(parts)):
            parent = ".".join(parts[:depth])
            last_child[parent] = parts[depth]
    return out


_Found = tuple[str | None, str | None]  # (leaf id, how it was found)


class _Mapper:
    """The three assignment steps over one node sequence, with their caches."""

    def __init__(
        self,
        nodes: Sequence[NodeInfo],
        rows: Iterable[ModuleRow],
        canonical_id: Callable[[str], str | None],
        rules: Sequence[NodeRule],
        qualify: Callable[[str], str],
    ) -> None:
        self.leaves = {r.module_id: r for r in rows if r.kind == "leaf"}
        self.canonical_id = canonical_id
        self.qualify = qualify
        self.rules = rules
        self.by_name = {n.name: n for n in nodes}
        self._alias: dict[str, str | None] = {}
        self._rule_hits: dict[tuple[str, str, str, str, tuple[str, ...]], _Found] = {}

    def module_id(self, path: str) -> str | None:
        if path not in self._alias:
            cid = self.canonical_id(path)
            self._alias[path] = None if cid is None else self.qualify(cid)
        return self._alias[path]

    def by_alias(self, path: str) -> str | None:
        mid = self.module_id(path)
        return mid if mid in self.leaves else None

    def by_cast(self, n: NodeInfo) -> _Found:
        if _packet(n.op) not in CAST_OPS:
            return None, None
        producers = [self.by_name[i] for i in n.inputs if i in self.by_name]
        if len(producers) == 1 and _is_under(producers[0].module_path, n.module_path):
            leaf = self.by_alias(producers[0].module_path)
            if leaf is not None:
                return leaf, "cast"
        return None, None

    def by_rule(self, n: NodeInfo, after: str) -> _Found:
        key = (n.module_path, n.module_class, n.op, after, n.functions)
        if key not in self._rule_hits:
            hits = [
                (r, t)
                for r in self.rules
                if (t := r.match(n.module_path, n.module_class, n.op, after, n.functions))
            ]
            found: _Found = (None, None)
            if hits:
                best = max(r.specificity for r, _ in hits)
                top = [(r, t) for r, t in hits if r.specificity == best]
                if len({t for _, t in top}) > 1:
                    names = ", ".join(r.name for r, _ in top)
                    raise AmbiguousRules(f"{n.name} ({n.op} in {n.module_path!r}): rules {names} all match")
                found = (self.qualify(top[0][1]), f"rule:{top[0][0].name}")
            self._rule_hits[key] = found
        return self._rule_hits[key]

    def assign(self, n: NodeInfo, after: str) -> Assignment:
        found: _Found = (self.by_alias(n.module_path), "alias")
        if found[0] is None:
            found = self.by_cast(n)
        if found[0] is None:
            found = self.by_rule(n, after)
        leaf, how = found
        module_id = self.module_id(n.module_path)
        if leaf is None:
            return Assignment(n.name, module_id, None, None, None, None, "unmatched")
        row = self.leaves.get(leaf)
        if row is None:
            raise AmbiguousRules(f"node rule {how} targets {leaf!r}, which is not an analytic leaf")
        zero = _packet(n.op) in ZERO_OPS or row.rule in ZERO_RULES
        return Assignment(n.name, module_id, leaf, row.rule, row.category, how, "zero" if zero else "costed")


def assign(
    nodes: Sequence[NodeInfo],
    rows: Iterable[ModuleRow],
    canonical_id: Callable[[str], str | None],
    rules: Sequence[NodeRule],
    qualify: Callable[[str], str] = str,
) -> list[Assignment]:
    """Assign every node (see the module docstring for the order and the statuses).

    ``qualify`` turns the reference's own module ids into the ids of ``rows``
    (a stage prefix: ``blocks.0.attn.q`` → ``text_encoder.blocks.0.attn.q``).
    """
    mapper = _Mapper(nodes, rows, canonical_id, rules, qualify)
    return [mapper.assign(n, after) for n, after in zip(nodes, _segments(nodes), strict=True)]


def node_infos(graph: Any) -> list[NodeInfo]:
    """:class:`NodeInfo` of each node of a captured ``torch.fx.Graph``, in execution order."""
    return [
        NodeInfo(
            name=n.name,
            op=str(n.target),
            module_path=n.meta["module_path"],
            module_class=n.meta["module_class"],
            inputs=tuple(i.name for i in n.all_input_nodes),
        )
        for n in graph.nodes
    ]
