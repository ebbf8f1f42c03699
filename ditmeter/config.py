"""Hydra composition: ``model=… workload=… key=value`` → typed, validated records.

The config tree is the repository's ``configs/`` folder. A built wheel ships it
inside the package as ``ditmeter/conf/`` (``setup.py``); a source checkout or
editable install reads ``configs/`` beside the package.

Composing is Hydra's work, in two steps that give what one ``compose`` call
gives: the group selections (``model=``, ``workload=``, ``device=``) are
composed once per selection and kept, and the other overrides are parsed and
applied by Hydra's own override machinery (a full ``compose`` per command line
costs about 100 ms, most of it re-reading and re-merging the same YAML).

Every key either takes effect or is refused: keys no config section has, and
keys the command does not use (``compare.tolerance`` for ``report``), are
one-line errors naming the key.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.gemm_formats import GEMM_DTYPES
from ditmeter.analytic.geometry import Geometry
from ditmeter.analytic.kernels import ATTENTION_BACKENDS
from ditmeter.analytic.memory import DEFAULT_OFFLOAD, Offload
from ditmeter.analytic.methods import NO_METHODS, SPARSE, Methods, methods_plan
from ditmeter.analytic.parallel import MAX_GPUS, SINGLE, ParallelPlan
from ditmeter.analytic.timing import EXECUTIONS, FP32_MATMULS, TIME_MODES, TimePlan
from ditmeter.analytic.workload import PIPELINES, Workload, parse_workload
from ditmeter.catalog import choices, config_dir, config_node, time_plan
from ditmeter.errors import ConfigError
from ditmeter.hydra_messages import hydra_message, parses
from ditmeter.hydra_messages import parse_message as parse_message  # for commands (not allowed this module)
from ditmeter.models import family as family_named
from ditmeter.models.family import Family, ModelSpec
from ditmeter.validate import FieldError, finite_number, one_of, parse, positive_int_at_most, whole_number

GROUPS = ("model", "workload", "device")
REQUIRED_GROUPS = ("model", "workload")

#: The top-level keys each command uses (an override of another is refused), and all of them.
_RUN = (
    "model",
    "workload",
    "device",
    "pipeline",
    "offload",
    "time",
    "attention",
    "gemm_dtype",
    "calibration",
    "host",
    "output_root",
    "run_id",
    "measured_video_s",
)
COMMAND_KEYS: dict[str, tuple[str, ...]] = {
    "report": (*_RUN, "stages", "parallel", "methods"),
    "trace": (*_RUN, "stages", "compare", "parallel"),
    "profile": (*_RUN, "profile"),
    "ingest": (*_RUN, "trace"),
    "sweep": (*(k for k in _RUN if k != "measured_video_s"), "stages", "parallel", "methods", "gpus"),
    "whatif": (*(k for k in _RUN if k != "measured_video_s"), "stages", "parallel", "methods"),
    "plan": (*(k for k in _RUN if k != "measured_video_s"), "stages", "methods", "gpus"),
    "calibrate": (
        "model",
        "workload",
        "device",
        "pipeline",
        "stages",
        "output_root",
        "device_kind",
        "calibrate",
    ),
    "compare": ("output_root", "run_id", "compare"),
    "diff": ("output_root", "run_id"),
    "validate": ("output_root", "run_id", "time"),
}
KEYS = tuple(dict.fromkeys(k for keys in COMMAND_KEYS.values() for k in keys))

#: A run id is a folder name: letters, digits and ``._+=-``, not starting with a dot (hidden runs
#: are staging folders), short enough for the staging name to fit in a file name (255 bytes).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}")

#: Keys whose values are names or paths, read as written: Hydra reads ``run_id=123`` as an int.
AS_WRITTEN = ("run_id", "output_root", "calibration", "host", "trace", "profile.trace", "calibrate.output")


DEVICE_KINDS = ("cpu", "cuda")


def _is_path(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise FieldError(attribute.name, f"must be a path, got {value!r}")


def _is_host(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        names = ", ".join(["auto", *choices("host")])
        raise FieldError(attribute.name, f"got {value!r}; allowed: {names} or a CPU's calibration file")


@attrs.frozen
class ProfileOptions:
    """``profile.*``: where and how ``ditmeter profile`` runs the model."""

    device_kind: str = attrs.field(default="cpu", validator=one_of(*DEVICE_KINDS))
    num_layers: int = attrs.field(default=2, validator=whole_number(1))
    warmup: int = attrs.field(default=1, validator=whole_number(0, maximum=100))
    trace: str | None = attrs.field(default=None, validator=_is_path)

    @property
    def trace_path(self) -> Path | None:
        return Path(self.trace) if self.trace else None


@attrs.frozen
class CalibrateOptions:
    """``calibrate.*`` and the top-level ``device_kind``: where and how ``ditmeter calibrate`` measures."""

    device_kind: str = attrs.field(default="cpu", validator=one_of(*DEVICE_KINDS))  # given: top level
    output: str | None = attrs.field(default=None, validator=_is_path)
    #: FLOPs of one measured call at most: larger shapes are measured at fewer rows
    max_flops: float = attrs.field(default=2e10, validator=finite_number(1e3, maximum=1e15))
    #: seconds torch.utils.benchmark repeats each shape for (at least)
    min_run_time: float = attrs.field(default=0.2, validator=finite_number(1e-3, maximum=60))


@attrs.frozen
class CompareOptions:
    """``compare.*``: the gate's tolerance and the rows of the error table."""

    #: the largest relative error that passes, at most 1 (100%: analytic from 0 to twice the measured)
    tolerance: float = attrs.field(validator=finite_number(0, maximum=1, hint=" (0.05 = 5%, 1 = 100%)"))
    show: int = attrs.field(validator=whole_number(1))


