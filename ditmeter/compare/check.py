"""One call from a captured graph to a verdict: map, join, roll up, gate.

The building block ``trace`` runs for the DiT and, per component, for the text
encoder and the image encoder (each with its own reference's alias table and
node rules).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ditmeter.analytic.tree import Node, walk
from ditmeter.compare.gate import Verdict, evaluate
from ditmeter.compare.join import measured_by_module, nodes_frame
from ditmeter.compare.mapping import NODE_RULES, assign, node_infos


def check_graph(
    graph: Any,
    tree: Node,
    canonical_id: Callable[[str], str | None],
    reference: str,
    tolerance: float,
) -> tuple[pd.DataFrame, Verdict]:
    """The nodes table and the gate's verdict of ``graph`` against the analytic ``tree``."""
    rows = list(walk(tree))
    nodes = nodes_frame(graph, assign(node_infos(graph), rows, canonical_id, NODE_RULES[reference]), rows)
    modules = pd.DataFrame(
        {
            "module_id": [r.module_id for r in rows],
            "kind": [r.kind for r in rows],
            "tensor_flops": [r.cost.tensor_flops for r in rows],
        }
    )
    modules["measured_flops"] = modules["module_id"].map(measured_by_module(nodes, rows))
    return nodes, evaluate(modules, nodes, tolerance)
