"""``--help`` of each command: what it does, what it writes and its exit codes (:func:`commands`),
and, generated from the schema, every key the command accepts (:data:`~ditmeter.config.COMMAND_KEYS`)
with its default and the first sentence of its comment in ``configs/config.yaml``, the fields of
the model, workload and device files, and examples that use only keys the command accepts
(``tests/test_cli.py`` checks both)."""

from __future__ import annotations

import functools
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
        elif key != "sources" and f"{prefix}{key}" not in NOT_OVERRIDDEN:
            out.append(f"{prefix}{key}")
    return out


#: Fields a group file holds that the command line does not set (the config refuses them).
NOT_OVERRIDDEN = ("device.memory_gb", "model.default_workload")


@functools.cache  # every command's help reads them: composed once per process (read, never changed)
def _defaults() -> dict[str, Any]:
    return compose_config([], None)


@functools.cache  # every command's help lists it: the models composed once per process
def _own_workload_models() -> tuple[str, ...]:
    """The models with a ``default_workload`` of their own."""
    own = (m for m in choices("model") if compose_config([f"model={m}"])["model"].get("default_workload"))
    return tuple(own)


def _group_lines(group: str, defaults: dict[str, Any]) -> list[str]:
    names = choices(group)
    section = defaults.get(group)
    if section is None:  # no default selection (device): the first file's fields
        section = compose_config([f"{group}={names[0]}"], None)[group]
    default = section.get("name") if defaults.get(group) is not None else "null"
    if group == "workload":  # a model that cannot run it names its own (config.load)
        own = _own_workload_models()
        default += f"; {', '.join(own)}: their own release video" if own else ""
    return [
        _line(f"{group}=NAME (default {default}): {', '.join(names)}"),
        _line(" ".join(_fields(section, f"{group}."))),
    ]


def _line(text: str) -> str:
    return textwrap.fill(text, width=108, initial_indent="  ", subsequent_indent="      ")


#: Key lines that read otherwise for one command: its own comment.
COMMAND_KEY_COMMENTS: dict[str, dict[str, str]] = {
    "validate": {
        "time.mode": "predicted only: validate predicts every point (roofline is refused).",
        "time.fp32_matmul": "left out: each point's own (stated, else its file's inferred:, else ieee); "
        "ieee or tf32 reads every point so.",
    },
    "compare": {"run_id": "null: the newest traced run under output_root; else the traced run of that id."},
}


def keys_help(command: str) -> str:
    """Every key ``command`` accepts, one line each (groups: their names and fields)."""
    defaults = _defaults()
    comments = {**config_comments(), **COMMAND_KEY_COMMENTS.get(command, {})}
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


