"""Time and memory on a device: the ``device``/``time``/``memory`` sections of report.json and summary.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pandas as pd

from ditmeter.analytic.analysis import Analysis
from ditmeter.analytic.device import DeviceSpec
from ditmeter.analytic.parallel import ParallelEstimate
from ditmeter.analytic.timing import (
    LIMITS,
    OFFLOAD_PHASE,
    KindOfForward,
    Prediction,
    TimePlan,
    dominant_limit,
    kinds_video_s,
)
from ditmeter.analytic.tree import layer_pattern
from ditmeter.reports.format import percent, seconds
from ditmeter.reports.parallel_report import PlanView
from ditmeter.reports.table_model import Column, Table, table, to_markdown


@attrs.frozen
class DeviceView:
    """Everything a report says about time and memory (prediction None without a device)."""

    analysis: Analysis  # under a plan: its memory and footprint are one GPU's of the plan
    prediction: Prediction | None
    measured_video_s: float | None
    plan: PlanView | None = None  # parallel.* beyond one GPU
    #: what a method's share or steps were rounded to (``with_methods``): said with the warnings
    rounded: tuple[str, ...] = ()

    def _timed(
        self, plan: Callable[[ParallelEstimate], float], one: Callable[[Prediction], float]
    ) -> float | None:
        """A time on one GPU of the plan (``plan``), else of the one-GPU prediction (``one``)."""
        if self.plan is not None:
            return plan(self.plan.estimate)
        return one(self.prediction) if self.prediction is not None else None

    @property
    def per_video_s(self) -> float | None:
        """Seconds per video (every selected stage)."""
        return self._timed(lambda e: e.per_video_s, lambda p: p.per_video_s)

    @property
    def forward_kinds(self) -> tuple[KindOfForward, ...]:
        """The denoiser's forwards by kind where a method runs them differently (a step cache's
        computed and cached ones, sparse attention's dense warm-up): one GPU's under a plan; empty
        when every forward runs alike."""
        if self.plan is not None:
            return self.plan.estimate.forward_runs
        return self.prediction.forward_runs if self.prediction is not None else ()

    @property
    def roofline_video_s(self) -> float | None:
        """The roofline per video (one GPU's share under a plan), the denoiser's forwards by kind
        where a method runs them differently (a plan's cached forwards skip their blocks)."""
        p = self.prediction
        if p is None:
            return None
        forwards = dict(p.stage_runs).get(p.forward_id)
        if self.plan is None or not self.forward_kinds or forwards is None:
            return p.roofline_video_s  # one GPU's prediction counts its own kinds
        kinds = self.roofline_denoise_s
        assert kinds is not None  # a prediction that runs the denoiser
        return p.roofline_video_s - p.stage_roofline_s(p.forward_id, forwards) + kinds

    @property
    def roofline_denoise_s(self) -> float | None:
        """The denoiser's roofline per video (every forward of every step; one GPU's share under a
        plan, by kind where a method runs its forwards differently); None without a device or when
        the denoiser is not costed."""
        p = self.prediction
        forwards = None if p is None else dict(p.stage_runs).get(p.forward_id)
        if p is None or forwards is None:
            return None
        if self.plan is not None and self.forward_kinds:
            return sum(r.count * r.compute.roofline_s for r in self.plan.estimate.forward_runs)
        return p.stage_roofline_s(p.forward_id, forwards)

    @property
    def roofline_step_s(self) -> float | None:
        """The roofline of the span :attr:`per_step_s` times: one step of plain forwards (one GPU's
        under a plan, its CFG share), without communication."""
        p = self.prediction
        if p is None:
            return None
        if self.plan is not None:
            return self.plan.estimate.compute.roofline_s * self.plan.estimate.forwards_per_gpu_step
        return p.per_forward.roofline_s * p.forwards_per_step

    @property
    def per_forward_s(self) -> float | None:
        """Seconds per denoiser forward (under a plan with the communication it waits for)."""
        return self._timed(lambda e: e.forward_s, lambda p: p.per_forward.predicted_s)

    @property
    def per_step_s(self) -> float | None:
        return self._timed(lambda e: e.step_s, lambda p: p.per_step_s)

    @property
    def forward_video_s(self) -> float | None:
        """The denoiser's seconds per video."""
        forward = self.analysis.forward.name
        return self._timed(lambda e: e.stage_video_s.get(forward, 0.0), lambda p: p.forward_video_s)

    @property
    def device(self) -> DeviceSpec | None:
        return self.prediction.device if self.prediction is not None else None

    @property
    def warnings(self) -> list[str]:
        """What a reader must not miss about the time figures (said on the terminal, in summary.md
        and in report.json ``time.warnings``)."""
        out = list(self.rounded)
        if self.mfu is not None and self.mfu > 1:
            out.append(
                f"MFU {100 * self.mfu:.0f}% is above 100%: {self.measured_video_s:g} s per video is faster "
                "than the device's dense peak allows; check measured_video_s, the device and the workload"
            )
        return out

    @property
    def mfu_basis(self) -> str:
        """What the MFU's FLOPs are where a method computes fewer than the model's (a step cache's
        reused forwards, sparse attention's skipped blocks); empty otherwise."""
        p = self.prediction
        if p is None or not (p.forward_runs or p.plan.sparse is not None):
            return ""
        return (
            " (of the model's FLOPs for the whole dense, uncached video, as MFU counts them: "
            "the step cache or sparse attention ran fewer)"
        )

    @property
    def mfu(self) -> float | None:
        if self.prediction is None or self.measured_video_s is None:
            return None
        a = self.analysis
        # under a plan both the FLOPs and the time are one GPU's
        return self.prediction.mfu(a.per_video.tensor_flops, a.workload.dtype, self.measured_video_s)


def device_view(
    analysis: Analysis,
    device: DeviceSpec | None = None,
    measured_video_s: float | None = None,
    plan: TimePlan | None = None,
) -> DeviceView:
    """Time of ``analysis`` on ``device`` under ``plan`` (the roofline when None; its memory is
    ``analysis.memory``)."""
    prediction = analysis.prediction(device, plan) if device is not None else None
    return DeviceView(analysis, prediction, measured_video_s)


def time_by_category(modules: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Predicted seconds per run of ``stage`` by category (leaves), with the roofline, the rate the
    prediction implies, the share of the peaks it reaches and the limit most of its time is under;
    largest first."""
    leaves = modules[
        (modules["kind"] == "leaf") & modules["predicted_s"].notna() & (modules["stage"] == stage)
    ].copy()
    for limit in LIMITS:
        leaves[f"{limit}_bound_s"] = leaves["predicted_s"].where(leaves["bound"] == limit, 0.0)
    out = leaves.groupby("category").agg(
        predicted_s=("predicted_s", "sum"),
        roofline_s=("roofline_s", "sum"),
        compute_s=("compute_s", "sum"),
        memory_s=("memory_s", "sum"),
        overhead_s=("overhead_s", "sum"),
        tensor_flops=("tensor_flops", "sum"),
        cuda_flops=("cuda_flops", "sum"),
        **{f"{limit}_bound_s": (f"{limit}_bound_s", "sum") for limit in LIMITS},
    )
    out["predicted_flop_per_s"] = (out["tensor_flops"] + out["cuda_flops"]) / out["predicted_s"]
    out["peak_fraction"] = out["roofline_s"] / out["predicted_s"]
    bound_cols = [f"{limit}_bound_s" for limit in LIMITS]
    out["bound"] = [dominant_limit(row) for row in out[bound_cols].to_numpy()]
    out = out.drop(columns=bound_cols)
    return out.sort_values("predicted_s", ascending=False, kind="stable").reset_index()


def stage_times(view: DeviceView) -> list[dict[str, Any]]:
    """Predicted seconds per run and per video of every selected stage (each at its own dtype's
    peaks and kernels), with the roofline and the attention kernel it runs."""
    p = view.prediction
    if p is None:
        return []
    out = []
    under = view.plan.estimate.stage_video_s if view.plan is not None else {}
    for stage in view.analysis.stages:
        t = p.modules[stage.name]
        out.append(
            {
                "stage": stage.name,
                "per_run_s": t.predicted_s,
                "runs_per_video": stage.runs_per_video,
                "per_video_s": under.get(stage.name, p.stage_video_s(stage.name, stage.runs_per_video)),
                "roofline_per_video_s": p.stage_roofline_s(stage.name, stage.runs_per_video),
                "bound": t.bound,
                "attention": p.backends.get(stage.name),
            }
        )
    moved = under.get(OFFLOAD_PHASE, 0.0) if view.plan is not None else p.transfer_s  # the plan's own moves
    if moved:  # the weights the video moves between host and GPU (offload.model)
        out.append(
            {
                "stage": OFFLOAD_PHASE,
                "per_run_s": moved,
                "runs_per_video": 1,
                "per_video_s": moved,
                "roofline_per_video_s": moved,
                "bound": "transfer",
                "attention": None,
            }
        )
    return out


def stage_categories(view: DeviceView, modules: pd.DataFrame) -> list[dict[str, Any]]:
    """Predicted seconds per video by stage and category (leaves)."""
    runs = {s.name: s.runs_per_video for s in view.analysis.stages}
    leaves = modules[(modules["kind"] == "leaf") & modules["predicted_s"].notna()]
    leaves = leaves[leaves["stage"].isin(list(runs))]
    out = leaves.groupby(["stage", "category"], sort=False)["predicted_s"].sum().reset_index()
    out["per_video_s"] = out["predicted_s"] * out["stage"].map(runs)
    return out.drop(columns=["predicted_s"]).to_dict(orient="records")  # type: ignore[no-any-return]


#: How report.json says the time was predicted, by ``time.mode``.
TIME_MODELS = {
    "predicted": (
        "per kernel: max(compute at the fraction of the peak its kernel class reaches at its shape, bytes at "
        "the element-wise share of the bandwidth, its launch), never below the roofline; kernels summed"
    ),
    "roofline": "roofline per kernel, kernels summed: max(tensor/peak + cuda/fp32 peak, bytes/bandwidth)",
}
#: What a kernel is, by ``time.execution``.
EXECUTION_MODELS = {
    "eager": (
        "eager: every kernel the pipeline's code launches (each aten op that moves data, in its own dtype "
        "at its own bytes: casts, fp32 norms and modulation, the official float64 RoPE); stages whose module "
        "is called several times per run (the VAE) and leaves without a recipe stay one fused kernel"
    ),
    "compiled": "compiled: one fused kernel per leaf at its fused-ideal bytes (torch.compile's aim)",
}


def time_json(view: DeviceView, modules: pd.DataFrame) -> dict[str, Any] | None:
    p = view.prediction
    if p is None:
        return None
    f, plan = p.per_forward, p.plan
    est = view.plan.estimate if view.plan is not None else None
    return {
        "device": p.device.name,
        "mode": plan.mode if plan.predicted else "roofline",
        "execution": plan.execution,
        "execution_model": EXECUTION_MODELS[plan.execution],
        "fp32_matmul": plan.fp32_matmul,
        "host": plan.host.device.name if plan.host is not None and view.analysis.memory.t5_cpu else None,
        "transfers": [
            {
                "component": t.component,
                "direction": t.direction,
                "bytes": t.bytes,
                "before": t.before,
                "seconds": s,
            }
            for t, s in p.transfers
        ],
        "kernels": plan.kernels.name if plan.kernels is not None and plan.predicted else None,
        "fabric": (
            {"name": plan.fabric.name, "origin": plan.fabric.origin} if plan.fabric is not None else None
        ),
        "attention": p.backends,
        "gemm_dtype": plan.gemm_dtype,
        "efficiency": p.device.efficiency,
        "per_video_s": view.per_video_s,
        "per_forward_s": view.per_forward_s,
        "per_step_s": view.per_step_s,
        "per_gpu_of": est.plan.name if est else "1 GPU",
        "single_gpu_per_video_s": est.single_video_s if est else p.per_video_s,
        "roofline_per_video_s": view.roofline_video_s,
        "forward_per_video_s": view.forward_video_s,
        "forward_roofline_s": f.roofline_s,
        "forward_compute_s": f.compute_s,
        "forward_memory_s": f.memory_s,
        "forward_overhead_s": f.overhead_s,
        "compute_bound_share": f.compute_bound_s / f.predicted_s if f.predicted_s else None,
        "bound": f.bound,
        "by_category": time_by_category(modules, view.analysis.forward.name).to_dict(orient="records"),
        "stages": stage_times(view),
        "by_stage_category": stage_categories(view, modules),
        "measured_video_s": view.measured_video_s,
        "mfu": view.mfu,
        "warnings": view.warnings,
        "model": TIME_MODELS[plan.mode if plan.predicted else "roofline"],
    }


def device_json(view: DeviceView) -> dict[str, Any] | None:
    if view.prediction is None:
        return None
    return attrs.asdict(view.prediction.device)


def plan_line(p: Prediction) -> str:
    """How the times were predicted, in one line (terminal and summary.md)."""
    d, plan = p.device, p.plan
    if not plan.predicted:
        how = "roofline: every peak reached, the lower bound"
    else:
        assert plan.kernels is not None
        how = f"kernel efficiency from `{plan.kernels.name}`"
        if plan.gemm_dtype:
            how += f", DiT matmuls in {plan.gemm_dtype}"
        how += "".join(f" ({note})" for note in plan.kernels.notes)
    how = f"{plan.execution} execution, {how}"
    if plan.fp32_matmul == "tf32":
        how += ", fp32 matmuls on TF32 (time.fp32_matmul=tf32)"
    attention = ", ".join(f"{stage} {b}" for stage, b in p.backends.items())
    eff = f", efficiency {d.efficiency:g}" if d.efficiency != 1 else ""
    return f"{d.display_name}: {how}{eff}; attention: {attention}"


def prediction_table(view: DeviceView) -> Table:
    """Predicted time per forward, step and video (every stage; under a plan one GPU's, with the
    communication nothing hides), the roofline, and the bound."""
    p = view.prediction
    assert p is not None
    t = p.per_forward
    columns = (
        Column("per DiT forward"),
        Column("per step"),
        Column("per video (every stage)"),
        Column("roofline per video"),
        Column("DiT bound", "left"),
    )
    bound = f"{t.bound} ({percent(t.compute_bound_s, t.predicted_s)} of the time compute-bound)"
    row = (
        seconds(view.per_forward_s or 0.0),
        seconds(view.per_step_s or 0.0),
        seconds(view.per_video_s or 0.0),
        seconds(view.roofline_video_s or 0.0),
        bound,
    )
    return table("predicted time", columns, [row])


#: Rows of the top-layers-by-time table (terminal and summary.md).
TOP_TIME_LAYERS = 10


def top_layers_by_time(view: DeviceView, modules: pd.DataFrame, n: int = TOP_TIME_LAYERS) -> Table:
    """The leaf layers of every stage, grouped across blocks, by predicted seconds per video
    (a run's seconds × the stage's runs per video; in the denoiser under a step cache or sparse
    attention's dense warm-up, each forward kind's own: :func:`~ditmeter.analytic.timing.kinds_video_s`),
    with their share of the whole video."""
    runs = {s.name: s.runs_per_video for s in view.analysis.stages}
    leaves = modules[(modules["kind"] == "leaf") & modules["predicted_s"].notna()].copy()
    leaves = leaves[leaves["stage"].isin(list(runs))]
    repeated = list(modules.loc[modules["kind"] == "repeated", "module_id"])
    leaves["layer"] = [layer_pattern(m, repeated) for m in leaves["module_id"]]
    leaves["video_s"] = leaves["predicted_s"] * leaves["stage"].map(runs)
    leaves["roofline_video_s"] = leaves["roofline_s"] * leaves["stage"].map(runs)
    p, kinds = view.prediction, view.forward_kinds
    if p is not None and kinds:  # the denoiser's layers: only the forwards that run each
        forward = leaves["stage"] == p.forward_id
        video = [kinds_video_s(kinds, p.modules, m) for m in leaves.loc[forward, "module_id"]]
        leaves.loc[forward, "video_s"] = [v for v, _ in video]
        leaves.loc[forward, "roofline_video_s"] = [r for _, r in video]
    for limit in LIMITS:
        leaves[limit] = leaves["video_s"].where(leaves["bound"] == limit, 0.0)
    grouped_ = leaves.groupby("layer", sort=False).agg(
        count=("module_id", "size"),
        category=("category", "first"),
        kernel=("kernel", "first"),
        video_s=("video_s", "sum"),
        roofline_video_s=("roofline_video_s", "sum"),
        **{limit: (limit, "sum") for limit in LIMITS},
    )
    whole = float(leaves["video_s"].sum())
    top = grouped_.sort_values("video_s", ascending=False, kind="stable").head(n).reset_index()
    columns = (
        Column("layer", "left", code=True),
        Column("×"),
        Column("kernel", "left"),
        Column("bound", "left"),
        Column("per video"),
        Column("of roofline"),
        Column("of the video"),
    )
    rows = [
        (
            r.layer,
            str(r.count),
            str(r.kernel),
            dominant_limit([getattr(r, limit) for limit in LIMITS]),
            seconds(r.video_s),
            percent(r.roofline_video_s, r.video_s),
            percent(r.video_s, whole),
        )
        for r in top.itertuples()
    ]
    return table(f"top {len(rows)} layers by predicted time (every stage)", columns, rows)


def time_table(modules: pd.DataFrame, stage: str, per_forward_s: float) -> Table:
    """Predicted time per forward by category: the rate it implies, the share of the peaks, the limit."""
    columns = (
        Column("category", "left"),
        Column("predicted / forward"),
        Column("share"),
        Column("roofline"),
        Column("TFLOP/s"),
        Column("of roofline"),
        Column("bound", "left"),
    )
    rows = [
        (
            r.category,
            seconds(r.predicted_s),
            percent(r.predicted_s, per_forward_s),
            seconds(r.roofline_s),
            f"{r.predicted_flop_per_s / 1e12:.3g}",
            percent(r.peak_fraction, 1),
            r.bound,
        )
        for r in time_by_category(modules, stage).itertuples()
    ]
    return table("predicted time by category", columns, rows)


def summary_lines(view: DeviceView, modules: pd.DataFrame) -> list[str]:
    """The "Time" section of summary.md."""
    p = view.prediction
    if p is None:
        return ["Give `device=NAME` for predicted time, the roofline and the memory fit."]
    lines = [
        f"Predicted on {plan_line(p)}.",
        "",
        *to_markdown(prediction_table(view)),
        "",
        *to_markdown(time_table(modules, view.analysis.forward.name, p.per_forward.predicted_s)),
        "",
        f"Top {TOP_TIME_LAYERS} layers by predicted time per video, every stage (× = copies across blocks; "
        "of roofline = roofline time / predicted time, every term of the roofline counted: an attention "
        "layer's includes its softmax on the CUDA cores, so it is not the attention kernel's own fraction "
        "of the tensor peak):",
        "",
        *to_markdown(top_layers_by_time(view, modules)),
    ]
    times = stage_times(view)
    if len(times) > 1:
        whole = view.per_video_s or 0.0  # under a plan with the once-a-video communication
        parts = ", ".join(f"{t['stage']} {seconds(t['per_video_s'])}" for t in times)
        lines += ["", f"Whole video, every stage: **{seconds(whole)}** ({parts})."]
    if view.mfu is not None and view.measured_video_s is not None:
        lines += [
            "",
            f"Measured {seconds(view.measured_video_s)} per video → **MFU {100 * view.mfu:.1f}%**"
            f"{view.mfu_basis}.",
        ]
        lines += [f"**Warning:** {w}" for w in view.warnings]
    lines += ["", "![roofline](roofline.png) ![time by category](time_breakdown.png)"]
    return lines


def measured_by_category(modules: pd.DataFrame) -> pd.DataFrame:
    """Measured seconds per forward by category (leaves), with what they achieved; largest first."""
    leaves = modules[(modules["kind"] == "leaf") & (modules["measured_time_s"] > 0)]
    out = leaves.groupby("category").agg(
        measured_time_s=("measured_time_s", "sum"),
        tensor_flops=("tensor_flops", "sum"),
        cuda_flops=("cuda_flops", "sum"),
        bytes_read=("bytes_read", "sum"),
        bytes_written=("bytes_written", "sum"),
        predicted_s=("predicted_s", lambda s: s.sum(min_count=1)),  # null without a device, never 0
        roofline_s=("roofline_s", lambda s: s.sum(min_count=1)),
    )
    out["achieved_flop_per_s"] = (out["tensor_flops"] + out["cuda_flops"]) / out["measured_time_s"]
    out["achieved_bytes_per_s"] = (out["bytes_read"] + out["bytes_written"]) / out["measured_time_s"]
    out["roofline_fraction"] = out["roofline_s"] / out["measured_time_s"]
    out["predicted_ratio"] = out["predicted_s"] / out["measured_time_s"]
    out = out.drop(columns=["bytes_read", "bytes_written"])
    return out.sort_values("measured_time_s", ascending=False, kind="stable").reset_index()


def measured_table(modules: pd.DataFrame, in_nodes_s: float) -> Table:
    """Measured time per forward by category, what it achieved, and its share of the roofline."""
    columns = (
        Column("category", "left"),
        Column("measured / forward"),
        Column("share"),
        Column("achieved TFLOP/s"),
        Column("achieved GB/s"),
        Column("roofline fraction"),
        Column("predicted / measured"),
    )
    rows = [
        (
            r.category,
            seconds(r.measured_time_s),
            percent(r.measured_time_s, in_nodes_s),
            f"{r.achieved_flop_per_s / 1e12:.3g}",
            f"{r.achieved_bytes_per_s / 1e9:.3g}",
            "-" if pd.isna(r.roofline_fraction) else percent(r.roofline_fraction, 1),
            "-" if pd.isna(r.predicted_ratio) else f"{r.predicted_ratio:.3g}",
        )
        for r in measured_by_category(modules).itertuples()
    ]
    return table("measured time by category", columns, rows)


def profile_lines(modules: pd.DataFrame, profile: dict[str, Any]) -> list[str]:
    """The "Measured time" section of summary.md."""
    fwd, inside = profile["forward_s"], profile["in_nodes_s"]
    return [
        f"One forward with random weights on **{profile['device_kind']}**, "
        f"{profile['num_layers']} of {profile['model_layers']} blocks (the analytic columns are for the same "
        f"{profile['num_layers']} blocks): **{seconds(fwd)}** measured, {percent(inside, fwd)} of it inside "
        "the ops (the rest is Python and dispatch between them).",
        f"Scaled to all {profile['model_layers']} blocks: about **{seconds(profile['full_forward_s'])}** "
        f"per forward (non-block time + block time × {profile['model_layers'] / profile['num_layers']:g}).",
        f"Chrome trace: `{profile['trace']}` (open in chrome://tracing or Perfetto).",
        "",
        *to_markdown(measured_table(modules, inside)),
    ]
