"""What ``ditmeter plan`` found (:mod:`ditmeter.commands.plan`), as :mod:`ditmeter.reports.plan_table`
formats it: the options of the command line and the ranked plans."""

from __future__ import annotations

import attrs
import pandas as pd

from ditmeter.config import RunConfig


@attrs.frozen
class PlanOptions:
    gpus: int
    memory_limit_gib: float | None = None  # the best plan whose peak per GPU is under this
    price_per_gpu_hour: float | None = None  # cost per video where given (no built-in prices)


@attrs.frozen
class PlanResult:
    frame: pd.DataFrame  # one row per plan: the runnable ones fastest first, then the refused ones
    options: PlanOptions
    cfg: RunConfig
    single_video_s: float  # the same video on one GPU
    fewer_gpus: int | None  # the GPU count the warnings compare with (N/2), None on one GPU
    fewer_best_s: float | None  # the best plan's seconds on ``fewer_gpus``
    overrides: tuple[str, ...]
    #: data parallel: per GPU count n dividing ``gpus``, gpus / n replicas of n GPUs each with the
    #: fastest plan that fits, most videos per hour first (:func:`~ditmeter.commands.plan.replicas_frame`)
    replicas: pd.DataFrame = attrs.field(factory=pd.DataFrame)

    @property
    def runnable(self) -> pd.DataFrame:
        return self.frame[self.frame["runs"]]

    def best(self, fits_only: bool = False) -> pd.Series | None:
        """The fastest plan (``fits_only``: of those that fit the device and the memory limit)."""
        rows = self.runnable
        if fits_only:
            rows = rows[rows["fits"] & rows["under_limit"]]
        return None if rows.empty else rows.iloc[0]
