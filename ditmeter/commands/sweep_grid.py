"""A sweep's grid and each point's configs, as ``config.load`` gives them.

A grid is written as overrides: every ``key=[a,b,c]`` (Hydra's list syntax) or Hydra sweep
(``key=a,b``, ``choice(…)``, ``range(…)``) is an axis, every other override is fixed, and the
points are the product of the axes. ``stages=[dit,vae_decode]`` and ``model.*`` lists are one
value (sweep them with ``a,b`` or ``choice(…)``).

A point is two halves that do not depend on each other, each resolved by :func:`resolve`:

* its analysis (model, workload and its keys, pipeline, offload, stages): ``config.load`` once per
  combination of the keys Hydra applies (models, presets, pipelines…), then ``workload.<field>``
  values re-parsed by ``parse_workload`` as ``load`` does; one analysis per combination
  (:func:`configs`);
* its device and time plan (device, device.*, calibration, time.mode, attention, gemm_dtype):
  ``config.load`` once per device, then ``device.<field>`` values re-parsed into the device record
  and the plan keys planned by ``catalog.time_plan``, as ``load`` does (:func:`device_plans`).

The per-value way is compared with ``load`` on the first point of each load. (A ``load`` costs
~10 ms of Hydra work once its groups are composed: per distinct combination of every key, ~2 s
of a 100-analysis × 100-plan grid.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from ditmeter.analytic.batch_timing import DevicePlan
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.timing import TimePlan
from ditmeter.analytic.workload import PIPELINES, parse_workload
from ditmeter.catalog import choices, time_plan
from ditmeter.config import (
    COMMAND_KEYS,
    GROUPS,
    RunConfig,
    TimeOptions,
    TopLevel,
    check_parsable,
    load,
    parse_message,
)
from ditmeter.errors import ConfigError
from ditmeter.validate import parse

#: The top-level keys a sweep takes.
SWEEP_KEYS = COMMAND_KEYS["sweep"]
#: Keys that change only a prediction, not the analysis.
DEVICE_SIDE = ("device", "calibration", "time", "attention", "gemm_dtype")
#: Device-side keys applied per value without a load (see :func:`_time_plan`).
PLAN_KEYS = ("time.mode", "attention", "gemm_dtype", "time.execution", "host", "time.fp32_matmul")
#: Keys whose value is a list: ``key=[a,b]`` is one value, not an axis.
LIST_VALUED = ("stages", "model.")
#: Workload fields the ``methods.*`` keys set (``config.load``), not parsed from ``workload``.
METHOD_FIELDS = ("cfg_free", "cfg_batch", "vae_tiling", "vae_parallel")
#: Keys of the run folder: one for the whole sweep.
RUN_KEYS = ("output_root", "run_id")
#: The largest grid: about a minute at the measured 2,000 points per second (and its plots)
MAX_POINTS = 100_000
#: The most distinct analyses (the axes that change the model, workload, stages, plan or methods,
#: each built apart): about a minute at the ~80 per second a 1.3B analysis takes on 2 cores.
MAX_ANALYSES = 5_000
#: The most points with ``gpus`` > 1, each of which ranks every plan on its GPU count per device:
#: about 8 minutes at the ~10 such points per second measured here on 2 cores (the 14B at 480p on
#: 8 and 64 H100s and B200s).
MAX_PLANNED = 5_000


@attrs.frozen
class Axis:
    """One swept key: its values as Hydra writes them (``texts``) and as it parses them."""

    key: str  # without the +/++ prefix: workload.num_frames
    prefix: str
    texts: tuple[str, ...]
    values: tuple[Any, ...]

    def override(self, i: int) -> str:
        return f"{self.prefix}{self.key}={self.texts[i]}"

    def label(self, i: int) -> str:
        """The value for a table column: a string as given, anything else as written."""
        value = self.values[i]
        return value if isinstance(value, str) else self.texts[i]

    @property
    def boolean(self) -> bool:
        """Every value a boolean: a bool column, not the strings "true" and "false"."""
        return all(isinstance(v, bool) for v in self.values)

    @property
    def device_side(self) -> bool:
        return self.key.split(".", 1)[0] in DEVICE_SIDE


@attrs.frozen
class Grid:
    """Fixed overrides and axes; the points are the product of the axes, the last fastest."""

    fixed: tuple[str, ...]
    axes: tuple[Axis, ...]

    @property
    def size(self) -> int:
        return math.prod(len(a.texts) for a in self.axes)

    @property
    def constants(self) -> tuple[Axis, ...]:
        """The fixed overrides as one-value axes, the columns they give the table (the run folder's
        ``output_root`` and ``run_id`` and deletions ``~key`` left out)."""
        out = []
        for item in self.fixed:
            o = _parse_override(item)
            key = str(o.key_or_group)
            if key not in RUN_KEYS and not o.is_delete():
                prefix = item[: len(item) - len(item.lstrip("+"))]
                out.append(Axis(key, prefix, (_text(o.value()),), (o.value(),)))
        return tuple(out)

    def points(self) -> Iterator[dict[str, str]]:
        for combo in itertools.product(*(a.texts for a in self.axes)):
            yield {a.key: text for a, text in zip(self.axes, combo, strict=True)}


def _text(value: Any) -> str:
    """A parsed value as an override writes it (``true``, ``null``, escaped strings)."""
    from hydra.core.override_parser.types import Override

    if isinstance(value, bool):
        return "true" if value else "false"
    return Override._get_value_element_as_str(value)


def _parse_override(item: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    check_parsable(item)
    try:
        return OverridesParser.create().parse_overrides([item])[0]
    except HydraException as exc:
        key = item.partition("=")[0].lstrip("+~") or "overrides"
        raise ConfigError(key, parse_message(exc)) from None


def _axis_values(override: Any, key: str) -> list[Any] | None:
    """The values of an axis, or None for a fixed override."""
    if override.is_delete():
        return None
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    value = override.value()
    if isinstance(value, list) and not any(key == k or key.startswith(k) for k in LIST_VALUED):
        return value
    return None


def grid(overrides: Sequence[str]) -> Grid:
    """Split ``overrides`` into fixed ones and axes; a key no sweep takes, a key given twice, an
    unknown model/workload/device name or more than :data:`MAX_POINTS` points is a ConfigError."""
    fixed: list[str] = []
    axes: list[Axis] = []
    seen: set[str] = set()
    for item in overrides:
        o = _parse_override(item)
        key = str(o.key_or_group)
        if key.split(".", 1)[0] not in SWEEP_KEYS:
            raise ConfigError(key, f"not used by `ditmeter sweep`; keys: {', '.join(SWEEP_KEYS)}")
        if key in seen:
            raise ConfigError(key, "given twice; give one value or one list [a,b]")
        seen.add(key)
        values = _axis_values(o, key)
        if values is None:
            fixed.append(item)
            continue
        if key in RUN_KEYS:
            raise ConfigError(key, "one run folder holds the whole sweep: give one value")
        if not values:
            raise ConfigError(key, "an axis needs at least one value")
        texts = tuple(_text(v) for v in values)
        if len(set(texts)) != len(texts):
            twice = next(t for t in texts if texts.count(t) > 1)
            raise ConfigError(key, f"the axis gives {twice} twice; give each value once")
        if key in GROUPS:
            unknown = [t for t in texts if t not in choices(key)]
            if unknown:
                raise ConfigError(key, f"unknown {unknown[0]!r}; allowed: {', '.join(choices(key))}")
        prefix = item[: len(item) - len(item.lstrip("+"))]
        axes.append(Axis(key, prefix, texts, tuple(values)))
    out = Grid(tuple(fixed), tuple(axes))
    if out.size > MAX_POINTS:
        sizes = " × ".join(f"{len(a.texts)} {a.key}" for a in axes)
        raise ConfigError(axes[0].key, f"{sizes} = {out.size:,} points; at most {MAX_POINTS:,} per sweep")
    _check_planned(out, fixed)
    built = [a for a in axes if not a.device_side]
    analyses = math.prod(len(a.texts) for a in built)
    if analyses > MAX_ANALYSES:
        sizes = " × ".join(f"{len(a.texts)} {a.key}" for a in built)
        raise ConfigError(
            built[0].key,
            f"{sizes} = {analyses:,} distinct analyses; at most {MAX_ANALYSES:,} per sweep (devices, "
            "time.* and attention axes cost no analysis each)",
        )
    return out


def _check_planned(g: Grid, fixed: Sequence[str]) -> None:
    """At most :data:`MAX_PLANNED` points that rank plans (``gpus`` > 1)."""
    axis = next((a for a in g.axes if a.key == "gpus"), None)
    if axis is not None:
        many = sum(1 for v in axis.values if isinstance(v, int) and v > 1)
        planned = many * (g.size // len(axis.texts))
    else:
        given = [o.partition("=")[2] for o in fixed if o.partition("=")[0] == "gpus"]
        planned = g.size if given and given[0].strip().isdigit() and int(given[0]) > 1 else 0
    if planned > MAX_PLANNED:
        raise ConfigError(
            "gpus",
            f"{planned:,} points rank every plan on more than one GPU; at most {MAX_PLANNED:,} per sweep "
            "(about 30 a second: give fewer values of the other axes, or parallel.* for one plan)",
        )


def parse_grid(overrides: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The fixed overrides and every point of the grid (swept key → value as written)."""
    g = grid(overrides)
    return list(g.fixed), list(g.points())


