"""The Python API: the CLI's work as functions returning pandas DataFrames and typed results.

``import ditmeter`` gives :func:`analyze`, :func:`predict`, :func:`trace`, :func:`ingest`, :func:`sweep` and
:func:`diff`
(``ditmeter.analyze`` …; the module imports torch only when a function needs it). Each takes the
same keys as the command line, as a model name, a workload name and ``overrides`` (a mapping of
dotted keys, ``{"workload.num_frames": 33, "device": "h100-sxm"}``, or ``KEY=VALUE`` strings);
a bad key or value raises :class:`ditmeter.errors.ConfigError` naming it, as the CLI's exit 2
does, and so does a missing model or workload (no default is taken) or an override of a key a
function takes as an argument (``model``, ``workload``, ``output_root``…). Nothing is written
unless ``output_root`` is given: then the run folder is published as the command publishes it,
and its path returned. The CLI (``ditmeter.cli``) is a thin layer
over the same commands.

>>> import ditmeter
>>> r = ditmeter.analyze("wan2.1-t2v-1.3b", "w001-tiny", {"device": "h100-sxm"})
>>> r.per_forward_tensor_flops > 0 and r.time is not None
True
>>> r.modules.loc[r.modules.module_id == "dit", "tensor_flops"].item() == r.per_forward_tensor_flops
True
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ditmeter.files import TABLE_LIMIT_BYTES, load_json, regular_file

if TYPE_CHECKING:
    import pandas as pd

    from ditmeter.analytic.analysis import Analysis
    from ditmeter.config import RunConfig

Overrides = Mapping[str, Any] | Sequence[str] | None


def _table(path: Path) -> pd.DataFrame:
    """A table of the run folder this call wrote, read as every reader reads (a regular file
    within the stated limit)."""
    import pandas as pd

    regular_file(path, "output_root", TABLE_LIMIT_BYTES)
    return pd.read_parquet(path)


_SHAPE = "must be a mapping of dotted keys or a list of KEY=VALUE strings"


def _text(value: Any) -> str:
    """An override's value as the CLI writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _entries(overrides: Overrides) -> list[str]:
    """``overrides`` as ``KEY=VALUE`` strings; anything else raises :class:`ConfigError` naming
    ``overrides``."""
    from ditmeter.errors import ConfigError

    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        for key in overrides:
            if not isinstance(key, str) or not key.lstrip("+~"):
                raise ConfigError(
                    "overrides", f"a key must be a dotted name (workload.num_frames); got {key!r}"
                )
        return [f"{key}={_text(value)}" for key, value in overrides.items()]
    if isinstance(overrides, Sequence) and not isinstance(overrides, str | bytes):
        for item in overrides:
            if not isinstance(item, str):
                raise ConfigError("overrides", f"{_SHAPE}; got the item {item!r}")
        return list(overrides)
    raise ConfigError("overrides", f"{_SHAPE}, got {overrides!r}")


def _argv(overrides: Overrides, names: Mapping[str, Any], **arguments: Any) -> list[str]:
    """Command-line overrides: ``names`` (the catalog names a function needs: model, workload, a
    device) and ``arguments`` (trace, output_root; None: not given) as ``KEY=VALUE``, then
    ``overrides``, which may set none of these keys again (one of the two would silently lose)."""
    from ditmeter.catalog import choices
    from ditmeter.config import _key, check_once
    from ditmeter.errors import ConfigError

    entries = _entries(overrides)
    check_once(entries)  # as the command line: a key given twice is refused, not the last taken
    for entry in entries:
        if _key(entry) in (*names, *arguments):
            raise ConfigError(
                _key(entry), f"is this function's argument {_key(entry)}=; give it there, not in overrides"
            )
    for key, value in names.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(key, f"missing, got {value!r}; allowed: {', '.join(choices(key))}")
    given = {**names, **{k: v for k, v in arguments.items() if v is not None}}
    return [*(f"{key}={value}" for key, value in given.items()), *entries]