def run_id_rule(value: object) -> str:
    """What a run id must be, and what was given."""
    return (
        "must be a folder name of at most 200 ASCII letters, digits and ._+=-, starting with a letter "
        f"or a digit, got {value!r}"
    )


def _run_id(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not RUN_ID.fullmatch(value)):
        raise FieldError(attribute.name, run_id_rule(value))


@attrs.frozen
class TopLevel:
    """The top-level keys that are single values."""

    pipeline: str = attrs.field(validator=one_of(*PIPELINES))
    output_root: str = attrs.field(validator=_is_path)
    run_id: str | None = attrs.field(default=None, validator=_run_id)
    #: seconds; a video below a millisecond or above 30 years is a typo, not a measurement
    measured_video_s: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(finite_number(1e-3, maximum=1e9, hint=" of seconds")),
    )
    attention: str = attrs.field(default="auto", validator=one_of("auto", *ATTENTION_BACKENDS))
    gemm_dtype: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(one_of(*GEMM_DTYPES))
    )
    calibration: str | None = attrs.field(default=None, validator=_is_path)
    device_kind: str = attrs.field(default="cpu", validator=one_of(*DEVICE_KINDS))
    trace: str | None = attrs.field(default=None, validator=_is_path)  # ingest's Chrome trace
    #: the host CPU (offload.t5_cpu): auto, a configs/host/ name or a calibration file
    host: str = attrs.field(default="auto", validator=_is_host)
    #: sweep: the GPU count whose fastest plan each device runs (None: ``parallel.*`` as given)
    gpus: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            positive_int_at_most(MAX_GPUS, "a GB200 NVL72's 72, or nine nodes of 8, at most")
        ),
    )


@attrs.frozen
class TimeOptions:
    """``time.*``: how time is predicted."""

    mode: str = attrs.field(default="predicted", validator=one_of(*TIME_MODES))
    execution: str = attrs.field(default="eager", validator=one_of(*EXECUTIONS))
    fp32_matmul: str = attrs.field(default="ieee", validator=one_of(*FP32_MATMULS))


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
    offload: Offload = DEFAULT_OFFLOAD
    device: DeviceSpec | None = None
    measured_video_s: float | None = None
    profile: ProfileOptions = ProfileOptions()
    time: TimePlan = attrs.Factory(TimePlan)
    calibrate: CalibrateOptions = CalibrateOptions()
    parallel: ParallelPlan = SINGLE
    ingest_trace: Path | None = None  # ``trace=``: the Chrome trace ``ingest`` reads
    methods: Methods = NO_METHODS  # ``methods.*``: the what-if methods (docs/whatif.md)
    #: ``gpus=`` (sweep): each device runs the fastest plan on this many GPUs (None: ``parallel``)
    gpus: int | None = None
    #: what the run chose for the user and says before it starts (a model's own default workload)
    notes: tuple[str, ...] = ()

    @property
    def geometry(self) -> Geometry:
        """Latent and token shapes, and what the rounding rule changed (said before any long step)."""
        return self.family.geometry(self.model, self.workload)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


