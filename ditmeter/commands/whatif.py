"""``ditmeter whatif``: the baseline video and the same video under each what-if method, alone and
all together, on one GPU or under a ``parallel.*`` plan (one GPU of it; docs/whatif.md).

A what-if is a named set of config overrides (:data:`~ditmeter.commands.whatif_methods.WHATIFS`),
each a mechanism the time model carries (``methods.*``, ``attention=``, ``gemm_dtype=``,
``time.execution=``), never a speed-up factor. Each row is costed by
:func:`ditmeter.commands.report.analyze`, the path ``report`` takes with the same overrides; a
method the device, the model or the plan's code cannot run is a row with the reason.
Quality is not modelled. Formatting lives in :mod:`ditmeter.reports.whatif_table`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ditmeter.analytic.timing import OFFLOAD_PHASE
from ditmeter.commands.report import analyze
from ditmeter.commands.whatif_methods import DEFAULT_WHATIFS, EXCLUSIVE, WHATIFS
from ditmeter.commands.whatif_result import WhatifResult
from ditmeter.config import load
from ditmeter.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from ditmeter.analytic.timing import Timing
    from ditmeter.reports.device_report import DeviceView

ALL = "all together"


def parse_options(overrides: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """``whatif=[a,b]`` from the command line (the what-ifs to compare) and the config overrides left."""
    mine = [o for o in overrides if o.partition("=")[0] == "whatif"]
    rest = [o for o in overrides if o.partition("=")[0] != "whatif"]
    stray = [o for o in rest if "=" not in o]
    if stray:
        raise ConfigError("arguments", f"whatif takes KEY=VALUE overrides only; got {stray[0]!r}")
    if len(mine) > 1:
        raise ConfigError("whatif", "given twice; give one list, e.g. whatif=[fp8,teacache]")
    if not mine:
        return DEFAULT_WHATIFS, rest
    text = mine[0].partition("=")[2].strip()
    allowed = ", ".join(WHATIFS)
    if text.startswith("[") != text.endswith("]") or text.count("[") > 1 or text.count("]") > 1:
        raise ConfigError("whatif", f"{text!r} is not a list; give whatif=[a,b] of: {allowed}")
    inner = text.removeprefix("[").removesuffix("]").strip()
    names = [n.strip() for n in inner.split(",")] if inner else []
    if not names:
        raise ConfigError("whatif", f"empty; allowed: {allowed}")
    if "" in names:
        raise ConfigError("whatif", f"{text!r} has an empty item; give whatif=[a,b] of: {allowed}")
    for n in names:
        if n not in WHATIFS:
            raise ConfigError("whatif", f"{n!r} not allowed; allowed: {allowed}")
    if len(set(names)) != len(names):
        raise ConfigError("whatif", f"{text!r} names a method twice")
    return tuple(names), rest


#: How to set two methods that cannot combine side by side (their "all together" row cannot run).
_APART = "; to compare them, run whatif=[{a}] and whatif=[{b}] apart"


def combined(names: Sequence[str]) -> tuple[str, ...]:
    """The overrides of every what-if in ``names`` together; two that set one key cannot combine."""
    for pair, why in EXCLUSIVE.items():
        if pair <= set(names):
            a, b = sorted(pair)
            raise ConfigError("whatif", f"{a} and {b} cannot combine: {why}{_APART.format(a=a, b=b)}")
    owner: dict[str, str] = {}
    out: list[str] = []
    for name in names:
        for override in WHATIFS[name][0]:
            key = override.partition("=")[0]
            if key in owner:
                a, b = owner[key], name
                raise ConfigError(
                    "whatif", f"{a} and {b} cannot combine: both set {key}{_APART.format(a=a, b=b)}"
                )
            owner[key] = name
            out.append(override)
    return tuple(out)


def _forwards_of(view: DeviceView) -> tuple[list[tuple[Timing, int, str]], dict[str, float], str, float]:
    """One row's denoiser forwards as (timing, count, kind) (each kind a method runs apart, else
    every forward alike), each stage's seconds per video, the denoiser's stage and the communication
    nothing hides: on one GPU, or on one GPU of the plan."""
    if view.plan is not None:
        est = view.plan.estimate
        every = est.steps * est.forwards_per_gpu_step
        runs = [(r.compute, r.count, r.kind) for r in est.forward_runs] or [(est.compute, every, "")]
        return runs, dict(est.stage_video_s), est.forward_stage, est.comm_video_s
    p = view.prediction
    assert p is not None
    one = [(p.per_forward, p.forwards_per_video, "")]
    return (
        [(r.timing, r.count, r.kind) for r in p.forward_runs] or one,
        dict(p.stage_seconds),
        p.forward_id,
        0.0,
    )


def _seconds(view: DeviceView) -> dict[str, float]:
    """Where one row's video time goes: the denoiser's by limit, the communication nothing hides
    (under a plan: in ``dit_s`` where it is the denoiser's, ``comm_exposed_s`` holds it all, so the
    parts add up to the video), the other stages, the offload."""
    runs, stages, forward, comm = _forwards_of(view)
    dit = stages.pop(forward, 0.0)
    offload = stages.pop(OFFLOAD_PHASE, 0.0)
    return {
        "dit_s": dit,
        "dit_compute_bound_s": sum(t.compute_bound_s * n for t, n, _ in runs),
        "dit_memory_bound_s": sum(t.memory_bound_s * n for t, n, _ in runs),
        "dit_launch_bound_s": sum(t.overhead_bound_s * n for t, n, _ in runs),
        "comm_exposed_s": comm,
        "other_stages_s": sum(stages.values()),
        "offload_s": offload,
    }


def _forwards(view: DeviceView) -> tuple[int, int]:
    """The denoiser forwards per video, and of them those that run the blocks (one GPU of a plan)."""
    runs = _forwards_of(view)[0]
    return sum(n for _, n, _ in runs), sum(n for _, n, kind in runs if kind != "cached")


def _row(
    name: str,
    overrides: Sequence[str],
    base: Sequence[str],
    baseline_s: float | None,
    users: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """One what-if costed; one the device, model or plan cannot run is a row with the reason, but a
    refusal that names a key the user gave for this row (``users``: a cache's share or a sparse
    kernel's density out of range) is bad input."""
    keys: dict[str, Any] = {"whatif": name, "overrides": " ".join(overrides)}
    try:
        cfg = load([*base, *overrides], "whatif")
        analysis, view = analyze(cfg)
    except ConfigError as exc:
        if exc.field in users:
            raise
        return {**keys, "runs": False, "reason": str(exc)}
    assert view.per_video_s is not None and cfg.device is not None
    every, computed = _forwards(view)
    peak = analysis.memory.peak_per_gpu_bytes
    return {
        **keys,
        "runs": True,
        "reason": None,
        ROUNDED: view.rounded,  # said under the table, not a column
        "per_video_s": view.per_video_s,
        "speedup": (baseline_s / view.per_video_s) if baseline_s else 1.0,
        **_seconds(view),
        "steps": analysis.workload.num_inference_steps,
        "forwards_per_video": every,
        "forwards_computed": computed,
        "peak_per_gpu_bytes": peak,
        "fits": peak <= cfg.device.memory_bytes,
    }


#: A row's key for what its methods' shares were rounded to (``DeviceView.rounded``)
ROUNDED = "_rounded"


#: Keys only some rows use (given once on the command line, applied to the rows that set the key
#: they qualify): a cache's share and rule, a sparse kernel's density and dense steps and layers.
ROW_KEYS = {
    "methods.cache": (
        "methods.cache_skip",
        "methods.magcache_threshold",
        "methods.magcache_k",
        "methods.magcache_retention",
    ),
    "methods.sparse": ("methods.sparse_density", "methods.sparse_dense_steps", "methods.sparse_dense_layers"),
}


def _row_keys(names: Sequence[str], base: Sequence[str]) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """``base`` without the keys only some rows use, and those keys by the key whose rows take them;
    given with no such row they would do nothing, and are refused (unless the baseline itself sets
    that key: then they are the baseline's)."""
    given: dict[str, tuple[str, ...]] = {}
    for owner, keys in ROW_KEYS.items():
        if any(o.partition("=")[0] == owner for o in base):  # the baseline's own method: keys stay its
            given[owner] = ()
            continue
        mine = tuple(o for o in base if o.partition("=")[0] in keys)
        if mine and not any(WHATIFS[n][0][0].startswith(owner + "=") for n in names):
            raise ConfigError(mine[0].partition("=")[0], f"used by a what-if that sets {owner} only: add one")
        given[owner] = mine
    used = {o for keys in given.values() for o in keys}
    return [o for o in base if o not in used], given


def _replaced(names: Sequence[str], given: Sequence[str]) -> tuple[str, ...]:
    """Each what-if that sets a key the user gave the baseline another value of: the row replaces
    it (the baseline keeps it), and the output says so."""
    mine = {o.partition("=")[0]: o for o in given}
    out = []
    for name in names:
        for override in WHATIFS[name][0]:
            key = override.partition("=")[0]
            if key in mine and mine[key] != override:
                out.append(f"{name} replaces the baseline's {mine[key]} with {override} in its row")
            elif key in mine:
                out.append(f"{name} sets {override}, as the baseline already does: its row is the baseline")
    return tuple(out)


def whatif(
    names: Sequence[str], given: Sequence[str], overrides: Sequence[str] = (), check_output: bool = False
) -> WhatifResult:
    """The baseline ``given`` and each what-if of ``names`` on it, then all of them together.
    ``check_output`` (the result is to be published): an ``output_root`` or ``run_id``
    :func:`publish` would refuse is refused before any row is costed."""
    from ditmeter.reports.run_dir import check_run_folder

    base, row_keys = _row_keys(names, given)
    cfg = load(list(base), "whatif")
    if check_output:
        check_run_folder(cfg.output_root, cfg.run_id)
    if cfg.device is None:
        raise ConfigError("device", "needs device=NAME: a what-if's time and memory are on a device")
    together = combined(names) if len(names) > 1 else ()
    first = _row("baseline", (), base, None)
    if not first["runs"]:
        raise ConfigError("whatif", f"the baseline cannot run: {first['reason']}")
    baseline_s = float(first["per_video_s"])

    def row(name: str, overrides: Sequence[str]) -> dict[str, Any]:
        """The row of ``overrides`` with the user's keys for the methods it sets."""
        extra = [
            k
            for owner, ks in row_keys.items()
            if any(o.startswith(owner + "=") for o in overrides)
            for k in ks
        ]
        users = frozenset(k.partition("=")[0] for k in extra)
        return _row(name, (*overrides, *extra), base, baseline_s, users)

    rows = [first, *(row(n, WHATIFS[n][0]) for n in names)]
    ran = [n for n, r in zip(names, rows[1:], strict=True) if r["runs"]]
    if together and len(ran) == len(names):
        rows.append(row(ALL, together))
    elif together and len(ran) > 1:  # those that run here, and say which are left out
        left = ", ".join(n for n in names if n not in ran)
        rows.append(row(f"{ALL} but {left}", combined(ran)))
    elif together:  # nothing to combine: say so
        why = f"only {ran[0]} runs here" if ran else "none of them runs here"
        rows.append({"whatif": ALL, "overrides": " ".join(together), "runs": False, "reason": why})
    said = tuple(f"{r['whatif']}: {text}" for r in rows for text in r.pop(ROUNDED, ()))
    frame = pd.DataFrame(rows)
    return WhatifResult(frame, cfg, tuple(names), tuple(overrides), _replaced(names, given), said)


def publish(result: WhatifResult) -> tuple[Path, tuple[str, ...]]:
    """``whatif.parquet``, ``whatif.md`` and ``whatif.png`` as a run folder,
    ``<output_root>/<run_id>/static_analysis/whatif/``, that appears only when complete."""
    from ditmeter.reports.run_dir import analysis_dir, new_run_id, staged_run
    from ditmeter.reports.tables import write_parquet
    from ditmeter.reports.whatif_table import whatif_markdown, whatif_metadata, whatif_png, whatif_schema

    cfg = result.cfg
    run_id = cfg.run_id or new_run_id(cfg.model.name, f"{cfg.workload.name}-whatif")
    manifest = {
        "command": "whatif",
        "model": cfg.model.name,
        "workload": cfg.workload.name,
        "whatif": list(result.names),
        "overrides": list(result.overrides),
    }
    with staged_run(cfg.output_root, run_id, "whatif", manifest) as out:
        write_parquet(result.frame, whatif_schema(), out / "whatif.parquet", whatif_metadata(result))
        (out / "whatif.md").write_text(whatif_markdown(result), encoding="utf-8")
        whatif_png(result, out / "whatif.png")
    return analysis_dir(cfg.output_root / run_id, "whatif"), ("whatif.parquet", "whatif.md", "whatif.png")


def run_whatif(overrides: list[str], console: Console) -> int:
    """``ditmeter whatif``: cost the rows, print them, publish the run folder; 0. Bad input is a
    :class:`ConfigError` (the CLI's exit 2), raised before anything is written."""
    from ditmeter.reports.console import print_adjustments, print_notes, print_wrote
    from ditmeter.reports.table_model import to_rich
    from ditmeter.reports.whatif_table import whatif_lines, whatif_table

    start = time.perf_counter()
    names, rest = parse_options(overrides)
    result = whatif(names, rest, overrides, check_output=True)
    print_notes(console, result.cfg.notes)
    print_adjustments(console, result.cfg.geometry)
    console.print(to_rich(whatif_table(result)))
    for line in whatif_lines(result):
        console.print(line)
    folder, files = publish(result)
    print_wrote(console, folder, files, start)
    return 0