def _config(
    command: str, names: Mapping[str, Any], overrides: Overrides, output_root: str | Path | None
) -> RunConfig:
    from ditmeter.config import load

    return load(_argv(overrides, names, output_root=output_root), command)


@attrs.frozen
class Analyzed:
    """One video analysed (``report``): the typed analysis, the ``modules.parquet`` rows and the
    ``report.json`` sections as Python objects; ``analysis_dir`` where a run folder was written."""

    analysis: Analysis
    modules: pd.DataFrame
    report: dict[str, Any]
    analysis_dir: Path | None

    @property
    def per_forward_tensor_flops(self) -> int:
        return int(self.report["totals"]["per_forward"]["tensor_flops"])

    @property
    def categories(self) -> pd.DataFrame:
        """Per category of the forward stage, per forward (``report.json`` ``categories``)."""
        import pandas as pd

        return pd.DataFrame(self.report["categories"])

    @property
    def stages(self) -> pd.DataFrame:
        """One row per stage: runs per video and the per-video metrics."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"stage": s["stage"], "runs_per_video": s["runs_per_video"], **s["per_video"]}
                for s in self.report["stages"]
            ]
        )

    @property
    def time(self) -> dict[str, Any] | None:
        """``report.json`` ``time`` (None without a device)."""
        return self.report.get("time")

    @property
    def memory(self) -> dict[str, Any]:
        return dict(self.report["memory"])

    @property
    def notes(self) -> list[str]:
        return list(self.report["notes"])


def analyze(
    model: str,
    workload: str,
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Analyzed:
    """The analytic model of one video (what ``ditmeter report`` computes); with ``device`` in
    ``overrides`` also its predicted time and the memory fit, under ``parallel.*`` one GPU's of the
    plan. Writes the run folder only with ``output_root``."""
    names = {"model": model, "workload": workload}
    return _analyzed(_config("report", names, overrides, output_root), write=output_root is not None)


def _analyzed(cfg: RunConfig, *, write: bool) -> Analyzed:
    """What ``report`` computes for ``cfg`` (``write``: its run folder published too)."""
    from ditmeter.commands.report import analyze as run
    from ditmeter.commands.report import report
    from ditmeter.reports.report_json import build_report
    from ditmeter.reports.tables import modules_frame

    if write:
        result = report(cfg)
        data = load_json(result.analysis_dir / "report.json", "output_root")
        return Analyzed(result.analysis, result.modules, data, result.analysis_dir)
    analysis, view = run(cfg)
    modules = modules_frame(analysis, view.prediction)
    data = json.loads(json.dumps(build_report(analysis, modules, "api", view)))  # plain JSON types
    return Analyzed(analysis, modules, data, None)


def predict(
    model: str,
    workload: str,
    device: str = "h100-sxm",
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Analyzed:
    """:func:`analyze` on ``device``: the predicted time of every module, stage and the video
    (``.time``, the ``*_s`` columns of ``.modules``) and the memory fit. ``device`` is a catalog
    name (``ditmeter --help`` lists them); ``overrides`` may edit it (``device.efficiency``)."""
    names = {"model": model, "workload": workload, "device": device}
    return _analyzed(_config("report", names, overrides, output_root), write=output_root is not None)


@attrs.frozen
class Traced:
    """A traced run: the gate's verdict, the ``modules.parquet`` and ``nodes.parquet`` rows and
    ``report.json``; ``analysis_dir`` where the run folder was written (None: it was temporary)."""

    passed: bool
    max_rel_error: float | None
    modules: pd.DataFrame
    nodes: pd.DataFrame
    report: dict[str, Any]
    analysis_dir: Path | None


def trace(
    model: str,
    workload: str,
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Traced:
    """Trace every selected stage's real module on meta and gate it (``ditmeter trace``). Without
    ``output_root`` the run folder is written to a temporary directory, read back and removed."""

    from ditmeter.commands.trace import trace as run

    with tempfile.TemporaryDirectory(prefix="ditmeter-") as tmp:
        names = {"model": model, "workload": workload}
        result = run(_config("trace", names, overrides, output_root if output_root is not None else tmp))
        folder = result.analysis_dir
        nodes = _table(folder / "nodes.parquet")
        data = load_json(folder / "report.json", "output_root")
    return Traced(
        result.verdict.passed,
        result.verdict.max_error,
        result.modules,
        nodes,
        data,
        folder if output_root is not None else None,
    )


@attrs.frozen
class Ingested:
    """A torch.profiler trace of a real run joined to the module tree (``ditmeter ingest``): the
    ``report.json`` ``ingest`` section (``summary``), the ``modules.parquet`` rows with measured
    time, the ``ops.parquet`` and ``kernels.parquet`` rows and ``report.json``; ``analysis_dir``
    where the run folder was written (None: it was temporary)."""

    summary: dict[str, Any]
    modules: pd.DataFrame
    ops: pd.DataFrame
    kernels: pd.DataFrame
    report: dict[str, Any]
    analysis_dir: Path | None

    @property
    def by_category(self) -> pd.DataFrame:
        """The DiT's measured time per forward by category, against the prediction with a device."""
        import pandas as pd

        return pd.DataFrame(self.summary["by_category"])


