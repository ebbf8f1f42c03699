"""Same numbers before and after a change: run the standard matrix on two versions and diff the artifacts.

The "before" version is a git revision checked out into a temporary worktree
and run with the same interpreter (``PYTHONPATH`` puts its package first); the
"after" version is this checkout. For every entry of the matrix (5 workloads ×
both T2V sizes, plus I2V-14B-480p and FLF2V-14B-720p at 480p-81f; every stage)
each side runs ``ditmeter trace`` and ``ditmeter report device=h100-sxm``, and
the tables are compared row by row:

- ``modules.parquet``: the same module rows (by ``module_id``) with the same
  value in every column (integers exactly, floats exactly);
- ``nodes.parquet``: the same nodes (by ``node``) with the same op, module,
  assignment, FLOPs, bytes, shapes, dtypes and inputs;
- ``report.json``: the same totals, stages, categories, memory and time.

Before the house refactor the DiT's ids carried no stage prefix (``blocks.0``,
root ``""``, nodes ``addmm_3``); such tables are read under the current rule
(``dit.blocks.0``, root ``dit``, nodes ``dit.addmm_3``) before comparing.

    .venv/bin/python benchmarks/compare_artifacts.py --before 6438185 [--only wan2.1-t2v-1.3b:w001-tiny]

Prints one line per entry and table, and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
T2V = ("wan2.1-t2v-14b", "wan2.1-t2v-1.3b")
WORKLOADS = ("w001-tiny", "w002-512p", "w003-720p", "480p-81f", "720p-81f")
MATRIX = [(m, w) for m in T2V for w in WORKLOADS] + [
    ("wan2.1-i2v-14b-480p", "480p-81f"),
    ("wan2.1-flf2v-14b-720p", "480p-81f"),
]
#: report.json sections whose numbers must agree.
REPORT_KEYS = ("totals", "stages", "categories", "memory", "time", "workload")


def _run(python_path: Path, command: str, model: str, workload: str, root: Path, run_id: str) -> Path:
    argv = [sys.executable, "-m", "ditmeter", command, f"model={model}", f"workload={workload}"]
    argv += [f"output_root={root}", f"run_id={run_id}"] + (["device=h100-sxm"] if command == "report" else [])
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=python_path)
    static = root / run_id / "static_analysis"
    if done.returncode not in (0, 1) or not static.is_dir():  # 1: a failed gate still writes the run
        raise SystemExit(f"{' '.join(argv[2:])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    (folder,) = static.iterdir()
    return folder


def _dit_id(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return value
    return f"dit.{value}" if value else "dit"


def _current_ids(
    modules: pd.DataFrame, nodes: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Tables written before every stage's ids carried its name: prefix the DiT's."""
    dit = modules["stage"] == "dit"
    if not (dit & (modules["module_id"] == "")).any():
        return modules, nodes
    modules = modules.copy()
    for col in ("module_id", "parent_id"):
        modules.loc[dit, col] = modules.loc[dit, col].map(_dit_id)
    modules.loc[dit & (modules["module_id"] == "dit"), "parent_id"] = None
    if nodes is not None:
        nodes = nodes.copy()
        n = nodes["stage"] == "dit"
        for col in ("module_id", "leaf_id"):
            nodes.loc[n, col] = nodes.loc[n, col].map(_dit_id)
        nodes.loc[n, "node"] = "dit." + nodes.loc[n, "node"]
        nodes.loc[n, "input_nodes"] = [
            json.dumps([f"dit.{x}" for x in json.loads(v)], separators=(",", ":"))
            for v in nodes.loc[n, "input_nodes"]
        ]
    return modules, nodes


def _diff_table(before: pd.DataFrame, after: pd.DataFrame, key: str) -> list[str]:
    """Rows and cells that differ (empty: the same rows, the same values)."""
    b, a = before.set_index(key), after.set_index(key)
    out = []
    missing, extra = sorted(set(b.index) - set(a.index)), sorted(set(a.index) - set(b.index))
    if missing or extra:
        out.append(
            f"rows only before: {missing[:3]} ({len(missing)}), only after: {extra[:3]} ({len(extra)})"
        )
    common = b.index.intersection(a.index)
    for col in b.columns:
        if col not in a.columns:
            out.append(f"column {col} gone")
            continue
        x, y = b.loc[common, col], a.loc[common, col]
        same = (x == y) | (x.isna() & y.isna())
        if not same.all():
            first = same[~same].index[0]
            out.append(f"{col}: {int((~same).sum())} rows differ, e.g. {first}: {x[first]!r} vs {y[first]!r}")
    return out