# ---- configs: one load per combination of the keys Hydra applies, the scalar keys per value ---

T = TypeVar("T")
R = TypeVar("R")


def _plain(axis: Axis) -> bool:
    """A key applied per value: one level deep, not added, every value a plain scalar."""
    scalars = all(v is None or isinstance(v, bool | int | float | str) for v in axis.values)
    interpolated = any(isinstance(v, str) and "${" in v for v in axis.values)
    return scalars and not interpolated and not axis.prefix and axis.key.count(".") <= 1


def at_point(point: Sequence[str], exc: ConfigError) -> ConfigError:
    """``exc`` with the point it came from: ``… (at model=… device=…)``."""
    return ConfigError(exc.field, f"{exc.message} (at {' '.join(point)})" if point else exc.message)


def resolve(
    fixed: Sequence[str],
    axes: Sequence[Axis],
    per_value: Callable[[Axis], bool],
    anchor: Callable[[list[str]], T],
    apply: Callable[[T, list[str], list[str], dict[str, Any]], R],
    same: Callable[[R, T], bool],
) -> tuple[list[tuple[str, ...]], list[R]]:
    """Every combination of ``axes`` (the last fastest). ``anchor`` (a load) runs once per
    combination of the other axes, at the first value of the ``per_value`` ones; ``apply(ref,
    ref_point, point, values)`` gives each point from its anchor and its per-value keys, and must
    agree with the anchor (``same``) on the anchor's own point. Returns each point's overrides and
    result."""
    by_load = [i for i, a in enumerate(axes) if not per_value(a)]
    by_value = [i for i, a in enumerate(axes) if per_value(a)]

    def overrides(at: dict[int, int]) -> list[str]:
        return [*fixed, *(axes[i].override(at[i]) for i in range(len(axes)))]

    out: dict[tuple[int, ...], tuple[tuple[str, ...], R]] = {}
    for base in itertools.product(*(range(len(axes[i].texts)) for i in by_load)):
        first = {**dict(zip(by_load, base, strict=True)), **dict.fromkeys(by_value, 0)}
        ref_point = overrides(first)
        try:
            ref = anchor(ref_point)
        except ConfigError as exc:
            raise at_point(ref_point, exc) from exc
        for idx in itertools.product(*(range(len(axes[i].texts)) for i in by_value)):
            at = {**first, **dict(zip(by_value, idx, strict=True))}
            point = overrides(at)
            try:
                got = apply(ref, ref_point, point, {axes[i].key: axes[i].values[at[i]] for i in by_value})
            except ConfigError as exc:
                raise at_point(point, exc) from exc
            if not any(idx) and not same(got, ref):
                raise RuntimeError(f"sweep: the per-value config disagrees with load({point})")
            out[tuple(at[i] for i in range(len(axes)))] = (tuple(point), got)
    ordered = [out[k] for k in itertools.product(*(range(len(a.texts)) for a in axes))]
    return [p for p, _ in ordered], [r for _, r in ordered]


