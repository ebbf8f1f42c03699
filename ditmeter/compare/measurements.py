"""Public measurements of real Wan runs against the prediction for each (``ditmeter validate``).

The dataset is ``data/measurements/*.yaml`` (shipped in the repository): per source, points
with the published GPU, GPU count, model, settings as ditmeter keys (workload, offload, plan,
attention), what was timed (``video``: the whole video; ``per_step``: one denoising step;
``denoise``: every step), the published seconds, the source and the exact quote, and what the
source does not state under ``assumed``. Each point is predicted under its settings by the same
code as ``ditmeter report`` (``commands/validate.py``) and compared: relative error = predicted /
measured − 1.

NB: no constant in the time model is fitted to these numbers (docs/validate.md): they are for
validation only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

from ditmeter.errors import ConfigError
from ditmeter.files import load_yaml

#: What a point's seconds cover.
TIMED = ("video", "per_step", "denoise")
#: The largest measurements file read (bytes): the dataset is text, a few hundred points.
MAX_FILE_BYTES = 4 * 1024 * 1024
_REQUIRED = ("id", "model", "pipeline", "device", "gpus", "settings", "timed", "seconds", "source", "quote")


@attrs.frozen
class Point:
    """One published measurement (see the module docstring)."""

    id: str
    model: str
    pipeline: str
    device: str
    gpus: int
    settings: tuple[str, ...]
    timed: str
    seconds: float
    source: str  # the file's source name
    where: str  # repo/path/commit or URL, and the cell
    quote: str
    published_gpu: str
    assumed: tuple[str, ...]
    #: a what-if method's run: the method as published and its baseline point's id (the same
    #: source's run without it), whose speed-up validate checks
    method: str | None = None
    baseline: str | None = None
    #: the published peak GPU memory, in the source's "GB" (taken as printed: 10^9 bytes), or None
    peak_memory_gb: float | None = None
    #: what ran: ``published.framework``'s name (before its parenthesis) where the runtime is
    #: neither the official code nor diffusers and ``pipeline`` is only how the tool costs it;
    #: otherwise the pipeline itself
    framework: str = ""
    #: settings its source does not state but its measurements imply (the file's ``inferred:``,
    #: each with its reason among ``assumed``): applied unless the run itself gives the key
    inferred: tuple[str, ...] = ()

    def overrides(self) -> list[str]:
        return [f"model={self.model}", f"pipeline={self.pipeline}", f"device={self.device}", *self.settings]


def _read(path: Path) -> Any:
    return load_yaml(path, "validate.data", MAX_FILE_BYTES)


#: Keys a point's ``settings`` may not give: the point's own fields say them, or they are the run's.
_NOT_SETTINGS = ("model", "pipeline", "device", "output_root", "run_id", "calibration")


def _settings(settings: Any, where: str, what: str) -> list[str]:
    """``settings`` as a list of ``key=value`` strings that do not restate a point's own fields or
    the run's (``_NOT_SETTINGS``); ``what`` names them in the message."""
    if not isinstance(settings, list) or not all(isinstance(x, str) and "=" in x for x in settings):
        raise ConfigError("validate.data", f"{where}: {what} must be a list of key=value strings")
    own = [x for x in settings if x.split("=", 1)[0].split(".", 1)[0] in _NOT_SETTINGS]
    if own:
        raise ConfigError(
            "validate.data",
            f"{where}: {what} may not give {own[0].split('=', 1)[0]} (the point's own fields or the run's: "
            f"{', '.join(_NOT_SETTINGS)})",
        )
    return settings


def _check_shape(raw: dict[str, Any], where: str) -> None:
    """``gpus`` a positive int equal to the settings' plan, ``source`` a mapping, ``settings`` a list
    of ``key=value`` strings that do not restate the point's own fields."""
    gpus = raw["gpus"]
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus <= 0:
        raise ConfigError("validate.data", f"{where}: gpus must be a positive integer, got {gpus!r}")
    if not isinstance(raw["source"], dict):
        raise ConfigError("validate.data", f"{where}: source must be a mapping (repo, path, url, where)")
    settings = _settings(raw["settings"], where, "settings")
    plan = 1
    for key in ("ulysses", "ring", "cfg"):
        given = [x.split("=", 1)[1] for x in settings if x.startswith(f"parallel.{key}=")]
        plan *= int(given[-1]) if given and given[-1].isdigit() else 1
    if plan != gpus:
        raise ConfigError(
            "validate.data", f"{where}: gpus is {gpus} but the settings' plan (parallel.*) runs {plan}"
        )


#: What a point's numbers may be: a measured span from a millisecond to about four months, a peak
#: from a megabyte to 100 TB (beyond, a typo; near 0 or 1e308, errors of hundreds of digits).
SECONDS = (1e-3, 1e7)
PEAK_GB = (1e-3, 1e5)


def _within(value: Any, bounds: tuple[float, float]) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and bounds[0] <= value <= bounds[1]


