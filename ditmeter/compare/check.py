"""From a captured graph to its nodes table (``map_graph``) and to a verdict (``check_graph``).

``trace`` and ``profile`` map each stage's graph with :func:`map_graph`;
:func:`check_graph` adds the roll-up and the gate for one graph on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from ditmeter.analytic.analysis import qualify
from ditmeter.analytic.tree import ModuleRow, Node, walk
from ditmeter.compare.gate import Verdict, evaluate
from ditmeter.compare.join import measured_by_module, nodes_frame
from ditmeter.compare.mapping import NodeRule, assign, node_infos


def map_graph(
    graph: Any,
    rows: Sequence[ModuleRow],
    canonical_id: Callable[[str], str | None],
    rules: Iterable[NodeRule],
    *,
    stage: str,
    times: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Assign every node of ``stage``'s ``graph`` to a module of ``rows`` (video-wide ids) with a
    reference's name table and node rules; ``times`` (seconds per node) fills ``measured_time_s``."""
    assignments = assign(node_infos(graph), rows, canonical_id, list(rules), lambda m: qualify(stage, m))
    return nodes_frame(graph, assignments, rows, stage, times)


def check_graph(
    graph: Any,
    tree: Node,
    canonical_id: Callable[[str], str | None],
    rules: Iterable[NodeRule],
    tolerance: float,
    stage: str,
) -> tuple[pd.DataFrame, Verdict]:
    """The nodes table and the gate's verdict of ``stage``'s ``graph`` against the analytic ``tree``."""
    rows = list(walk(tree, stage))
    nodes = map_graph(graph, rows, canonical_id, rules, stage=stage)
    modules = pd.DataFrame(
        {
            "module_id": [r.module_id for r in rows],
            "parent_id": [r.parent_id for r in rows],
            "kind": [r.kind for r in rows],
            "tensor_flops": [r.cost.tensor_flops for r in rows],
        }
    )
    modules["measured_flops"] = modules["module_id"].map(measured_by_module(nodes, rows))
    return nodes, evaluate(modules, nodes, tolerance)