def _edits(overrides: Sequence[str]) -> str:
    """How ``load`` names an edited preset: ``480p-81f[num_frames=33,height=720]``."""
    return ",".join(o.split(".", 1)[1] for o in overrides if o.startswith("workload.") and "=" in o)


def configs(fixed: Sequence[str], axes: Sequence[Axis]) -> tuple[list[tuple[str, ...]], list[RunConfig]]:
    """The analysis side: ``load`` per combination of models, workload presets, pipelines,
    offload and stages; ``workload.<field>`` values re-parsed as ``load`` parses them."""

    def apply(ref: RunConfig, ref_point: list[str], point: list[str], values: dict[str, Any]) -> RunConfig:
        raw = attrs.asdict(ref.workload, recurse=False)
        for key in ("pipeline", *METHOD_FIELDS):  # given apart (the top-level key, methods.*)
            del raw[key]
        preset = raw["name"].removesuffix(f"[{_edits(ref_point)}]")
        raw |= {k.removeprefix("workload."): v for k, v in values.items()}
        raw["name"] = f"{preset}[{_edits(point)}]" if _edits(point) else preset
        m = ref.model
        w = parse_workload(
            raw, default_steps=m.default_steps, text_len=m.text_len, pipeline=ref.workload.pipeline
        )
        w = attrs.evolve(w, **{k: getattr(ref.workload, k) for k in METHOD_FIELDS})
        out = attrs.evolve(ref, workload=w)
        out.geometry  # noqa: B018  (as load does: refuses sizes the model cannot run)
        return out

    def per_value(a: Axis) -> bool:
        return _plain(a) and a.key.startswith("workload.")

    def anchor(point: list[str]) -> RunConfig:
        return load(point, "sweep")  # the keys that need another on are asked of the whole grid

    return resolve(fixed, axes, per_value, anchor, apply, lambda got, ref: got == ref)