def ingest(
    trace: str | Path,
    model: str,
    workload: str,
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Ingested:
    """Join the Chrome trace at ``trace`` (a real run of ``model`` at ``workload`` under the
    ``pipeline`` in ``overrides``, recorded with ``with_stack=True``) to the module tree
    (``ditmeter ingest``). Without ``output_root`` the run folder is written to a temporary
    directory, read back and removed."""

    from ditmeter.commands.ingest import ingest as run
    from ditmeter.config import load

    with tempfile.TemporaryDirectory(prefix="ditmeter-") as tmp:
        root = output_root if output_root is not None else tmp
        argv = _argv(overrides, {"model": model, "workload": workload}, trace=trace, output_root=root)
        result = run(load(argv, "ingest"))
        folder = result.analysis_dir
        data = load_json(folder / "report.json", "output_root")
        kernels = _table(folder / "kernels.parquet")
        ops = _table(folder / "ops.parquet")
    return Ingested(
        data["ingest"], result.modules, ops, kernels, data, folder if output_root is not None else None
    )


def sweep(overrides: Overrides, output_root: str | Path | None = None) -> pd.DataFrame:
    """The analytic model over a grid (``ditmeter sweep``): every key given as a list is an axis;
    one row per point (the ``sweep.parquet`` columns). Writes the run folder only with
    ``output_root``."""
    from ditmeter.commands.sweep import publish
    from ditmeter.commands.sweep import sweep as run

    result = run(_argv(overrides, {}, output_root=output_root), check_output=output_root is not None)
    if output_root is not None:
        publish(result)
    return result.frame


def diff(
    run_a: str | Path, run_b: str | Path, output_root: str | Path = "tmp/profile-output", write: bool = False
) -> pd.DataFrame:
    """Two runs side by side (``ditmeter diff``): the ``diff.parquet`` rows (``level``, ``key``,
    ``metric``, ``a``, ``b``, ``delta``, ``ratio``). Runs are ids under ``output_root`` or paths to
    run folders; ``write`` publishes ``diff.parquet`` and ``diff.md`` there."""
    from ditmeter.commands.diff import diff as run
    from ditmeter.errors import ConfigError

    for field, value in (("output_root", output_root), ("RUN_A", run_a), ("RUN_B", run_b)):
        if not isinstance(value, str | Path) or not str(value).strip():
            what = "a path" if field == "output_root" else "a run id or a path"
            raise ConfigError(field, f"must be {what}, got {value!r}")
    return run(Path(output_root), str(run_a), str(run_b), write=write).frame
