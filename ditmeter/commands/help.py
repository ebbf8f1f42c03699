"""``--help`` of each command, generated from the schema: every key the command accepts
(:data:`~ditmeter.config.COMMAND_KEYS`) with its default and the first sentence of its comment in
``configs/config.yaml``, the fields of the model, workload and device files, and examples that use
only keys the command accepts (``tests/test_cli.py`` checks both)."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from ditmeter.catalog import choices, config_dir
from ditmeter.commands.whatif_methods import DEFAULT_WHATIFS, WHATIFS
from ditmeter.config import COMMAND_KEYS, GROUPS, compose_config

#: Overrides shown as examples; each command shows the ones whose keys it accepts.
EXAMPLES = (
    "model=wan2.1-t2v-14b workload=720p-81f",
    "workload.num_frames=33 workload.height=480 workload.width=832 workload.batch_size=2",
    "pipeline=diffusers offload.model=false offload.t5_cpu=true model.num_layers=2",
    "device=h100-sxm device.efficiency=0.6 measured_video_s=1800 time.execution=compiled",
    "attention=fa3 gemm_dtype=fp8 parallel.ulysses=4 parallel.cfg=2",
    "stages=[dit] stages=[text_encoder,dit,vae_decode]",
    "output_root=/tmp/runs run_id=my-run",
)
#: What the command line reads besides the config keys.
EXTRA_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "validate": (("validate.data=DIR", "a folder of measurement YAML files (default: data/measurements/)"),),
    "plan": (
        (
            "gpus=N",
            "the GPUs every plan uses (required): 1 to 72, whole nodes of 8 where the device names a "
            "network (configs/network/), else one node (8) or NVLink domain (GB200: 72)",
        ),
        ("plan.memory_limit_gib=GIB", "also name the best plan whose peak per GPU is under this"),
        ("plan.price_per_gpu_hour=PRICE", "adds the cost per video (no built-in prices)"),
    ),
    "whatif": (
        (
            "whatif=[NAME,...]",
            f"the what-ifs to compare: {', '.join(WHATIFS)} (default: {', '.join(DEFAULT_WHATIFS)})",
        ),
    ),
}
_KEY_LINE = re.compile(r"^( *)([A-Za-z_][A-Za-z0-9_]*):")


def config_comments() -> dict[str, str]:
    """The first sentence of the comment above each key of ``config.yaml`` (``offload.t5_cpu``)."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    section = ""
    for line in (config_dir() / "config.yaml").read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("# "))
            continue
        match = _KEY_LINE.match(line)
        if match is not None:
            indent, key = match.groups()
            section = key if not indent else section
            name = f"{section}.{key}" if indent else key
            comment = " ".join(pending)
            comments[name] = re.split(r"(?<=\.)\s", comment, maxsplit=1)[0] if comment else ""
        pending = []
    return comments


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fields(section: dict[str, Any], prefix: str) -> list[str]:
    """Dotted names of a group file's fields (one level of subsections)."""
    out = []
    for key, value in section.items():
        if isinstance(value, dict) and key != "sources":  # a device's sources are per field
            out += [f"{prefix}{key}.{sub}" for sub in value if not isinstance(value[sub], dict)]
        elif key != "sources":
            out.append(f"{prefix}{key}")
    return out


def _group_lines(group: str, defaults: dict[str, Any]) -> list[str]:
    names = choices(group)
    section = defaults.get(group)
    if section is None:  # no default selection (device): the first file's fields
        section = compose_config([f"{group}={names[0]}"], None)[group]
    default = section.get("name") if defaults.get(group) is not None else "null"
    return [
        _line(f"{group}=NAME (default {default}): {', '.join(names)}"),
        _line(" ".join(_fields(section, f"{group}."))),
    ]


def _line(text: str) -> str:
    return textwrap.fill(text, width=108, initial_indent="  ", subsequent_indent="      ")


def keys_help(command: str) -> str:
    """Every key ``command`` accepts, one line each (groups: their names and fields)."""
    defaults = compose_config([], None)
    comments = config_comments()
    lines = []
    for top in COMMAND_KEYS[command]:
        value = defaults.get(top)
        if top in GROUPS:
            lines += _group_lines(top, defaults)
        elif isinstance(value, dict):
            lines += [
                _line(f"{top}.{sub}={_value(v)}  {comments.get(f'{top}.{sub}', '')}")
                for sub, v in value.items()
            ]
        else:
            lines.append(_line(f"{top}={_value(value)}  {comments.get(top, '')}"))
    lines += [_line(f"{key}  {what}") for key, what in EXTRA_KEYS.get(command, ())]
    return "keys (KEY=VALUE, Hydra overrides; the value shown is the default):\n" + "\n".join(lines)


def examples(command: str) -> str:
    """:data:`EXAMPLES` with only the overrides ``command`` accepts ("" where none)."""
    accepted = set(COMMAND_KEYS[command])
    kept = []
    for line in EXAMPLES:
        words = [w for w in line.split() if w.partition("=")[0].split(".")[0] in accepted]
        if words:
            kept.append("  " + " ".join(words))
    return "e.g.:\n" + "\n".join(kept) if kept else ""


def command_help(command: str) -> str:
    """The examples and every key of ``command``: the tail of its ``--help``."""
    return "\n\n".join(part for part in (examples(command), keys_help(command)) if part)
