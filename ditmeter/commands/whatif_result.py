"""What ``ditmeter whatif`` found (:mod:`ditmeter.commands.whatif`), as
:mod:`ditmeter.reports.whatif_table` formats it."""

from __future__ import annotations

import attrs
import pandas as pd

from ditmeter.config import RunConfig


@attrs.frozen
class WhatifResult:
    frame: pd.DataFrame  # the baseline, each what-if alone, all together (when more than one)
    cfg: RunConfig  # the baseline's
    names: tuple[str, ...]
    overrides: tuple[str, ...]
    #: each what-if that replaces a value the user gave the baseline (said, not refused)
    replaced: tuple[str, ...] = ()
    #: each what-if whose share or steps were rounded to whole forwards or steps, and to what
    rounded: tuple[str, ...] = ()