_MAX_DIGITS = 4300  # Python's default int_max_str_digits
_LONG_NUMBER = re.compile(rf"\d{{{_MAX_DIGITS + 1},}}")
_MAX_NESTING = 16
#: A decimal number with an exponent (``1e309``): Hydra reads one past a float's range as infinity.
_OVERFLOWS = re.compile(r"[+-]?([\d_]+\.?[\d_]*|\.[\d_]+)[eE][+-]?[\d_]+")


def _nesting(value: str) -> int:
    """How deep the brackets and braces of an override's value nest."""
    depth = deepest = 0
    for char in value:
        depth += (char in "[{") - (char in "]}")
        deepest = max(deepest, depth)
    return deepest


def check_parsable(override: str) -> None:
    """Refuse a value Hydra's parser cannot take: an integer past Python's digit limit (its int()
    raises) or brackets nested past :data:`_MAX_NESTING` (it recurses once per level)."""
    key, _, value = override.partition("=")
    if _LONG_NUMBER.search(value):
        raise ConfigError(_key(key), f"a number of more than {_MAX_DIGITS:,} digits; no key takes one")
    if _nesting(value) > _MAX_NESTING:
        raise ConfigError(_key(key), f"nested {_nesting(value):,} deep; at most {_MAX_NESTING} levels")


def _overflows(value: str) -> bool:
    """Whether ``value`` is a number written with an exponent past a 64-bit float's range."""
    if not _OVERFLOWS.fullmatch(value.strip()):
        return False
    try:
        return math.isinf(float(value))
    except ValueError:  # the pattern's underscores where float() takes none ("_e5")
        return False


def check_once(overrides: Sequence[str]) -> None:
    """A key the user gives twice is refused (Hydra would take the last silently); ``sweep``
    says the same in its own words (a list is its way to give several values)."""
    seen: set[str] = set()
    for item in overrides:
        if "=" not in item:
            continue
        key = _key(item)
        if key in seen:
            raise ConfigError(key, "given twice; give it once")
        seen.add(key)


