"""The Python API: the CLI's work as functions returning pandas DataFrames and typed results.

``import ditmeter`` gives :func:`analyze`, :func:`predict`, :func:`trace`, :func:`ingest`, :func:`sweep` and
:func:`diff`
(``ditmeter.analyze`` …; the module imports torch only when a function needs it). Each takes the
same keys as the command line, as a model name, a workload name and ``overrides`` (a mapping of
dotted keys, ``{"workload.num_frames": 33, "device": "h100-sxm"}``, or ``KEY=VALUE`` strings);
a bad key or value raises :class:`ditmeter.errors.ConfigError` naming it, as the CLI's exit 2
does. Nothing is written unless ``output_root`` is given: then the run folder is published as
the command publishes it, and its path returned. The CLI (``ditmeter.cli``) is a thin layer
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

if TYPE_CHECKING:
    import pandas as pd

    from ditmeter.analytic.analysis import Analysis
    from ditmeter.config import RunConfig

Overrides = Mapping[str, Any] | Sequence[str] | None


def _argv(model: str | None, workload: str | None, overrides: Overrides) -> list[str]:
    """Command-line overrides from the API's arguments (a mapping's values as the CLI writes them)."""
    argv = [f"model={model}"] if model else []
    argv += [f"workload={workload}"] if workload else []
    if overrides is None:
        return argv
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list | tuple):
                text = "[" + ",".join(str(v) for v in value) + "]"
            elif value is None:
                text = "null"
            else:
                text = str(value)
            argv.append(f"{key}={text}")
        return argv
    return [*argv, *(str(o) for o in overrides)]


def _config(
    command: str,
    model: str | None,
    workload: str | None,
    overrides: Overrides,
    output_root: str | Path | None,
) -> RunConfig:
    from ditmeter.config import load

    where = [f"output_root={output_root}"] if output_root is not None else []
    return load([*_argv(model, workload, overrides), *where], command)


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
    model: str | None = None,
    workload: str | None = None,
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Analyzed:
    """The analytic model of one video (what ``ditmeter report`` computes); with ``device`` in
    ``overrides`` also its predicted time and the memory fit, under ``parallel.*`` one GPU's of the
    plan. Writes the run folder only with ``output_root``."""
    from ditmeter.commands.report import analyze as run
    from ditmeter.commands.report import report
    from ditmeter.reports.report_json import build_report
    from ditmeter.reports.tables import modules_frame

    cfg = _config("report", model, workload, overrides, output_root)
    if output_root is not None:
        result = report(cfg)
        data = json.loads((result.analysis_dir / "report.json").read_text(encoding="utf-8"))
        return Analyzed(result.analysis, result.modules, data, result.analysis_dir)
    analysis, view = run(cfg)
    modules = modules_frame(analysis, view.prediction)
    data = json.loads(json.dumps(build_report(analysis, modules, "api", view)))  # plain JSON types
    return Analyzed(analysis, modules, data, None)


def predict(
    model: str | None = None,
    workload: str | None = None,
    device: str = "h100-sxm",
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Analyzed:
    """:func:`analyze` on ``device``: the predicted time of every module, stage and the video
    (``.time``, the ``*_s`` columns of ``.modules``) and the memory fit. ``device`` is a catalog
    name (``ditmeter --help`` lists them)."""
    if isinstance(overrides, Mapping):
        keys: Overrides = {"device": device, **overrides}
    else:
        keys = [f"device={device}", *(overrides or [])]
    return analyze(model, workload, keys, output_root)


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
    model: str | None = None,
    workload: str | None = None,
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Traced:
    """Trace every selected stage's real module on meta and gate it (``ditmeter trace``). Without
    ``output_root`` the run folder is written to a temporary directory, read back and removed."""
    import pandas as pd

    from ditmeter.commands.trace import trace as run

    with tempfile.TemporaryDirectory(prefix="ditmeter-") as tmp:
        result = run(
            _config("trace", model, workload, overrides, output_root if output_root is not None else tmp)
        )
        folder = result.analysis_dir
        nodes = pd.read_parquet(folder / "nodes.parquet")
        data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
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
    model: str | None = None,
    workload: str | None = None,
    overrides: Overrides = None,
    output_root: str | Path | None = None,
) -> Ingested:
    """Join the Chrome trace at ``trace`` (a real run of ``model`` at ``workload`` under the
    ``pipeline`` in ``overrides``, recorded with ``with_stack=True``) to the module tree
    (``ditmeter ingest``). Without ``output_root`` the run folder is written to a temporary
    directory, read back and removed."""
    import pandas as pd

    from ditmeter.commands.ingest import ingest as run
    from ditmeter.config import load

    with tempfile.TemporaryDirectory(prefix="ditmeter-") as tmp:
        root = output_root if output_root is not None else tmp
        argv = [*_argv(model, workload, overrides), f"trace={trace}", f"output_root={root}"]
        result = run(load(argv, "ingest"))
        folder = result.analysis_dir
        data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        kernels = pd.read_parquet(folder / "kernels.parquet")
        ops = pd.read_parquet(folder / "ops.parquet")
    return Ingested(
        data["ingest"], result.modules, ops, kernels, data, folder if output_root is not None else None
    )


def sweep(overrides: Overrides, output_root: str | Path | None = None) -> pd.DataFrame:
    """The analytic model over a grid (``ditmeter sweep``): every key given as a list is an axis;
    one row per point (the ``sweep.parquet`` columns). Writes the run folder only with
    ``output_root``."""
    from ditmeter.commands.sweep import publish
    from ditmeter.commands.sweep import sweep as run

    argv = _argv(None, None, overrides)
    if output_root is not None:
        argv.append(f"output_root={output_root}")
    result = run(argv)
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

    return run(Path(output_root), str(run_a), str(run_b), write=write).frame