def _numbers(data: Any, prefix: str = "") -> dict[str, Any]:
    """Every number and string leaf of a JSON value, by path (module ids normalised)."""
    if isinstance(data, dict):
        return {k: v for key, val in data.items() for k, v in _numbers(val, f"{prefix}.{key}").items()}
    if isinstance(data, list):
        return {k: v for i, val in enumerate(data) for k, v in _numbers(val, f"{prefix}[{i}]").items()}
    return {prefix: data}


def _diff_report(before: Path, after: Path) -> list[str]:
    b, a = (json.loads((p / "report.json").read_text()) for p in (before, after))
    out = []
    for key in REPORT_KEYS:
        nb, na = _numbers(b.get(key), key), _numbers(a.get(key), key)
        # the one string that changes with the id rule: the DiT's id prefix ("" before, "dit" after)
        nb = {k: v for k, v in nb.items() if not k.endswith(".module_prefix")}
        changed = [k for k in nb if k in na and nb[k] != na[k]]
        gone = [k for k in nb if k not in na]
        if changed or gone:
            out.append(
                f"report.json {key}: {len(changed)} values differ {changed[:3]}, {len(gone)} gone {gone[:3]}"
            )
    return out


def compare_entry(before_repo: Path, after_repo: Path, model: str, workload: str, tmp: Path) -> list[str]:
    problems = []
    for command in ("trace", "report"):
        run_id = f"{command}-{model}-{workload}"
        sides = {}
        for side, path in (("before", before_repo), ("after", after_repo)):
            sides[side] = _run(path, command, model, workload, tmp / side, run_id)
        traced = command == "trace"
        tables = {}
        for side, folder in sides.items():
            modules = pd.read_parquet(folder / "modules.parquet")
            nodes = pd.read_parquet(folder / "nodes.parquet") if traced else None
            tables[side] = _current_ids(modules, nodes)
        mods = _diff_table(tables["before"][0], tables["after"][0], "module_id")
        problems += [f"{command} modules.parquet {d}" for d in mods]
        if traced:
            nodes_b, nodes_a = tables["before"][1], tables["after"][1]
            assert nodes_b is not None and nodes_a is not None
            problems += [f"trace nodes.parquet {d}" for d in _diff_table(nodes_b, nodes_a, "node")]
        problems += [f"{command} {d}" for d in _diff_report(sides["before"], sides["after"])]
        rows = len(tables["after"][0])
        nodes_n = len(tables["after"][1]) if traced and tables["after"][1] is not None else 0
        print(f"  {command:<6} {model:<24} {workload:<10} {rows:>6} modules {nodes_n:>7} nodes", flush=True)
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="git revision of the 'before' version")
    p.add_argument(
        "--after", default=None, help="git revision of the 'after' version (default: this checkout)"
    )
    p.add_argument("--only", nargs="*", default=None, help="MODEL:WORKLOAD entries (default: the matrix)")
    args = p.parse_args()
    entries = [tuple(e.split(":", 1)) for e in args.only] if args.only else MATRIX
    with tempfile.TemporaryDirectory(prefix="ditmeter-compare-") as tmp_s:
        tmp = Path(tmp_s)
        trees = {"before": args.before, "after": args.after}
        paths = {side: tmp / f"{side}-src" if rev else REPO for side, rev in trees.items()}
        for side, rev in trees.items():
            if rev:
                add = ["git", "worktree", "add", "--detach", str(paths[side]), rev]
                subprocess.run(add, cwd=REPO, check=True, capture_output=True)
        try:
            print(f"before: {args.before}, after: {args.after or 'this checkout'}")
            problems = {
                e: compare_entry(paths["before"], paths["after"], e[0], e[1], tmp / "runs") for e in entries
            }
        finally:
            for side, rev in trees.items():
                if rev:
                    subprocess.run(["git", "worktree", "remove", "--force", str(paths[side])], cwd=REPO)
    bad = {e: p for e, p in problems.items() if p}
    for (model, workload), found in bad.items():
        print(f"DIFFERS {model} × {workload}:")
        for line in found[:20]:
            print(f"    {line}")
    print(f"{len(entries) - len(bad)} of {len(entries)} entries carry the same numbers before and after")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