def _is_sweep(override: str) -> bool:
    """Whether Hydra reads ``override`` as a sweep (``a,b``, ``range(…)``, ``choice(…)``, ``glob(…)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return bool(OverridesParser.create().parse_overrides([override])[0].is_sweep_override())
    except HydraException:
        return False  # a grammar error: said where it is parsed


def _check_overrides(overrides: Sequence[str], command: str | None) -> None:
    """Group choices that exist, top-level keys that exist and that the command uses."""
    given = {o.partition("=")[0].lstrip("+~") for o in overrides}
    for item in overrides:
        key, sep, value = item.partition("=")
        name = key.lstrip("+~")
        check_parsable(item)
        if sep and ("," in value or "(" in value) and _is_sweep(item):
            raise ConfigError(
                name,
                f"{value!r} is Hydra's sweep syntax, which ditmeter does not run: for a list write "
                f"{name}=[a,b] (an axis of `ditmeter sweep`), and quote a value that holds a comma",
            )
        if sep and _overflows(value) and name not in AS_WRITTEN:  # a name or path is read as written
            raise ConfigError(name, f"{value.strip()} is past a 64-bit float's range (read as infinity)")
        if sep and name == "run_id" and not value.isascii():  # not Hydra's advice to quote it
            raise ConfigError(name, run_id_rule(value))
        if not name:
            raise ConfigError("overrides", f"{item!r} has no key; give KEY=VALUE (workload.num_frames=33)")
        if sep and name in GROUPS and value not in choices(name):
            raise ConfigError(name, f"unknown {value!r}; allowed: {', '.join(choices(name))}")
        top = name.split(".", 1)[0]
        if sep and value.strip() == "{}":
            raise ConfigError(name, "an empty section sets nothing; give its keys (section.key=value)")
        if top and top not in KEYS and "=" in item:
            raise ConfigError(name, f"not a known key; top-level keys: {', '.join(KEYS)}")
        if sep and top == "device" and name != "device" and not given & {"device", "calibration"}:
            raise ConfigError(
                name, f"needs device=NAME, the device it adjusts; devices: {', '.join(choices('device'))}"
            )
        if sep and name == "device.memory_gb":  # a label for people: a fit reads memory_mib
            raise ConfigError(
                name,
                "is the datasheet's label and changes no fit; set device.memory_mib, the capacity the "
                "driver reports that every fit reads (80 GB boards report about 81,559 MiB)",
            )
        if sep and name == "model.default_workload":  # chosen from the model file, before overrides
            raise ConfigError(name, "is read from the model file; choose the workload with workload=NAME")
        if command is not None and top in KEYS and top not in COMMAND_KEYS[command]:
            users = ", ".join(c for c, keys in COMMAND_KEYS.items() if top in keys)
            if command == "compare" and top in ("model", "workload"):
                why = "compare reads the model and workload from the run; " + (
                    f"drop {name}" if "run_id" in given else "give run_id=…"
                )
            else:
                why = f"not used by `ditmeter {command}`; it applies to: {users}"
            raise ConfigError(name, why)


#: Device fields a catalog file may leave out (null in the spec): given on the command line they
#: are added to the chosen device's node, as ``+device.KEY=VALUE`` would.
_OPTIONAL_DEVICE_KEYS = frozenset(
    f.name for f in attrs.fields(DeviceSpec) if f.default is not attrs.NOTHING and f.default is None
)


def _added(item: str, cfg: DictConfig) -> str:
    """``device.KEY=VALUE`` for an optional device field the chosen file leaves out, and
    ``device.sources.KEY=TEXT`` for its source (every number needs one), as additions."""
    key = _key(item)
    section, _, name = key.partition(".")
    device = cfg.get("device") if section == "device" else None
    if not isinstance(device, DictConfig) or item.startswith(("+", "~")):
        return item
    field, _, source = name.partition(".")
    sources = device.get("sources")
    new_field = name in _OPTIONAL_DEVICE_KEYS and name not in device
    new_source = field == "sources" and (not isinstance(sources, DictConfig) or source not in sources)
    return "+" + item if new_field or new_source else item


@functools.lru_cache(maxsize=64)
def _composed(groups: tuple[str, ...], root: str) -> DictConfig:
    """``config.yaml`` with the group selections: the defaults composed once, each selected group
    file read once and set in place. That is what Hydra's ``compose`` gives for these flat group
    files (no defaults lists, no ``@package``; ``tests/test_configs.py`` checks the two agree) at a
    fraction of the cost when many combinations are loaded (a sweep); other forms go to Hydra."""
    cfg = copy.deepcopy(_hydra_composed((), root))
    for item in groups:
        key, sep, value = item.partition("=")
        name = key.lstrip("+")
        if key.startswith("~") or not sep or name not in GROUPS:
            return _hydra_composed(groups, root)
        with open_dict(cfg):
            cfg[name] = None if value in ("null", "") else _group_file(name, value, root)
    return cfg


@functools.lru_cache(maxsize=128)
def _group_file(group: str, value: str, root: str) -> DictConfig:
    return config_node(Path(root) / group / f"{value}.yaml")


@functools.lru_cache(maxsize=64)
def _hydra_composed(groups: tuple[str, ...], root: str) -> DictConfig:
    """``config.yaml`` composed by Hydra with the group selections (kept: the YAML does not change)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=root, version_base="1.3"):
            return compose(config_name="config", overrides=list(groups))
    finally:
        GlobalHydra.instance().clear()


def _apply(overrides: list[str], cfg: DictConfig) -> None:
    """Hydra's own parsing and application of ``key=value``, ``+key=value`` and ``~key``."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)


def _model_workload(groups: tuple[str, ...], root: str) -> str | None:
    """The model's own ``default_workload`` where the command line picks no workload: the
    release video of a model that ``config.yaml``'s default cannot run (TI2V-5B's odd latent
    height at 720p, FLF2V's 81 frames). None where a workload is chosen or the model has none."""
    if any(_key(o) == "workload" for o in groups):
        return None
    chosen = [o.partition("=")[2] for o in groups if _key(o) == "model" and not o.startswith("~")]
    name = chosen[-1] if chosen else _hydra_composed((), root).model.name
    node = _group_file("model", name, root) if name in choices("model") else None
    value = node.get("default_workload") if node is not None else None
    return str(value) if value else None


