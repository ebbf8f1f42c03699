"""Hydra composition: ``model=… workload=… key=value`` → typed, validated records.

The config tree is the repository's ``configs/`` folder. A built wheel ships it
inside the package as ``ditmeter/conf/`` (``package-dir`` in ``pyproject.toml``);
a source checkout or editable install reads ``configs/`` beside the package.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.geometry import geometry
from ditmeter.analytic.pipeline import select_stages
from ditmeter.analytic.spec import ModelSpec, Workload
from ditmeter.errors import ConfigError

GROUPS = ("model", "workload", "device")
REQUIRED_GROUPS = ("model", "workload")


def config_dir() -> Path:
    """The folder holding ``config.yaml`` and the ``model/`` and ``workload/`` groups."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no config.yaml in {here / 'conf'} or {here.parent / 'configs'}")


def choices(group: str) -> list[str]:
    """Names selectable in a config group (``model``, ``workload``)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


DEVICE_KINDS = ("cpu", "cuda")


@attrs.frozen
class ProfileOptions:
    """``profile.*``: where and how ``ditmeter profile`` runs the model."""

    device_kind: str = "cpu"
    num_layers: int = 2
    warmup: int = 1
    trace: Path | None = None

    @classmethod
    def from_mapping(cls, raw: Any) -> ProfileOptions:
        raw = raw if isinstance(raw, dict) else {}
        kind = raw.get("device_kind", "cpu")
        if kind not in DEVICE_KINDS:
            raise ConfigError(
                "profile.device_kind", f"{kind!r} not allowed; allowed: {', '.join(DEVICE_KINDS)}"
            )
        layers, warmup = raw.get("num_layers", 2), raw.get("warmup", 1)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ConfigError("profile.num_layers", f"must be a whole number >= 1, got {layers!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError("profile.warmup", f"must be a whole number >= 0, got {warmup!r}")
        trace = raw.get("trace")
        return cls(kind, layers, warmup, Path(str(trace)) if trace else None)


@attrs.frozen
class RunConfig:
    """Everything one command needs, validated."""

    model: ModelSpec
    workload: Workload
    output_root: Path
    run_id: str | None
    tolerance: float
    show: int  # rows of the error table `compare` prints
    raw: dict[str, Any]
    device: DeviceSpec | None = None
    measured_video_s: float | None = None
    profile: ProfileOptions = ProfileOptions()
    stages: tuple[str, ...] = ("dit",)  # the selected stages of the video


def _check_group_choices(overrides: list[str]) -> None:
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+~") in GROUPS:
            group = key.lstrip("+~")
            allowed = choices(group)
            if value not in allowed:
                raise ConfigError(group, f"unknown {value!r}; allowed: {', '.join(allowed)}")


def _hydra_message(exc: BaseException) -> tuple[str, str]:
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if cause is not None:
        text = f"{text} ({' '.join(str(cause).split())})"
    for quote in ("'", '"'):
        marker = f"Could not override {quote}"
        if marker in text:
            key = text.split(marker, 1)[1].split(quote, 1)[0]
            return key, f"not a known key ({text})"
    return "overrides", text


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose ``config.yaml`` with command-line ``overrides`` (Hydra syntax)."""
    _check_group_choices(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except HydraException as exc:
        field, message = _hydra_message(exc)
        raise ConfigError(field, message) from exc
    finally:
        GlobalHydra.instance().clear()


def load(overrides: list[str]) -> RunConfig:
    """Compose and validate; raises :class:`ConfigError` naming the bad field."""
    cfg = compose_config(overrides)
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    for group in REQUIRED_GROUPS:
        if not isinstance(raw.get(group), dict):
            raise ConfigError(group, f"missing; allowed: {', '.join(choices(group))}")
    changed = [o.split(".", 1)[1] for o in overrides if o.startswith("workload.") and "=" in o]
    if changed:  # a preset with edits must not pass for the preset itself
        raw["workload"]["name"] = f"{raw['workload'].get('name', 'custom')}[{','.join(changed)}]"
    model = ModelSpec.from_mapping(raw["model"])
    workload = Workload.from_mapping(raw["workload"], model)
    geometry(model, workload)  # refuses sizes below one patch before anything runs
    run_id = raw.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip() or "/" in run_id):
        raise ConfigError("run_id", f"must be a non-empty name without '/', got {run_id!r}")
    return RunConfig(
        model=model,
        workload=workload,
        output_root=Path(str(raw.get("output_root") or "tmp/profile-output")),
        run_id=run_id,
        tolerance=_tolerance(raw.get("compare")),
        show=_show(raw.get("compare")),
        raw={str(k): v for k, v in raw.items()},
        device=DeviceSpec.from_mapping(raw["device"]) if isinstance(raw.get("device"), dict) else None,
        measured_video_s=_measured_video_s(raw.get("measured_video_s")),
        profile=ProfileOptions.from_mapping(raw.get("profile")),
        stages=select_stages(model, raw.get("stages")),
    )


def _measured_video_s(value: Any) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError("measured_video_s", f"must be a positive number of seconds, got {value!r}")
    return float(value)


def _show(section: Any) -> int:
    value = section.get("show") if isinstance(section, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError("compare.show", f"must be a whole number >= 1, got {value!r}")
    return value


def _tolerance(section: Any) -> float:
    value = section.get("tolerance") if isinstance(section, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError("compare.tolerance", f"must be a finite number >= 0 (0.05 = 5%), got {value!r}")
    return float(value)
