"""A module tree of costs: leaves carry rule results, composites sum children.

Repeated identical modules (the transformer blocks) are one ``Repeated`` node
holding a single template, costed once and multiplied, so evaluating a workload
never builds 40 block objects. :func:`walk` expands the template into one row
per real module id (``blocks.0`` … ``blocks.39``) only when a report asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from ditmeter.analytic.cost import Cost, total
from ditmeter.analytic.registry import apply_rule


@attrs.frozen
class Leaf:
    """One module the rules cost directly."""

    name: str
    category: str
    rule: str
    cost: Cost

    @property
    def total(self) -> Cost:
        return self.cost


def rule_leaf(name: str, category: str, rule: str, **dims: int | bool) -> Leaf:
    """A leaf costed by the registered cost rule ``rule`` at ``dims``."""
    return Leaf(name, category, rule, apply_rule(rule, **dims))


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


@attrs.frozen
class ModuleRow:
    """One module of the expanded tree (``module_id`` "" is the root)."""

    module_id: str
    parent_id: str | None
    depth: int
    kind: str  # "leaf", "composite" or "repeated"
    category: str | None
    rule: str | None
    cost: Cost


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def walk(node: Node, prefix: str = "", parent: str | None = None, depth: int = 0) -> Iterator[ModuleRow]:
    """Yield every module, parents before children, with hierarchical ids.

    The root's id is "" (as in ``nn.Module.named_modules``).
    """
    module_id = prefix
    if isinstance(node, Leaf):
        yield ModuleRow(module_id, parent, depth, "leaf", node.category, node.rule, node.cost)
        return
    if isinstance(node, Composite):
        yield ModuleRow(module_id, parent, depth, "composite", None, None, node.total)
        for child in node.children:
            yield from walk(child, _join(module_id, child.name), module_id, depth + 1)
        return
    yield ModuleRow(module_id, parent, depth, "repeated", None, None, node.total)
    for i in range(node.count):
        yield from walk(node.template, _join(module_id, str(i)), module_id, depth + 1)


def leaf_totals_by(node: Node, key: str = "category") -> dict[str, Cost]:
    """Sum leaf costs by ``category`` or ``rule`` without expanding repeats."""
    out: dict[str, Cost] = {}

    def visit(n: Node, times: int) -> None:
        if isinstance(n, Leaf):
            k = getattr(n, key)
            out[k] = out.get(k, Cost()) + n.cost.times(times)
        elif isinstance(n, Composite):
            for c in n.children:
                visit(c, times)
        else:
            visit(n.template, times * n.count)

    visit(node, 1)
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
