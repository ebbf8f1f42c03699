"""The catalog under ``configs/`` that a run names by key: the folder and its groups, the kernel
tables (each over its ``base``), the fabrics, networks and hosts, MagCache's published ratios, and
the time plan they make with a device (``attention=``, ``gemm_dtype=``, ``time.*`` checked against
them). Every table is validated as it is read; an error names the field (exit 2)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Protocol

import attrs
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf._utils import get_yaml_loader

from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.fabric import FabricTable
from ditmeter.analytic.gemm_formats import GEMM_DTYPES, curve_dtype, peak_dtype
from ditmeter.analytic.host import HostPlan, default_host, host_from_mapping
from ditmeter.analytic.kernels import KernelTable
from ditmeter.analytic.methods import MagCacheModel
from ditmeter.analytic.network import NetworkTable
from ditmeter.analytic.timing import TimePlan
from ditmeter.errors import ConfigError
from ditmeter.files import SAFE_LOADER
from ditmeter.models.family import ModelSpec
from ditmeter.validate import FieldError


class TopChoices(Protocol):
    """What :func:`time_plan` reads of the run's top-level keys (``config.TopLevel``)."""

    @property
    def calibration(self) -> str | None: ...
    @property
    def attention(self) -> str: ...
    @property
    def gemm_dtype(self) -> str | None: ...
    @property
    def host(self) -> str: ...


class TimeChoices(Protocol):
    """What :func:`time_plan` reads of ``time.*`` (``config.TimeOptions``)."""

    @property
    def mode(self) -> str: ...
    @property
    def execution(self) -> str: ...
    @property
    def fp32_matmul(self) -> str: ...


def config_dir() -> Path:
    """The folder holding ``config.yaml`` and the ``model/`` and ``workload/`` groups."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no config.yaml in {here / 'conf'} or {here.parent / 'configs'}")


class _ConfigLoader(SAFE_LOADER):  # type: ignore[misc,valid-type]
    """OmegaConf's YAML reading (its float rule, so ``1e-3`` is a number; no timestamps; a key given
    twice refused) on libyaml's parser where PyYAML has it: the project's own config files are read
    many times per sweep, and the pure-Python parser was most of a cold sweep's device step."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag != yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value}",
                    key_node.start_mark,
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.yaml_implicit_resolvers = get_yaml_loader().yaml_implicit_resolvers


def config_yaml(path: Path) -> Any:
    """One of the project's own YAML files (``configs/``), parsed as ``OmegaConf.load`` parses it."""
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_ConfigLoader)  # a SafeLoader: no Python objects
    return {} if data is None else data  # an empty file: an empty mapping, as OmegaConf gives


def config_node(path: Path) -> DictConfig:
    """``OmegaConf.load(path)`` for a mapping file of ``configs/``, read by :func:`config_yaml`."""
    node = OmegaConf.create(config_yaml(path))
    assert isinstance(node, DictConfig)
    return node


def choices(group: str) -> list[str]:
    """Names selectable in a config group (``model``, ``workload``)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def catalog_file(group: str, name: str, field: str, what: str | None = None) -> Path:
    """``configs/<group>/<name>.yaml`` for a name the group lists: any other name (a path, one
    with ``..``, a file of another group) exits 2 naming ``field`` and the allowed names."""
    allowed = choices(group)
    if name not in allowed:
        raise ConfigError(field, f"{what or group} {name!r} unknown; allowed: {', '.join(allowed)}")
    return config_dir() / group / f"{name}.yaml"


def _catalog_mapping(path: Path, field: str) -> dict[str, Any]:
    raw = config_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(field, f"{path} is not a mapping")
    return {str(k): v for k, v in raw.items()}


def _kernel_mapping(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A kernel file's content over its ``base`` (its sections replace the base's entries of the
    same backend or dtype; an entry set to null drops the base's: a kernel that does not run there)."""
    if name in seen:
        raise ConfigError("device.kernels", f"kernel table {name!r} refers back to itself")
    raw = _catalog_mapping(catalog_file("kernels", name, "device.kernels", "kernel table"), "device.kernels")
    base = raw.pop("base", None)
    if base is None:
        return {str(k): v for k, v in raw.items()}
    merged = _kernel_mapping(str(base), (*seen, name))
    for key, value in raw.items():
        nested = key in ("attention", "gemm", "conv") and isinstance(value, dict)
        if nested:
            kept = {**merged.get(str(key), {}), **value}
            merged[str(key)] = {k: v for k, v in kept.items() if v is not None}
        else:
            merged[str(key)] = value
    return merged


@functools.lru_cache(maxsize=16)
def kernel_table(name: str) -> KernelTable:
    """``configs/kernels/<name>.yaml`` over its base, validated (errors name ``kernels.<field>``)."""
    return KernelTable.from_mapping(_kernel_mapping(name), "kernels")


@functools.lru_cache(maxsize=1)
def _magcache_ratios() -> dict[str, Any]:
    from ditmeter.files import load_yaml

    ratios: dict[str, Any] = load_yaml(config_dir() / "cache" / "magcache.yaml", "methods.cache")["ratios"]
    return ratios