def commands() -> list[tuple[str, str, str, str]]:
    """(name, one-line summary, description, epilog) of every subcommand; the file lists and the
    modules built come from the code that writes and builds them."""
    from ditmeter.catalog import choices
    from ditmeter.models import families
    from ditmeter.reports.ingest_report import INGEST_FILES
    from ditmeter.reports.run_files import DEVICE_FILES, PROFILE_FILES, REPORT_FILES, TRACE_FILES

    tail = f"models: {', '.join(choices('model'))}\nworkloads: {', '.join(choices('workload'))}"
    folder = "<output_root>/<run_id>/static_analysis/<family>/"
    writes, device = ", ".join(REPORT_FILES), ", ".join(DEVICE_FILES)
    built = "\n".join(
        f"  {f.name}: " + ", ".join(f"{stage}: {r.source}" for stage, r in f.references().items())
        for f in families().values()
    )
    return [
        (
            "report",
            "analytic report of every stage of the video (no tracing, milliseconds)",
            f"Evaluate the analytic cost model of every selected stage and write {writes} "
            f"(and {device} with device=) under {folder}. Builds no module. Exit 0 ok, 2 bad input.",
            f"{command_help('report')}\n\n{tail}",
        ),
        (
            "trace",
            "trace each stage's real module on meta, join it with the analytic rules, and gate",
            "Build the real module of every selected stage on the meta device (no weights), capture one "
            "run of each as a torch.fx graph with per-node FLOPs from torch.utils.flop_counter, map every "
            "node to its analytic rule, and gate analytic vs measured FLOPs per module. Writes everything "
            f"`report` writes plus {', '.join(TRACE_FILES)}. Exit 0 gate passed, 1 gate failed, 2 bad input.",
            f"modules built, per family and stage:\n{built}\n\n{command_help('trace')}\n\n{tail}",
        ),
        (
            "compare",
            "re-read a traced run's tables: per-module errors, coverage, verdict",
            "Re-read modules.parquet and nodes.parquet of a traced run (the newest traced run under "
            "output_root unless run_id= is given), print the per-module error table worst first, node "
            "coverage, and the gate's verdict. Builds and writes nothing. Exit 0 pass, 1 gate failure, "
            "2 bad input.",
            command_help("compare"),
        ),
        (
            "diff",
            "two runs side by side: per video, stage, category and module, with deltas and ratios",
            "Read two run folders (RUN_A RUN_B: run ids under output_root, or paths to run folders) and "
            "set them side by side: FLOPs, bytes, predicted and measured time and memory per video, per "
            "stage, per category of the forward stage and per module, with B - A and B / A. Two "
            "workloads, devices, plans or pipelines, or a predicted run against a profiled one. Prints "
            "the tables and writes diff.parquet (every row) and diff.md under "
            "<output_root>/<run_id>/static_analysis/diff/. Gates nothing. Exit 0 ok, 2 bad input.",
            "usage: ditmeter diff RUN_A RUN_B [output_root=DIR] [run_id=NAME]\n"
            "example: ditmeter report model=wan2.1-t2v-14b workload=480p-81f device=h100-sxm run_id=a\n"
            "         ditmeter report model=wan2.1-t2v-14b workload=720p-81f device=h100-sxm run_id=b\n"
            "         ditmeter diff a b\n\n" + command_help("diff"),
        ),
        (
            "validate",
            "the tool's accuracy: public measurements of real Wan runs against their prediction",
            "Predict every public measurement of a real Wan run shipped in data/measurements/ (the "
            "Wan2.1 and Wan2.2 READMEs' efficiency tables, methods' baseline rows; each point with its "
            "source, quote and what it does not state) under its stated settings, and print predicted "
            "vs measured with the relative error, the median and max per GPU, framework and GPU count. "
            "Writes validate.parquet, validate.md and validate.png (log axes, y = x, ±10% band) under "
            "<output_root>/<run_id>/static_analysis/validate/. Gates nothing. Exit 0 ok, 2 bad input.",
            "usage: ditmeter validate [validate.data=DIR] [time.execution=eager|compiled] "
            "[time.fp32_matmul=ieee|tf32] [output_root=DIR] [run_id=NAME]\n"
            "example: ditmeter validate\n"
            "         ditmeter validate time.execution=compiled run_id=fused\n"
            "         ditmeter validate time.fp32_matmul=ieee   # every run as PyTorch's default\n"
            "         ditmeter validate time.fp32_matmul=tf32   # as if every run had TF32 matmuls (NGC)\n"
            "without time.fp32_matmul each point is read as its source states or its measurements imply "
            "(a data file's inferred:).\n\n" + command_help("validate"),
        ),
        (
            "profile",
            "measure time per module with torch.profiler (random weights) and join it with the rules",
            "Build the forward stage's real module (the DiT) with random weights on profile.device_kind "
            "with profile.num_layers blocks, profile one forward op by op with torch.profiler, map every op "
            "to its analytic module as `trace` does, and write measured time, achieved FLOP/s and bandwidth "
            "per module (and the share of the roofline prediction with device=): "
            f"{writes}, {', '.join(PROFILE_FILES)} (and {device} with device=). profile.trace=PATH "
            "re-reads an earlier profile run's trace instead of running. Exit 0 ok, 2 bad input.",
            "ingest its torch_profiler/trace.json (Python stacks and shapes recorded) at its block count; "
            "the forward it profiles is diffusers' module, so profile and ingest with pipeline=diffusers:\n"
            "  ditmeter profile model=wan2.1-t2v-1.3b workload=w001-tiny pipeline=diffusers\n"
            "  ditmeter ingest trace=RUN/static_analysis/wan2_1/torch_profiler/trace.json "
            "model=wan2.1-t2v-1.3b workload=w001-tiny pipeline=diffusers model.num_layers=2\n\n"
            f"{command_help('profile')}\n\n{tail}",
        ),
        (
            "ingest",
            "join a torch.profiler trace of your own run to the module tree, against the prediction",
            "Read a torch.profiler Chrome trace (trace=PATH, .json or .json.gz) of a real run of the "
            "official generate.py or the diffusers pipeline, recorded with with_stack=True (and "
            "record_shapes=True): ops are placed in their module calls, GPU kernels joined to the "
            "ops that launched them (External id, else correlation), module calls resolved to the "
            "real module's paths, and the ops mapped to the analytic leaves as `trace` maps them (every "
            "stage under diffusers, the DiT under the official code, whose T5, CLIP and VAE are "
            "measured whole). "
            "Measured time (GPU time on a GPU trace, else CPU) per run of each stage (per forward for "
            "the DiT), per module and category, with achieved FLOP/s against the analytic FLOPs and, "
            "with device=, predicted / measured; GPU idle time and the share of communication "
            "kernels; the forwards and steps found; the trace's FLOPs (torch's formulas on its "
            "recorded shapes) against the analytic, leaf by leaf. Writes "
            f"{writes}, {', '.join(INGEST_FILES)} (and {device} with device=) under {folder}. "
            "Exit 0 ok, 2 bad input.",
            "example: ditmeter ingest trace=run.json.gz model=wan2.1-t2v-1.3b workload=480p-81f "
            "pipeline=diffusers device=h100-sxm\n"
            "record:  with torch.profiler.profile(activities=[CPU, CUDA], with_stack=True, "
            "record_shapes=True) as prof: ...; prof.export_chrome_trace('run.json')\n"
            "workload= must be the run's (sizes, steps, guidance): the prediction is made for it.\n\n"
            f"{command_help('ingest')}\n\n{tail}",
        ),
        (
            "calibrate",
            "measure the model's own kernels on this machine and write a calibration file",
            "Time every GEMM, attention and convolution shape of the selected stages (at the workload) "
            "and the element-wise bandwidth and per-op overhead on device_kind=cpu|cuda "
            "(torch.utils.benchmark on cuda, a timed loop on cpu), fit them as fractions of the device's "
            "peaks (cuda: device=NAME's; cpu: the best rates measured) and write a YAML calibration file. "
            "calibration=PATH then makes "
            "report, trace and profile predict with it. Exit 0 ok, 2 bad input.",
            "overrides: model=NAME workload=NAME device_kind=cpu|cuda device=NAME stages=[dit]\n"
            "  calibrate.output=PATH calibrate.max_flops=2e10 calibrate.min_run_time=0.2\n"
            "example: ditmeter calibrate model=wan2.1-t2v-1.3b workload=w001-tiny stages=[dit]\n"
            "         ditmeter report model=wan2.1-t2v-1.3b workload=w001-tiny calibration=PATH\n\n"
            f"{command_help('calibrate')}\n\n{tail}",
        ),
        (
            "sweep",
            "the analytic model over a grid of models, workloads, devices and plan keys",
            "Every key given as a list is an axis (model=[a,b] device=[h100-sxm,a100-sxm-80gb] "
            "workload.num_frames=[33,49,81] attention=[fa2,fa3] time.mode=[predicted,roofline]); the grid "
            "is their product (at most 100,000 points, of them at most 5,000 distinct analyses: the axes "
            "other than device, time.* and attention each build one; and at most 5,000 with gpus > 1, "
            "each of which ranks every plan). Each point is costed analytically "
            "(no tracing) and predicted on its device: "
            "writes sweep.parquet (one row per point: the axes, FLOPs and bytes per video, peak memory per "
            "GPU and whether it fits, time per video, forward and step, per stage and the DiT's share by "
            "category) and time_vs_frames.png, time_vs_resolution.png, category_share.png under "
            "<output_root>/<run_id>/static_analysis/sweep/. Needs device=. Exit 0 ok, 2 bad input.",
            "example (quote the brackets for the shell):\n"
            "  ditmeter sweep model=wan2.1-t2v-14b workload=720p-81f 'device=[h100-sxm,a100-sxm-80gb]' "
            "'workload.num_frames=[17,33,49,65,81]'\n\n"
            f"{command_help('sweep')}\n\n{tail}",
        ),
        (
            "plan",
            "every plan that runs a video on exactly N GPUs, ranked by predicted seconds per video",
            "Enumerate parallel.ulysses × parallel.ring × parallel.cfg = gpus (one node of 8, a GB200 "
            "NVL72 rack of 72, or whole nodes over the device's network), each "
            "with parallel.dit_fsdp and parallel.t5_fsdp off and on; cost each as `report` costs it with "
            "those overrides; rank by seconds per video with the speedup and efficiency over one GPU, the "
            "communication nothing hides, the peak memory per GPU and whether it fits, videos per GPU-hour "
            "(and the cost per video with plan.price_per_gpu_hour=). Names the best plan and the best that "
            "fits, the data-parallel split with the most videos per hour, warns of plans slower than the "
            "best on half the GPUs, lists the plans the pipeline "
            "cannot run with the reason. Writes plan.parquet and plan.md under "
            "<output_root>/<run_id>/static_analysis/plan/. Needs device=. Exit 0 ok, 2 bad input.",
            "example:\n  ditmeter plan model=wan2.1-t2v-14b workload=720p-81f device=h100-sxm gpus=8\n\n"
            f"{command_help('plan')}\n\n{tail}",
        ),
        (
            "whatif",
            "the video under each speed-up method (caching, few steps, FP8, compile, CUDA graphs), on one "
            "GPU or a plan",
            "Cost the baseline and the same video under each what-if of whatif=[...] alone and all of them "
            "together, each as `report` costs it with the method's overrides (the mechanism: which forwards "
            "run the blocks, which kernels run, in which dtype): seconds per video, speed-up, where the "
            "DiT's time goes (compute-, memory-, launch-bound), peak memory and whether it fits. With "
            "parallel.* every row is one GPU of that plan (its exposed communication too). Quality is "
            "not modelled. Writes whatif.parquet, whatif.md and whatif.png under "
            "<output_root>/<run_id>/static_analysis/whatif/. Needs device=. Exit 0 ok, 2 bad input.",
            "example:\n  ditmeter whatif model=wan2.1-t2v-14b workload=720p-81f device=h100-sxm "
            "'whatif=[fp8,teacache]' methods.cache_skip=0.5\n\n"
            f"{command_help('whatif')}\n\n{tail}",
        ),
    ]
