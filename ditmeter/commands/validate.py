"""``ditmeter validate``: every public measurement of a real Wan run in ``data/measurements/``
predicted under its stated settings, with the errors (:mod:`ditmeter.compare.measurements`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import attrs
import pandas as pd

from ditmeter.compare.measurements import Point, comparison_frame, load_points
from ditmeter.reports.run_dir import analysis_dir, check_run_folder, new_run_id, staged_run
from ditmeter.reports.tables import write_parquet
from ditmeter.reports.validate_report import (
    VALIDATE_FILES,
    VALIDATE_SCHEMA,
    fp32_reading,
    validate_markdown,
    validate_plot,
)


def default_folder() -> Path:
    """``data/measurements`` of a checkout, or the wheel's copy (``ditmeter/measurements``)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "data" / "measurements", package / "measurements"):
        if candidate.is_dir():
            return candidate
    return package.parent / "data" / "measurements"


def predict_point(point: Point, extra: Sequence[str] = ()) -> float:
    """The predicted seconds of what ``point`` timed, under its settings (and ``extra`` keys), by
    the code of ``ditmeter report``."""
    return predict(point, extra).seconds


#: The run-wide key a point keeps at ``ieee`` where its device's kernel table has no TF32 curve
#: (a board without a published TF32 sweep): the TF32 reading is of the boards that have one.
FP32_MATMUL = "time.fp32_matmul"


@attrs.frozen
class Prediction:
    """One point as ``report`` predicts it under the point's settings."""

    seconds: float  # of what the point timed
    roofline_s: float  # the same span at every peak of its settings (compute and memory; no communication)
    peak_bytes: int  # the peak memory per GPU, as report prints it
    fp32_matmul: str  # what its fp32 matmuls were read as
    adjusted: tuple[str, ...]  # what the pipeline changed in its workload (frames, size)


def predict(point: Point, extra: Sequence[str] = ()) -> Prediction:
    """``point`` under its settings and ``extra`` keys: the point's own settings win, then the
    run's ``extra``, then what its source's measurements imply (``point.inferred``); a
    ``time.fp32_matmul=tf32`` not stated by the point stays ``ieee`` on a device without a TF32
    curve."""
    from ditmeter.commands.report import analyze
    from ditmeter.config import load
    from ditmeter.errors import ConfigError

    def key(o: str) -> str:
        return o.partition("=")[0]

    given = {key(o) for o in point.settings}
    extra = [o for o in extra if key(o) not in given]
    run = {key(o) for o in extra}
    extra = [*(o for o in point.inferred if key(o) not in run), *extra]
    try:
        try:
            cfg = load([*point.overrides(), *extra], "report")
        except ConfigError as exc:
            if exc.field != FP32_MATMUL or f"{FP32_MATMUL}=ieee" in extra:
                raise
            extra = [o for o in extra if key(o) != FP32_MATMUL]
            cfg = load([*point.overrides(), *extra], "report")
        analysis, view = analyze(cfg, scaling=False)  # a plan's table over GPU counts: unused here
    except ConfigError as exc:  # a point whose settings the tool refuses: name the point
        raise ConfigError("validate.data", f"point {point.id}: {exc.field}: {exc.message}") from None
    value, roofline = {
        "video": (view.per_video_s, view.roofline_video_s),
        "per_step": (view.per_step_s, view.roofline_step_s),
        "denoise": (view.forward_video_s, view.roofline_denoise_s),
    }[point.timed]
    if value is None or roofline is None:  # a device is given: only a denoiser left out of the stages
        raise ConfigError(
            "validate.data", f"point {point.id}: timed {point.timed} needs the denoiser in stages"
        )
    return Prediction(
        float(value),
        float(roofline),
        analysis.memory.peak_per_gpu_bytes,
        cfg.time.fp32_matmul,
        tuple(f"the pipeline adjusted {a.text}" for a in analysis.geometry.adjustments),
    )


def validate_frame(points: Sequence[Point], extra: Sequence[str] = ()) -> pd.DataFrame:
    """Every point predicted and compared (``compare.measurements.comparison_frame``), with what
    its fp32 matmuls were read as and its roofline (``measured_over_roofline`` below 1: measured
    faster than every peak of its stated settings allows); what the pipeline adjusted joins the
    point's assumptions."""
    made = [predict(p, extra) for p in points]
    said = [attrs.evolve(p, assumed=(*p.assumed, *m.adjusted)) for p, m in zip(points, made, strict=True)]
    frame = comparison_frame(said, [m.seconds for m in made], [m.peak_bytes for m in made])
    roofline = pd.Series([m.roofline_s for m in made], index=frame.index, dtype="float64")
    return frame.assign(
        fp32_matmul=[m.fp32_matmul for m in made],
        roofline_s=roofline,
        measured_over_roofline=frame["measured_s"] / roofline,
    )


@attrs.frozen
class ValidateResult:
    frame: pd.DataFrame
    execution: str
    analysis_dir: Path | None
    files: tuple[str, ...]
    #: what the run reads every point's fp32 matmuls as, over what their sources imply; None: each
    #: point's own (stated, else inferred, else PyTorch's default, ieee)
    fp32_matmul: str | None = None

    @property
    def settings(self) -> str:
        """The run's own settings, as the keys read (``time.*``)."""
        return f"time.execution={self.execution}, time.fp32_matmul={fp32_reading(self.fp32_matmul)}"


def validate(
    output_root: Path,
    data: Path | None = None,
    run_id: str | None = None,
    execution: str = "eager",
    write: bool = True,
    fp32_matmul: str | None = None,
) -> ValidateResult:
    """Predict every point of ``data`` (default ``data/measurements``) and (``write``) publish
    ``validate.parquet``, ``validate.md`` and ``validate.png`` under
    ``<output_root>/<run_id>/static_analysis/validate/``."""
    rid = run_id or new_run_id("validate", execution)
    if write:  # refused before the predictions (seconds), not after
        check_run_folder(output_root, rid)
    points = load_points(data or default_folder())
    run = [f"time.execution={execution}", *([f"{FP32_MATMUL}={fp32_matmul}"] if fp32_matmul else [])]
    frame = validate_frame(points, run)
    if not write:
        return ValidateResult(frame, execution, None, (), fp32_matmul)
    manifest = {"command": "validate", "points": len(frame)}
    meta = {
        "ditmeter.table": "validate",
        "ditmeter.execution": json.dumps(execution),
        "ditmeter.fp32_matmul": json.dumps(fp32_matmul),
    }
    with staged_run(output_root, rid, "validate", manifest) as out:
        write_parquet(frame, VALIDATE_SCHEMA, out / "validate.parquet", meta)
        (out / "validate.md").write_text(validate_markdown(frame, execution, fp32_matmul), encoding="utf-8")
        validate_plot(frame, out / "validate.png")
    folder = analysis_dir(output_root / rid, "validate")
    return ValidateResult(frame, execution, folder, VALIDATE_FILES, fp32_matmul)