def compose_config(overrides: list[str], command: str | None = None) -> dict[str, Any]:
    """Compose ``config.yaml`` with command-line ``overrides`` (Hydra syntax), resolved to plain data.
    A model with a ``default_workload`` gets it unless a ``workload=`` is given."""
    _check_overrides(overrides, command)
    groups = tuple(o for o in overrides if _key(o) in GROUPS)
    own = _model_workload(groups, str(config_dir()))
    if own is not None:
        groups = (*groups, f"workload={own}")
    cfg: DictConfig | None = None
    try:
        cfg = copy.deepcopy(_composed(groups, str(config_dir())))
        _apply([_added(o, cfg) for o in overrides if _key(o) not in GROUPS], cfg)
        raw = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        field, message = hydra_message(exc, cfg)
        if field == "overrides":  # a grammar error names no key: the first override that fails
            field = next((_key(o) or field for o in overrides if "=" in o and not parses(o)), field)
        raise ConfigError(field, message) from exc
    assert isinstance(raw, dict)
    return {str(k): v for k, v in raw.items()}


def _as_written(raw: dict[str, Any], overrides: Sequence[str]) -> None:
    """Each name or path key (:data:`AS_WRITTEN`) that Hydra read as another type set to the text
    of its override: ``run_id=123`` is the folder ``123``, ``host=7950`` is refused as ``'7950'``."""
    for dotted in AS_WRITTEN:
        section, _, key = dotted.rpartition(".")
        holder = raw.get(section) if section else raw
        if not isinstance(holder, dict) or holder.get(key) is None or isinstance(holder[key], str):
            continue
        texts = [o.partition("=")[2] for o in overrides if "=" in o and _key(o) == dotted]
        if texts:
            holder[key] = texts[-1]


