"""From a captured graph to its nodes table (``map_graph``) and to a verdict (``check_graph``).

``trace`` and ``profile`` map each stage's graph with :func:`map_graph`;
:func:`check_graph` adds the roll-up and the gate for one graph on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from ditmeter.analytic.tree import ModuleRow, Node, walk
from ditmeter.compare.gate import Verdict, evaluate
from ditmeter.compare.join import measured_by_module, nodes_frame
from ditmeter.compare.mapping import NODE_RULES, assign, node_infos


def map_graph(
    graph: Any,
    rows: Sequence[ModuleRow],
    canonical_id: Callable[[str], str | None],
    reference: str,
    *,
    qualify: Callable[[str], str] = str,
    stage: str = "dit",
    prefix: str = "",
    times: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Assign every node of ``graph`` to a module of ``rows`` with ``reference``'s node rules.

    ``qualify``/``prefix`` put a stage's ids and node names into the video-wide
    namespace; ``times`` (seconds per node) fills ``measured_time_s``.
    """
    assignments = assign(node_infos(graph), rows, canonical_id, NODE_RULES[reference], qualify)
    return nodes_frame(graph, assignments, rows, times, stage=stage, prefix=prefix)


def check_graph(
    graph: Any,
    tree: Node,
    canonical_id: Callable[[str], str | None],
    reference: str,
    tolerance: float,
) -> tuple[pd.DataFrame, Verdict]:
    """The nodes table and the gate's verdict of ``graph`` against the analytic ``tree``."""
    rows = list(walk(tree))
    nodes = map_graph(graph, rows, canonical_id, reference)
    modules = pd.DataFrame(
        {
            "module_id": [r.module_id for r in rows],
            "kind": [r.kind for r in rows],
            "tensor_flops": [r.cost.tensor_flops for r in rows],
        }
    )
    modules["measured_flops"] = modules["module_id"].map(measured_by_module(nodes, rows))
    return nodes, evaluate(modules, nodes, tolerance)
