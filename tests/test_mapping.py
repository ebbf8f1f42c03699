"""Node-rule sets and the assignment order, on small hand-written node sequences."""

from __future__ import annotations

import pytest

from ditmeter.analytic.cost import Cost
from ditmeter.analytic.tree import Composite, Leaf, walk
from ditmeter.compare.mapping import AmbiguousRules, NodeInfo, NodeRule, NodeRules, assign

# A toy analytic tree: block.{norm (leaf), mod (inline leaf), attn.{q, core}}
TREE = Composite(
    "",
    (
        Composite(
            "block",
            (
                Leaf("norm", "norm_mod", "layer_norm", Cost(cuda_flops=1)),
                Leaf("mod", "norm_mod", "modulate", Cost(cuda_flops=1)),
                Composite(
                    "attn",
                    (
                        Leaf("q", "attn_proj", "linear", Cost(tensor_flops=8)),
                        Leaf("core", "attn_core", "attention_core", Cost(tensor_flops=4)),
                    ),
                ),
            ),
        ),
    ),
)
ROWS = list(walk(TREE))


def alias(path: str) -> str | None:
    """Reference paths: block.ln → block.norm, block.sa → block.attn, block.sa.wq → block.attn.q."""
    table = {
        "": "",
        "block": "block",
        "block.ln": "block.norm",
        "block.sa": "block.attn",
        "block.sa.wq": "block.attn.q",
    }
    return table.get(path)


def n(name: str, op: str, path: str, *inputs: str, cls: str = "M") -> NodeInfo:
    return NodeInfo(name, op, path, cls, inputs)


NODES = [
    n("a", "aten._to_copy.default", "block"),  # x.float() before the norm: stays in the segment
    n("b", "aten.native_layer_norm.default", "block.ln", "a"),
    n("c", "aten._to_copy.default", "block", "b"),  # .type_as on the norm's result → the norm
    n("d", "aten.mul.Tensor", "block", "c"),  # after ln: modulate
    n("e", "aten.addmm.default", "block.sa.wq", "d"),
    n("f", "aten.view.default", "block.sa", "e", cls="Attn"),
    n("g", "aten.bmm.default", "block.sa", "f", cls="Attn"),
    n("h", "aten.add.Tensor", "block", "g"),  # after sa: no rule → unmatched
]
RULES = [
    NodeRule("mod", r"block", "block.mod", after="ln"),
    NodeRule("start", r"block", "block.mod", after=""),
    NodeRule("core", r"block\.sa", "block.attn.core", classes=("Attn",)),
]


def test_assignment_order_alias_cast_rule_and_statuses() -> None:
    got = {a.node: a for a in assign(NODES, ROWS, alias, RULES)}
    assert [(got[k].leaf_id, got[k].mapping, got[k].status) for k in "abcdefgh"] == [
        ("block.mod", "rule:start", "costed"),
        ("block.norm", "alias", "costed"),
        ("block.norm", "cast", "costed"),
        ("block.mod", "rule:mod", "costed"),
        ("block.attn.q", "alias", "costed"),
        ("block.attn.core", "rule:core", "zero"),  # a view costs nothing wherever it sits
        ("block.attn.core", "rule:core", "costed"),
        (None, None, "unmatched"),
    ]
    assert got["h"].module_id == "block" and got["g"].module_id == "block.attn"
    assert got["e"].rule == "linear" and got["e"].category == "attn_proj"


def test_a_class_filter_keeps_a_rule_off_other_modules() -> None:
    nodes = [*NODES[:6], n("g", "aten.bmm.default", "block.sa", "f", cls="Other")]
    got = {a.node: a for a in assign(nodes, ROWS, alias, RULES)}
    assert got["g"].status == "unmatched"


def test_the_more_specific_rule_wins_and_equal_ones_are_ambiguous() -> None:
    specific = NodeRule(
        "core-bmm", r"block\.sa", "block.attn.q", ops=("aten.bmm.default",), classes=("Attn",)
    )
    got = {a.node: a for a in assign(NODES, ROWS, alias, [*RULES, specific])}
    assert got["g"].leaf_id == "block.attn.q" and got["f"].leaf_id == "block.attn.core"
    twin = NodeRule("twin", r"block\..*", "block.attn.q", classes=("Attn",))
    with pytest.raises(AmbiguousRules, match="core, twin"):
        assign(NODES, ROWS, alias, [*RULES, twin])


def test_a_rule_must_target_an_analytic_leaf() -> None:
    bad = NodeRule("to-container", r"block", "block.attn", after="sa")
    with pytest.raises(AmbiguousRules, match="not an analytic leaf"):
        assign(NODES, ROWS, alias, [*RULES, bad])


def test_a_rule_set_refuses_duplicate_names_and_match_keys() -> None:
    one = NodeRule("x", r"a", "a.b")
    with pytest.raises(ValueError, match="already registered"):
        NodeRules("test-only", (one, NodeRule("x", r"other", "a.b")))
    with pytest.raises(ValueError, match="duplicates 'x'"):
        NodeRules("test-only", (one, NodeRule("y", r"a", "a.c")))
    assert len(NodeRules("test-only", (one,)).without("x")) == 0