def load(overrides: list[str], command: str | None = None) -> RunConfig:
    """Compose and validate; raises :class:`ConfigError` naming the bad field.

    ``command`` (``report``, ``trace``, ``profile``, ``compare``) refuses the keys it does not use.
    """
    raw = compose_config(overrides, command)
    _as_written(raw, overrides)
    for key in raw:
        if key not in KEYS:
            raise ConfigError(key, f"not a known key; top-level keys: {', '.join(KEYS)}")
    for group in REQUIRED_GROUPS:
        if not isinstance(raw.get(group), dict):
            raise ConfigError(group, f"missing; allowed: {', '.join(choices(group))}")
    for group in ("model", "workload", "device"):
        name = raw[group].get("name") if isinstance(raw.get(group), dict) else None
        if isinstance(raw.get(group), dict) and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"{group}.name", f"empty; give the {group} a name (it heads every report)")
    raw["model"].pop("default_workload", None)  # the model file's own, which compose_config took
    own = _model_workload(tuple(o for o in overrides if _key(o) in GROUPS), str(config_dir()))
    notes: tuple[str, ...] = ()
    if own is not None:
        notes = (
            f"workload {own}: {raw['model'].get('name')}'s own default, its release video "
            f"(config.yaml's {_hydra_composed((), str(config_dir())).workload.name} does not run it); "
            "workload=NAME picks another",
        )
    changed = [o.split(".", 1)[1] for o in overrides if o.startswith("workload.") and "=" in o]
    if changed:  # a preset with edits must not pass for the preset itself
        raw["workload"]["name"] = f"{raw['workload'].get('name', 'custom')}[{','.join(changed)}]"
    top = parse(TopLevel, {k: raw[k] for k in attrs.fields_dict(TopLevel) if k in raw}, "")
    fam = family_named(raw["model"].get("family"))
    model = fam.parse_model(raw["model"], top.pipeline)
    workload = parse_workload(
        raw["workload"], default_steps=model.default_steps, text_len=model.text_len, pipeline=top.pipeline
    )
    methods = parse(Methods, raw.get("methods"), "methods")
    workload = attrs.evolve(
        workload,
        cfg_free=methods.cfg_free,
        cfg_batch=methods.cfg_batch,
        vae_tiling=methods.vae_tiling,
        vae_parallel=methods.vae_parallel,
    )
    device = parse(DeviceSpec, raw["device"], "device") if raw.get("device") is not None else None
    device, plan = time_plan(top, parse(TimeOptions, raw.get("time"), "time"), device, command)
    if methods.sparse is not None and top.attention in ("sage", "fa4"):
        why = f"replaces the DiT's attention kernel: it cannot combine with attention={top.attention}"
        raise ConfigError("methods.sparse", why)
    if device is not None:  # without one, analyze refuses the methods that change the time
        plan = methods_plan(plan, methods, model.num_layers)
    if top.measured_video_s is not None and device is None:
        raise ConfigError("measured_video_s", "needs device=NAME: the MFU is against a device's peak")
    if methods.vae_tiling:
        from ditmeter.models.wan21 import vae_tiling

        vae_tiling.check(model.vae, top.pipeline)  # type: ignore[attr-defined]
    parallel = ParallelPlan.from_mapping(raw.get("parallel"))
    if parallel.runtime == "xdit" and top.pipeline != "diffusers":  # on any GPU count
        why = "xdit patches the diffusers modules (xDiT's USP); allowed with pipeline=official: own"
        raise ConfigError("parallel.runtime", why)
    if top.gpus is not None and parallel != SINGLE:
        raise ConfigError("gpus", "picks each device's plan itself: it cannot combine with parallel.*")
    if methods.vae_parallel:
        from ditmeter.models.wan21 import vae_parallel

        vae_parallel.check(model.vae, top.gpus or parallel.gpus, methods.vae_tiling)  # type: ignore[attr-defined]
    profile = parse(ProfileOptions, raw.get("profile"), "profile")
    given_layers = any(_key(o) == "profile.num_layers" for o in overrides)  # the default 2 is capped
    if command == "profile" and given_layers and profile.num_layers > model.num_layers:
        why = f"{profile.num_layers} is more than the model's {model.num_layers} blocks"
        raise ConfigError("profile.num_layers", f"{why}; allowed: 1 to {model.num_layers}")
    out = RunConfig(
        family=fam,
        model=model,
        workload=workload,
        output_root=Path(top.output_root),
        run_id=top.run_id,
        compare=parse(CompareOptions, raw.get("compare"), "compare"),
        stages=select_stages(fam, model, raw.get("stages")),
        offload=parse(Offload, raw.get("offload"), "offload"),
        device=device,
        measured_video_s=top.measured_video_s,
        profile=profile,
        time=plan,
        calibrate=parse(CalibrateOptions, raw.get("calibrate"), "calibrate", device_kind=top.device_kind),
        parallel=parallel,
        ingest_trace=Path(top.trace) if top.trace else None,
        methods=methods,
        gpus=top.gpus,
        notes=notes,
    )
    if command != "sweep":  # a sweep asks it of its whole grid (commands/sweep.py)
        check_used(overrides, [out])

    out.geometry  # noqa: B018  (refuses sizes below one patch before anything runs)
    return out


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
    if len(set(names)) != len(names):
        raise ConfigError("stages", f"{requested!r} names a stage twice; allowed: {', '.join(allowed)}")
    return tuple(s for s in allowed if s in names)


#: Keys that qualify one method (the method key and the value it needs): given without it they
#: would do nothing, and are refused.
_QUALIFIERS = {
    **{f"methods.magcache_{k}": ("cache", "magcache") for k in ("threshold", "k", "retention")},
    **{f"methods.sparse_dense_{k}": ("sparse", None) for k in ("steps", "layers")},
}


def check_used(overrides: Sequence[str], runs: Sequence[RunConfig]) -> None:
    """Keys that do something only beside another, refused (naming the key) when no run of ``runs``
    (one, or a sweep's grid) has that other on: MagCache's rule keys without
    ``methods.cache=magcache``, a sparse kernel's dense steps or layers without ``methods.sparse``,
    ``host=`` (other than ``auto``) without ``offload.t5_cpu=true``."""
    for item in overrides:
        key = _key(item)
        if key == "host" and not item.endswith("=auto") and not any(r.offload.t5_cpu for r in runs):
            raise ConfigError("host", "times the text encoder on the host CPU: needs offload.t5_cpu=true")
        if key not in _QUALIFIERS:
            continue
        owner, value = _QUALIFIERS[key]
        on = [getattr(r.methods, owner) for r in runs]
        if not any(v is not None and (value is None or v == value) for v in on):
            needs = f"methods.{owner}={value}" if value else f"methods.{owner} (one of: {', '.join(SPARSE)})"
            raise ConfigError(key, f"qualifies a method that is not on: needs {needs}")