def _inferred(data: dict[str, Any], path: Path) -> tuple[tuple[str, ...], str | None]:
    """A file's ``inferred: {settings: [key=value, ...], why: ...}``: settings that every point of
    the source ran under by the evidence ``why`` gives, though the source does not state them."""
    raw = data.get("inferred")
    if raw is None:
        return (), None
    settings = raw.get("settings") if isinstance(raw, dict) else None
    why = raw.get("why") if isinstance(raw, dict) else None
    if not isinstance(settings, list) or not settings or not isinstance(why, str) or not why.strip():
        raise ConfigError(
            "validate.data",
            f"{path.name}: inferred must hold settings (key=value strings) and why (the evidence)",
        )
    return tuple(_settings(settings, path.name, "inferred settings")), why


def _point(raw: Any, source: str, path: Path) -> Point:
    where = f"{path.name}: point {raw.get('id', '?') if isinstance(raw, dict) else '?'}"
    if not isinstance(raw, dict):
        raise ConfigError("validate.data", f"{where} must be a mapping")
    named = {k: str(raw[k]) for k in ("id", "method", "baseline") if raw.get(k) is not None}
    for key, text in named.items():  # a line break or terminal escape would break every table it heads
        if not text.isprintable():
            why = f"{path.name}: a point's {key} {text!r} must be one printable line"
            raise ConfigError("validate.data", why)
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ConfigError("validate.data", f"{where} lacks {', '.join(missing)}")
    if raw["timed"] not in TIMED:
        raise ConfigError(
            "validate.data", f"{where}: timed must be one of {', '.join(TIMED)}, got {raw['timed']!r}"
        )
    seconds = raw["seconds"]
    if not _within(seconds, SECONDS):
        raise ConfigError(
            "validate.data",
            f"{where}: seconds must be a positive number up to {SECONDS[1]:,g}, got {seconds!r}",
        )
    peak = raw.get("peak_memory_gb")
    if peak is not None and not _within(peak, PEAK_GB):
        raise ConfigError(
            "validate.data",
            f"{where}: peak_memory_gb must be a positive number up to {PEAK_GB[1]:,g} or null, got {peak!r}",
        )
    _check_shape(raw, where)
    s = raw["source"]
    cite = " ".join(str(s[k]) for k in ("repo", "path", "commit", "url", "where") if s.get(k))
    return Point(
        str(raw["id"]),
        str(raw["model"]),
        str(raw["pipeline"]),
        str(raw["device"]),
        int(raw["gpus"]),
        tuple(str(x) for x in raw["settings"] or ()),
        str(raw["timed"]),
        float(seconds),
        source,
        cite,
        str(raw["quote"]),
        str((raw.get("published") or {}).get("gpu", raw["device"])),
        tuple(str(x) for x in raw.get("assumed") or ()),
        None if raw.get("method") is None else str(raw["method"]),
        None if raw.get("baseline") is None else str(raw["baseline"]),
        None if peak is None else float(peak),
        str((raw.get("published") or {}).get("framework") or raw["pipeline"]).split(" (", 1)[0],
    )


def load_points(folder: Path) -> list[Point]:
    """Every point of every ``*.yaml`` in ``folder`` (sorted by file name), ids unique."""
    try:
        files = sorted(folder.glob("*.yaml")) if folder.is_dir() else None
    except OSError as exc:  # a path longer than the OS allows, a folder that cannot be listed
        reason = exc.strerror or exc
        raise ConfigError("validate.data", f"cannot read {str(folder)[:200]}: {reason}") from None
    if files is None:
        raise ConfigError("validate.data", f"{folder} is not a folder of measurement files")
    points: list[Point] = []
    for path in files:
        data = _read(path)
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            raise ConfigError("validate.data", f"{path.name} must hold source: and points: [...]")
        name = str((data.get("source") or {}).get("name", path.stem))
        inferred, why = _inferred(data, path)
        for raw in data["points"]:
            p = _point(raw, name, path)
            own = {x.partition("=")[0] for x in p.settings}  # a point's own statement wins
            kept = tuple(x for x in inferred if x.partition("=")[0] not in own)
            if kept:
                p = attrs.evolve(p, inferred=kept, assumed=(*p.assumed, f"inferred {' '.join(kept)}: {why}"))
            points.append(p)
    ids = [p.id for p in points]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError("validate.data", f"point ids must be unique; repeated: {', '.join(dup)}")
    if not points:
        raise ConfigError("validate.data", f"{folder} holds no measurement points")
    known = set(ids)
    for p in points:
        if (p.method is None) != (p.baseline is None):
            raise ConfigError("validate.data", f"point {p.id}: method and baseline go together")
        if p.baseline is not None and p.baseline not in known:
            raise ConfigError(
                "validate.data", f"point {p.id}: baseline {p.baseline!r} is not a point of the data"
            )
    return points


