"""Which timesteps a flow-matching sampler visits, and which expert of a two-expert model runs each
step (Wan2.2's A14B models: the high-noise expert while ``t >= boundary × 1000``; docs/wan22.md).

Two schedulers, as the pipelines run them:

* ``official``: the Wan repositories' ``FlowUniPCMultistepScheduler`` (not on PyPI; its
  ``set_timesteps(steps, shift=s)``): sigmas ``linspace(σ_max, σ_min, steps + 1)[:-1]`` with
  ``σ_max = 0.999`` and ``σ_min = 0`` (the 1,000 training sigmas at shift 1), shifted by
  ``s·σ / (1 + (s − 1)·σ)``, and ``t = int(σ × 1000)``;
* ``diffusers``: ``UniPCMultistepScheduler(prediction_type="flow_prediction",
  use_flow_sigmas=True, flow_shift=s)``, the library's own ``set_timesteps`` (imported when
  asked for).

NB the Hub's diffusers scheduler configs of the A14B models carry ``flow_shift=3.0`` (the
conversion script's default), not the release's 12.0 / 5.0; the split below takes the shift given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Training timesteps of Wan's flow-matching schedulers.
TRAIN_STEPS = 1000


def _shifted(sigmas: np.ndarray, shift: float) -> np.ndarray:
    out: np.ndarray = shift * sigmas / (1 + (shift - 1) * sigmas)
    return out


def official_timesteps(steps: int, shift: float) -> list[int]:
    """The timesteps of ``FlowUniPCMultistepScheduler.set_timesteps(steps, shift=shift)``."""
    sigma_max = 1 - 1 / TRAIN_STEPS  # the largest of the training sigmas at shift 1
    sigmas = _shifted(np.linspace(sigma_max, 0.0, steps + 1)[:-1], shift)
    return [int(t) for t in (sigmas * TRAIN_STEPS).astype(np.int64)]


def diffusers_timesteps(steps: int, shift: float) -> list[int]:
    """The timesteps of diffusers' flow UniPC scheduler at ``flow_shift=shift``."""
    from diffusers import UniPCMultistepScheduler

    make: Any = UniPCMultistepScheduler  # diffusers' constructors carry no annotations
    scheduler = make(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        num_train_timesteps=TRAIN_STEPS,
    )
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def expert_split(timesteps: list[int], boundary: float) -> tuple[int, int]:
    """(steps of the high-noise expert, steps of the low-noise one): high while ``t >= boundary ×
    1000``, as both pipelines switch."""
    high = sum(t >= boundary * TRAIN_STEPS for t in timesteps)
    return high, len(timesteps) - high
