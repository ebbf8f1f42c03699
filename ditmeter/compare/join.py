"""Join the traced nodes with the analytic tree: node rows, per-module rollups, one graph.

Node ids in the graph are stable strings: ``module:<module_id>`` (``module:``
is the root) and ``node:<fx node name>``. Edges carry ``kind``: ``contains``
(module → child module, module → the nodes it costs) or ``data`` (node →
node that reads its output).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import networkx as nx
import pandas as pd
import pyarrow as pa

from ditmeter.analytic.tree import ModuleRow
from ditmeter.analytic.tree import rollup as tree_rollup
from ditmeter.compare.gate import rel_error
from ditmeter.compare.mapping import Assignment

NODES_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("node", pa.string(), nullable=False),
        pa.field("order", pa.int32(), nullable=False),
        pa.field("op", pa.string(), nullable=False),
        pa.field("module_path", pa.string(), nullable=False),
        pa.field("module_class", pa.string(), nullable=False),
        pa.field("module_id", pa.string()),
        pa.field("leaf_id", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("category", pa.string()),
        pa.field("mapping", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("measured_flops", pa.int64(), nullable=False),
        pa.field("leaf_tensor_flops", pa.int64()),
        pa.field("bytes_in", pa.int64(), nullable=False),
        pa.field("bytes_out", pa.int64(), nullable=False),
        pa.field("in_shapes", pa.string(), nullable=False),
        pa.field("in_dtypes", pa.string(), nullable=False),
        pa.field("out_shapes", pa.string(), nullable=False),
        pa.field("out_dtypes", pa.string(), nullable=False),
        pa.field("input_nodes", pa.string(), nullable=False),
        pa.field("measured_time_s", pa.float64()),
    ]
)


def _shapes_json(shapes: list[tuple[int, ...]]) -> str:
    """``[(1, 256), (4,)]`` → ``[[1,256],[4]]`` (JSON; json.dumps per node was a tenth of a trace)."""
    return "[" + ",".join("[" + ",".join(map(str, s)) + "]" for s in shapes) + "]"


def _names_json(names: list[str]) -> str:
    """JSON list of identifiers (dtype names, fx node names: no quotes or escapes in them)."""
    return "[" + ",".join(f'"{n}"' for n in names) + "]"


def nodes_frame(
    graph: Any,
    assignments: Sequence[Assignment],
    rows: Sequence[ModuleRow],
    stage: str,
    times: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per captured fx node of ``stage``'s run, in execution order (``nodes.parquet``).

    Node names carry the stage's name, so they are unique across stages
    (``text_encoder.addmm_3``). ``times``: measured seconds per node (by that
    name; ``profile``); null otherwise.
    """

    def name(n: Any) -> str:
        return f"{stage}.{n.name}"

    leaf_flops = {r.module_id: r.cost.tensor_flops for r in rows if r.kind == "leaf"}
    out: list[dict[str, Any]] = []
    for order, (n, a) in enumerate(zip(graph.nodes, assignments, strict=True)):
        m = n.meta
        out.append(
            {
                "stage": stage,
                "node": name(n),
                "order": order,
                "op": str(n.target),
                "module_path": m["module_path"],
                "module_class": m["module_class"],
                "module_id": a.module_id,
                "leaf_id": a.leaf_id,
                "rule": a.rule,
                "category": a.category,
                "mapping": a.mapping,
                "status": a.status,
                "measured_flops": m["flops"],
                "leaf_tensor_flops": leaf_flops.get(a.leaf_id) if a.leaf_id is not None else None,
                "bytes_in": m["bytes_in"],
                "bytes_out": m["bytes_out"],
                "in_shapes": _shapes_json(m["in_shapes"]),
                "in_dtypes": _names_json(m["in_dtypes"]),
                "out_shapes": _shapes_json(m["out_shapes"]),
                "out_dtypes": _names_json(m["out_dtypes"]),
                "input_nodes": _names_json([name(i) for i in n.all_input_nodes]),
                "measured_time_s": times.get(name(n), 0.0) if times is not None else None,
            }
        )
    return pa.Table.from_pylist(out, schema=NODES_SCHEMA).to_pandas()