def magcache_model(model: ModelSpec) -> MagCacheModel | None:
    """MagCache's published ratios for ``model`` (``configs/cache/magcache.yaml``) and which of its
    scripts runs it; None where MagCache publishes none (FLF2V, models of your own)."""
    entry = _magcache_ratios().get(model.name)
    if entry is None:
        return None
    experts = int(getattr(model, "experts", 1))
    if model.name.startswith("wan2.1"):
        mode = "wan2.1"
    elif experts == 2:
        mode = "i2v" if int(getattr(model, "images", 0)) else "t2v"
    else:
        mode = "ti2v"
    shift, boundary = float(getattr(model, "sample_shift", 1.0)), float(getattr(model, "boundary", 0.0))
    return MagCacheModel(model.name, tuple(float(v) for v in entry["values"]), mode, shift, boundary)


def _catalog_table(group: str, name: str) -> dict[str, Any]:
    """``configs/<group>/<name>.yaml`` as a mapping; an unknown name exits 2 naming ``device.<group>``."""
    return _catalog_mapping(catalog_file(group, name, f"device.{group}"), f"device.{group}")


@functools.lru_cache(maxsize=16)
def fabric_table(name: str) -> FabricTable:
    """``configs/fabric/<name>.yaml``, validated (errors name ``fabric.<field>``)."""
    return FabricTable.from_mapping(_catalog_table("fabric", name))


def device_fabric(device: DeviceSpec) -> FabricTable | None:
    """The device's ``fabric``: a ``configs/fabric/`` name, or a file of your host's nccl-tests
    output (:mod:`ditmeter.analytic.nccl_tests`: the busbw as measured, on the device's own link);
    None: the datasheet link."""
    if device.fabric is None:
        return None
    from ditmeter.analytic.nccl_tests import FIELD, fabric_mapping, gpus_of, is_file_name

    if not is_file_name(device.fabric):
        return fabric_table(device.fabric)
    from ditmeter.analytic.collective_time import domain_gpus
    from ditmeter.files import NCCL_TESTS_LIMIT_BYTES, read_text

    path = Path(device.fabric)
    text = read_text(path, FIELD, NCCL_TESTS_LIMIT_BYTES)
    # the link the run's GPUs talked over (an H100 PCIe pair: its NVLink bridge; 8 of them: PCIe)
    ranks = min(gpus_of(text) or domain_gpus(device), domain_gpus(device))
    link = device.link_for(ranks)
    if link is None:
        raise ConfigError("device", f"{device.name} has no nvlink_gbps or pcie_gbps in the catalog")
    raw = fabric_mapping(text, path, link / 1e9, nvlink=device.over_nvlink(ranks))
    try:
        table = FabricTable.from_mapping(raw)
    except ConfigError as exc:  # the file is the fabric: name that field
        raise ConfigError(FIELD, f"{path.name}: {exc.field}: {exc.message}") from None
    digest = hashlib.sha256(text.encode()).hexdigest()
    # measured on this device: every group reads it as is
    return attrs.evolve(table, rescale=False, origin=f"{path.resolve()} (sha256 {digest})")


@functools.lru_cache(maxsize=16)
def network_table(name: str) -> NetworkTable:
    """``configs/network/<name>.yaml``, validated (errors name ``network.<field>``)."""
    return NetworkTable.from_mapping(_catalog_table("network", name))


