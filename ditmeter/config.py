"""Hydra composition: ``model=… workload=… key=value`` → typed, validated records.

The config tree is the repository's ``configs/`` folder. A built wheel ships it
inside the package as ``ditmeter/conf/`` (``package-dir`` in ``pyproject.toml``);
a source checkout or editable install reads ``configs/`` beside the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.workload import Workload, parse_workload
from ditmeter.errors import ConfigError
from ditmeter.models import family as family_named
from ditmeter.models.family import Family, ModelSpec
from ditmeter.validate import FieldError, finite_number, one_of, parse, whole_number

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


def _path_or_none(value: Any) -> Path | None:
    return Path(str(value)) if value else None


@attrs.frozen
class ProfileOptions:
    """``profile.*``: where and how ``ditmeter profile`` runs the model."""

    device_kind: str = attrs.field(default="cpu", validator=one_of(*DEVICE_KINDS))
    num_layers: int = attrs.field(default=2, validator=whole_number(1))
    warmup: int = attrs.field(default=1, validator=whole_number(0))
    trace: Path | None = attrs.field(default=None, converter=_path_or_none)


@attrs.frozen
class CompareOptions:
    """``compare.*``: the gate's tolerance and the rows of the error table."""

    tolerance: float = attrs.field(validator=finite_number(0, hint=" (0.05 = 5%)"))
    show: int = attrs.field(validator=whole_number(1))


@attrs.frozen
class Scalars:
    """Top-level keys that are single values."""

    measured_video_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(finite_number(0, strict=True, hint=" of seconds"))
    )


@attrs.frozen
class RunConfig:
    """Everything one command needs, validated and typed."""

    family: Family
    model: ModelSpec  # the family's typed model record
    workload: Workload
    output_root: Path
    run_id: str | None
    compare: CompareOptions
    stages: tuple[str, ...]  # the selected stages of the video
    device: DeviceSpec | None = None
    measured_video_s: float | None = None
    profile: ProfileOptions = ProfileOptions()

    @property
    def geometry(self) -> Geometry:
        """Latent and token shapes, and what the rounding rule changed (said before any long step)."""
        return self.family.geometry(self.model, self.workload)


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
    fam = family_named(raw["model"].get("family"))
    model = fam.parse_model(raw["model"])
    workload = parse_workload(raw["workload"], default_steps=model.default_steps, text_len=model.text_len)
    run_id = raw.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip() or "/" in run_id):
        raise ConfigError("run_id", f"must be a non-empty name without '/', got {run_id!r}")
    out = RunConfig(
        family=fam,
        model=model,
        workload=workload,
        output_root=Path(str(raw.get("output_root") or "tmp/profile-output")),
        run_id=run_id,
        compare=parse(CompareOptions, raw.get("compare"), "compare"),
        stages=select_stages(fam, model, raw.get("stages")),
        device=parse(DeviceSpec, raw["device"], "device") if isinstance(raw.get("device"), dict) else None,
        measured_video_s=_scalars(raw).measured_video_s,
        profile=parse(ProfileOptions, raw.get("profile") or {}, "profile"),
    )
    out.geometry  # noqa: B018  (refuses sizes below one patch before anything runs)
    return out


def _scalars(raw: Any) -> Scalars:
    try:
        return Scalars(measured_video_s=raw.get("measured_video_s"))
    except FieldError as exc:
        raise ConfigError(exc.field, exc.message) from None


def select_stages(fam: Family, model: ModelSpec, requested: Any) -> tuple[str, ...]:
    """``stages=null`` (all of the model's) or a list of names; errors name ``stages``."""
    allowed = fam.available_stages(model)
    if requested is None:
        return allowed
    names = (
        [requested]
        if isinstance(requested, str)
        else list(requested)
        if isinstance(requested, Sequence)
        else None
    )
    if not names or any(n not in allowed for n in names):
        raise ConfigError(
            "stages", f"{requested!r} not allowed for {model.name}; allowed: {', '.join(allowed)}"
        )
    return tuple(s for s in allowed if s in names)