def _present(value: Any) -> bool:
    """Not null: pandas reads a null string as None or NaN depending on the column."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _home(row: Any, known: set[str]) -> str:
    """The analytic module a node's FLOPs roll up into: its leaf, else its nearest known
    module, else its stage's root (whose id is the stage's name)."""
    if _present(row.leaf_id):
        return str(row.leaf_id)
    mid = str(row.module_id) if _present(row.module_id) else ""
    while mid:
        if mid in known:
            return str(mid)
        mid = mid.rpartition(".")[0]
    return str(row.stage)


def rollup(nodes: pd.DataFrame, rows: Sequence[ModuleRow], values: pd.Series) -> dict[str, Any]:
    """Sum ``values`` (one per node) into every analytic module: its nodes plus everything under it.

    Unmatched nodes count toward their nearest analytic ancestor, so the root
    always holds the whole total. Integer values stay exact integers.
    """
    known = {r.module_id for r in rows}
    exact = pd.api.types.is_integer_dtype(values)
    zero: Any = 0 if exact else 0.0
    own: dict[str, Any] = {}
    # the three columns a node's home reads (iterating every column of an Arrow-backed frame
    # was most of the join's time on a 14B graph)
    homes = nodes[["leaf_id", "module_id", "stage"]].itertuples(index=False)
    for r, value in zip(homes, values, strict=True):
        if value:
            home = _home(r, known)
            own[home] = own.get(home, zero) + (int(value) if exact else float(value))
    return tree_rollup(rows, own, zero)


def measured_by_module(nodes: pd.DataFrame, rows: Sequence[ModuleRow]) -> dict[str, int]:
    """Measured FLOPs of every analytic module (see :func:`rollup`)."""
    return rollup(nodes, rows, nodes["measured_flops"])


def unfused_by_module(nodes: pd.DataFrame, rows: Sequence[ModuleRow]) -> dict[str, int]:
    """Unfused bytes of every module: inputs + outputs of each of its costed nodes.

    The upper bound on traffic (every op reads and writes DRAM); views and
    allocations (``zero``) move nothing.
    """
    moved = (nodes["bytes_in"] + nodes["bytes_out"]).where(nodes["status"] != "zero", 0)
    return rollup(nodes, rows, moved)


def with_measured(modules: pd.DataFrame, measured: dict[str, int], unfused: dict[str, int]) -> pd.DataFrame:
    """``modules`` with the traced columns filled: measured FLOPs, ``rel_error``, unfused bytes.

    A one-to-one merge on ``module_id``: a module without a measured row, or a
    measured id the analytic tree does not have, is an error, never a silent 0.
    """
    right = pd.DataFrame({"module_id": list(measured), "measured_flops": list(measured.values())}).assign(
        unfused_bytes=lambda d: d["module_id"].map(unfused)
    )
    traced = ["measured_flops", "rel_error", "unfused_bytes", "unfused_arithmetic_intensity"]
    out = modules.drop(columns=traced).merge(
        right, on="module_id", how="outer", validate="one_to_one", indicator=True, sort=False
    )
    orphans = out.loc[out["_merge"] != "both", "module_id"].tolist()
    if orphans:
        raise ValueError(f"measured and analytic modules differ: {orphans[:5]}")
    # an outer merge sorts the keys: back to the tree's order (parents first, stage by stage)
    out = out.drop(columns="_merge").set_index("module_id").loc[modules["module_id"]].reset_index()
    out["measured_flops"] = out["measured_flops"].astype("int64")
    out["unfused_bytes"] = out["unfused_bytes"].astype("int64")
    out["rel_error"] = [
        rel_error(int(a), int(m)) for a, m in zip(out["tensor_flops"], out["measured_flops"], strict=True)
    ]
    flops = out["tensor_flops"] + out["cuda_flops"]
    out["unfused_arithmetic_intensity"] = [
        f / b if b else None for f, b in zip(flops, out["unfused_bytes"], strict=True)
    ]
    return out[modules.columns]


def module_node(module_id: str) -> str:
    return f"module:{module_id}"


def op_node(name: str) -> str:
    return f"node:{name}"


def build_graph(modules: pd.DataFrame, nodes: pd.DataFrame) -> nx.DiGraph:
    """Module hierarchy + traced nodes + data flow, with analytic and measured FLOPs on each."""
    known = set(modules["module_id"])
    module_nodes: list[tuple[str, dict[str, Any]]] = []
    edges: list[tuple[str, str, dict[str, str]]] = []
    contains, data = {"kind": "contains"}, {"kind": "data"}
    for r in modules.itertuples():
        attrs: dict[str, Any] = {
            "kind": "module",
            "module_id": r.module_id,
            "module_kind": r.kind,
            "analytic_flops": int(r.tensor_flops),
            "cuda_flops": int(r.cuda_flops),
            "measured_flops": int(r.measured_flops),
        }
        for key in ("category", "rule", "rel_error"):
            value = getattr(r, key)
            if _present(value):  # scalar attributes only; absent = undefined
                attrs[key] = value
        module_nodes.append((module_node(r.module_id), attrs))
        if _present(r.parent_id):
            edges.append((module_node(r.parent_id), module_node(r.module_id), contains))
    op_nodes: list[tuple[str, dict[str, Any]]] = []
    columns = ["node", "op", "module_path", "status", "measured_flops", "bytes_in", "bytes_out"]
    columns += ["out_shapes", "leaf_id", "leaf_tensor_flops", "module_id", "stage", "input_nodes"]
    for r in nodes[columns].itertuples(index=False):
        nid = op_node(r.node)
        attrs = {
            "kind": "node",
            "op": r.op,
            "module_path": r.module_path,
            "status": r.status,
            "measured_flops": int(r.measured_flops),
            "bytes_in": int(r.bytes_in),
            "bytes_out": int(r.bytes_out),
            "out_shapes": r.out_shapes,
        }
        if _present(r.leaf_id):
            attrs["leaf_id"] = r.leaf_id
            attrs["analytic_leaf_flops"] = int(r.leaf_tensor_flops)
        op_nodes.append((nid, attrs))
        edges.append((module_node(_home(r, known)), nid, contains))
        edges += [(op_node(src), nid, data) for src in json.loads(r.input_nodes)]
    g = nx.DiGraph()
    g.add_nodes_from(module_nodes)
    g.add_nodes_from(op_nodes)
    g.add_edges_from(edges)
    return g


def graph_json(g: nx.DiGraph) -> str:
    """Node-link JSON (``networkx.node_link_graph(data, edges="edges")`` reads it back)."""
    return json.dumps(nx.node_link_data(g, edges="edges"), allow_nan=False)


def with_times(modules: pd.DataFrame, nodes: pd.DataFrame, rows: Sequence[ModuleRow]) -> pd.DataFrame:
    """``modules`` with measured time per module and what it implies.

    ``achieved_flop_per_s`` = (tensor_flops + cuda_flops) / measured_time_s;
    ``achieved_bytes_per_s`` = fused-ideal bytes / measured_time_s;
    ``roofline_fraction`` = roofline_s / measured_time_s (1.0 = at the roofline);
    ``predicted_ratio`` = predicted_s / measured_time_s (1.0 = the prediction was right).
    Null where the module took no measured time.
    """
    times = rollup(nodes, rows, nodes["measured_time_s"].astype("float64"))
    out = modules.copy()
    t = out["module_id"].map(times).astype("float64")
    out["measured_time_s"] = t
    timed = t > 0
    flops = (out["tensor_flops"] + out["cuda_flops"]).astype("float64")
    moved = (out["bytes_read"] + out["bytes_written"]).astype("float64")
    out["achieved_flop_per_s"] = (flops / t).where(timed)
    out["achieved_bytes_per_s"] = (moved / t).where(timed)
    out["roofline_fraction"] = (out["roofline_s"].astype("float64") / t).where(timed)
    out["predicted_ratio"] = (out["predicted_s"].astype("float64") / t).where(timed)
    return out