#: ``parallel.*`` keys of a point's settings that name a strategy, in the order a family is named.
_STRATEGIES = ("ulysses", "ring", "cfg")
#: A multi-GPU point's id ends ``-<N>gpu``; the same id ending ``-1gpu`` is its one-GPU pair, and
#: where several plans share one GPU count the id names its plan before the count
#: (``…-u2r4-8gpu``: Ulysses 2 × ring 4), which the pair drops (``…-1gpu``).
_GPUS_SUFFIX = re.compile(r"(-u\d+r\d+)?-(\d+)gpu$")


def one_gpu_pair(point_id: str) -> str:
    """The id of a multi-GPU point's one-GPU pair (see :data:`_GPUS_SUFFIX`)."""
    return _GPUS_SUFFIX.sub("-1gpu", point_id)


def plan_family(settings: Sequence[str]) -> str:
    """The plan family of a point's settings: ``1 GPU``, or its strategies (``ulysses``,
    ``ulysses × ring``) with ``+ DiT FSDP`` when the DiT is sharded."""
    values = dict(s.split("=", 1) for s in settings if s.startswith("parallel."))
    used = [k for k in _STRATEGIES if int(values.get(f"parallel.{k}", "1")) > 1]
    if not used:
        return "1 GPU"
    fsdp = " + DiT FSDP" if values.get("parallel.dit_fsdp", "false").lower() == "true" else ""
    return " × ".join(used) + fsdp


#: Bytes in the sources' "GB" (taken as printed; none says whether it meant GiB: then every peak
#: error below would be 7.4% lower).
GB = 1e9
#: The peak-memory columns (NaN where the source gives no peak).
PEAK_COLUMNS = ("measured_peak_gb", "predicted_peak_gb", "peak_rel_error")


def comparison_frame(
    points: Sequence[Point], predicted: Sequence[float], peaks: Sequence[int]
) -> pd.DataFrame:
    """One row per point: its settings and plan family, measured and ``predicted`` seconds, the
    relative error; a multi-GPU point with its one-GPU pair in the dataset (the same id ending
    ``-1gpu``, its plan segment dropped: :func:`one_gpu_pair`), or a method's point with its
    ``baseline``, also its measured and predicted speed-up over that pair and the speed-up's
    error; a point with a published peak memory, that and the predicted peak per GPU (``peaks``,
    bytes) and their error."""
    by_id = dict(zip((p.id for p in points), predicted, strict=True))
    measured = {p.id: p.seconds for p in points}
    rows = []
    for p, seconds, peak in zip(points, predicted, peaks, strict=True):
        error = float(seconds) / p.seconds - 1.0
        given = p.peak_memory_gb
        peak_cols = (given, peak / GB, peak / GB / given - 1.0) if given is not None else (None,) * 3
        pair = p.baseline or (one_gpu_pair(p.id) if p.gpus > 1 else None)
        speedup = (measured[pair] / p.seconds, by_id[pair] / float(seconds)) if pair in measured else None
        rows.append(
            {
                "point_id": p.id,
                "source": p.source,
                "model": p.model,
                "pipeline": p.pipeline,
                "framework": p.framework,
                "device": p.device,
                "published_gpu": p.published_gpu,
                "gpus": p.gpus,
                "settings": " ".join(p.settings),
                "inferred": " ".join(p.inferred),
                "plan": plan_family(p.settings),
                "method": p.method,
                "timed": p.timed,
                "measured_s": p.seconds,
                "predicted_s": float(seconds),
                "rel_error": error,
                "abs_rel_error": abs(error),
                "measured_speedup": None if speedup is None else speedup[0],
                "predicted_speedup": None if speedup is None else speedup[1],
                "speedup_rel_error": None if speedup is None else speedup[1] / speedup[0] - 1.0,
                **dict(zip(PEAK_COLUMNS, peak_cols, strict=True)),
                "assumed": "; ".join(p.assumed),
                "where": p.where,
                "quote": p.quote,
            }
        )
    optional = ["measured_speedup", "predicted_speedup", "speedup_rel_error", *PEAK_COLUMNS]
    frame = pd.DataFrame(rows)
    return frame.astype(dict.fromkeys(optional, "float64"))  # None: NaN, even when no point has one


def error_summary(frame: pd.DataFrame, by: str | None = None, error: str = "rel_error") -> pd.DataFrame:
    """Points, median and max |relative error| and the median signed error, overall or ``by`` a
    column (``device``, ``pipeline``, ``gpus``, ``plan``); ``error``: which error column
    (``speedup_rel_error``: the points that have one)."""
    frame = frame[frame[error].notna()].assign(rel_error=frame[error], abs_rel_error=frame[error].abs())
    groups = [("all", frame)] if by is None else list(frame.groupby(by, sort=True))
    return pd.DataFrame(
        [
            {
                "group": str(name),
                "points": len(g),
                "median_abs_rel_error": float(g["abs_rel_error"].median()),
                "max_abs_rel_error": float(g["abs_rel_error"].max()),
                "median_rel_error": float(g["rel_error"].median()),
            }
            for name, g in groups
        ]
    )