def host_plan(name: str, device: DeviceSpec | None) -> HostPlan | None:
    """``host=``: ``auto`` (by the device, :func:`~ditmeter.analytic.host.default_host`), a
    ``configs/host/`` name, or a calibration file of a CPU (``ditmeter calibrate``)."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        from ditmeter.analytic.calibration import read_calibration

        try:
            cal_device, kernels = read_calibration(Path(name))
        except ConfigError as exc:  # the file is the host's: name that field
            raise ConfigError("host", exc.message) from None
        return HostPlan(cal_device, kernels) if device is not None else None
    known = name == "auto" or name in choices("host")
    if device is None and known:
        return None
    name = default_host(device) if name == "auto" else name
    if name not in choices("host"):
        raise ConfigError(
            "host", f"{name!r} unknown; allowed: auto, {', '.join(choices('host'))} or a calibration file"
        )
    return _host_table(name)


@functools.lru_cache(maxsize=16)
def _host_table(name: str) -> HostPlan:
    """``configs/host/<name>.yaml``, validated (read once: a sweep asks for it per device)."""
    return host_from_mapping(_catalog_mapping(catalog_file("host", name, "host"), "host"), "host")


def time_plan(
    top: TopChoices, options: TimeChoices, device: DeviceSpec | None, command: str | None = None
) -> tuple[DeviceSpec | None, TimePlan]:
    """The device and the time plan: the device's kernel table, or a calibration file's device and
    table (``calibration=PATH``); ``attention=``, ``gemm_dtype=`` and ``time.*`` checked against them
    (without a device nothing is timed: a key that changes the time is refused, but ``validate``'s
    ``time.execution``, which picks the execution its points are predicted under)."""
    kernels = None
    if top.calibration is not None:
        from ditmeter.analytic.calibration import read_calibration, serve_any_report

        cal_device, kernels = read_calibration(Path(top.calibration))
        catalog = kernel_table(cal_device.kernels) if cal_device.kernels else None
        kernels = serve_any_report(kernels, catalog, top.calibration)
        if device is not None and device.name != cal_device.name:
            raise ConfigError(
                "calibration",
                f"was measured on {cal_device.name}, not device={device.name}; drop device= or match it",
            )
        device = cal_device
    elif device is not None and device.kernels is not None:
        kernels = kernel_table(device.kernels)
    if kernels is not None and device is not None and device.sms is not None:
        kernels = attrs.evolve(kernels, sms=device.sms)  # the waves of its attention calls
    plan = TimePlan(
        options.mode,
        kernels,
        top.attention,
        top.gemm_dtype,
        options.execution,
        host_plan(top.host, device),
        device_fabric(device) if device is not None else None,
        network=network_table(device.network) if device is not None and device.network is not None else None,
        fp32_matmul=options.fp32_matmul,
    )
    if device is None:
        _untimed(top, options, command)
        return device, plan
    if device.nics_per_node is not None:
        from ditmeter.analytic.collective_time import domain_gpus

        if device.network is None:
            raise ConfigError(
                "device.nics_per_node", f"{device.name} has no network between nodes; allowed: null"
            )
        if device.nics_per_node > domain_gpus(device):
            raise ConfigError(
                "device.nics_per_node",
                f"{device.nics_per_node} is more than the {domain_gpus(device)} GPUs of a node; "
                f"allowed: 1 to {domain_gpus(device)} (null: one per GPU)",
            )
    if plan.fp32_matmul == "tf32" and not _runs_gemm(device, kernels, "tf32"):
        raise ConfigError(
            "time.fp32_matmul",
            f"{device.name}'s kernel table has no tf32 GEMM curve; allowed here: ieee",
        )
    if kernels is not None and top.attention not in ("auto", *kernels.backends):
        raise ConfigError(
            "attention",
            f"{top.attention!r} does not run on {device.name}; allowed: auto, {', '.join(kernels.backends)}",
        )
    if top.gemm_dtype is not None and not _runs_gemm(device, kernels, top.gemm_dtype):
        here = [g for g in GEMM_DTYPES if _runs_gemm(device, kernels, g)]
        raise ConfigError(
            "gemm_dtype", f"{_missing_gemm(device, top.gemm_dtype)}; allowed here: null, {', '.join(here)}"
        )
    if top.attention == "sage" and device.int8_tops is None:
        raise ConfigError("attention", f"sage computes on INT8 tensor cores; {device.name} has no INT8 peak")
    if top.attention != "auto" and not plan.predicted:
        raise ConfigError("attention", "a kernel's speed is not in the roofline: use time.mode=predicted")
    return device, plan


def _missing_gemm(device: DeviceSpec, gemm_dtype: str) -> str:
    """What ``device`` lacks to run ``gemm_dtype``: the tensor peak it computes at, or else the kernel
    table's GEMM curve it reads."""
    peak = peak_dtype(gemm_dtype)
    try:
        device.tensor_flop_per_s(peak)
    except ConfigError:
        return f"{device.name} has no {peak} tensor-core peak for gemm_dtype={gemm_dtype}"
    curve = curve_dtype(gemm_dtype)
    return (
        f"{device.name}'s kernel table has no {curve} GEMM curve (no measured {gemm_dtype} GEMM of the board)"
    )


def _runs_gemm(device: DeviceSpec, kernels: KernelTable | None, gemm_dtype: str) -> bool:
    """Whether ``device`` (and its kernel table) has the peak and the GEMM curve of ``gemm_dtype``."""
    try:
        device.tensor_flop_per_s(peak_dtype(gemm_dtype))
        if kernels is not None:
            kernels.gemm_fraction(curve_dtype(gemm_dtype), 1)
    except (ConfigError, FieldError):
        return False
    return True


def _untimed(top: TopChoices, options: TimeChoices, command: str | None) -> None:
    """Refuses a key that changes the predicted time when nothing is timed (no device)."""
    if command == "validate" and options.mode != "predicted":
        raise ConfigError(
            "time.mode", "not used by `ditmeter validate` (its points are predicted; time.execution applies)"
        )
    changed = {
        "attention": top.attention != "auto",
        "gemm_dtype": top.gemm_dtype is not None,
        "time.mode": options.mode != "predicted",
        "time.execution": options.execution != "eager" and command != "validate",
        "time.fp32_matmul": options.fp32_matmul != "ieee" and command != "validate",
    }
    for key, given in changed.items():
        if given:
            raise ConfigError(key, "needs device=NAME (or calibration=PATH): it changes the predicted time")