def _time_plan(device: DeviceSpec, values: Mapping[str, Any]) -> TimePlan:
    """The plan ``load`` gives ``device`` with the :data:`PLAN_KEYS` ``values`` (``time.*`` and the
    top-level ``attention``, ``gemm_dtype``, ``host``; :func:`ditmeter.catalog.time_plan`, its checks
    and its errors), without a load."""
    top = {k: v for k, v in values.items() if not k.startswith("time.")}
    options = {k.removeprefix("time."): v for k, v in values.items() if k.startswith("time.")}
    given = {"pipeline": PIPELINES[0], "output_root": ".", **top}
    return time_plan(parse(TopLevel, given, ""), parse(TimeOptions, options, "time"), device)[1]


def device_plans(fixed: Sequence[str], axes: Sequence[Axis]) -> list[DevicePlan]:
    """The device side: ``load`` per device; ``device.<field>`` values re-parsed into the device
    record and ``time.mode``, ``attention`` and ``gemm_dtype`` planned by ``catalog.time_plan``, as
    ``load`` does (with ``calibration=``, ``load`` per point)."""
    calibrated = any(top_key(o) == "calibration" for o in fixed) or any(a.key == "calibration" for a in axes)
    host = next((o.split("=", 1)[1] for o in fixed if top_key(o) == "host"), "auto")

    def per_value(a: Axis) -> bool:
        # calibration= replaces the device and its table: every point is loaded
        field = a.key.startswith("device.") and a.key != "device.kernels"
        return _plain(a) and (a.key in PLAN_KEYS or field) and not calibrated

    def anchor(point: list[str]) -> RunConfig:
        cfg = load(point, "sweep")
        if cfg.device is None:
            raise ConfigError("device", "a sweep predicts times: give device=NAME or device=[NAME,…]")
        return cfg

    def apply(ref: RunConfig, _: list[str], __: list[str], values: dict[str, Any]) -> DevicePlan:
        assert ref.device is not None
        if calibrated:  # every point loaded (no per-value keys): the calibration's device and table
            return DevicePlan(ref.device, ref.time)
        fields = {k.removeprefix("device."): v for k, v in values.items() if k.startswith("device.")}
        device = ref.device
        if fields:
            device = parse(DeviceSpec, {**attrs.asdict(device, recurse=False), **fields}, "device")
        t = ref.time
        plan = {
            "time.mode": t.mode,
            "attention": t.attention,
            "gemm_dtype": t.gemm_dtype,
            "time.execution": t.execution,
            "host": host,  # as given: auto picks the host by the device
            "time.fp32_matmul": t.fp32_matmul,
        }
        plan |= {k: v for k, v in values.items() if k in PLAN_KEYS}
        return DevicePlan(device, _time_plan(device, plan))

    def same(got: DevicePlan, ref: RunConfig) -> bool:
        return got == DevicePlan(ref.device, ref.time)  # type: ignore[arg-type]

    return resolve(fixed, axes, per_value, anchor, apply, same)[1]


def top_key(override: str) -> str:
    """The top-level key an override sets: ``device`` of ``++device.efficiency=0.5``."""
    return override.partition("=")[0].lstrip("+~").split(".", 1)[0]
