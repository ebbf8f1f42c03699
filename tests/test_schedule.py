"""The expert split of Wan2.2's two-expert models from the schedulers themselves (docs/wan22.md),
against the split the Wan2.2 release documents (WAN_FACTS: T2V 26 + 14, I2V 15 + 25)."""

from __future__ import annotations

import pytest

from ditmeter.analytic.schedule import diffusers_timesteps, expert_split, official_timesteps


@pytest.mark.parametrize(
    ("shift", "boundary", "split"),
    [(12.0, 0.875, (26, 14)), (5.0, 0.900, (15, 25))],  # T2V-A14B, I2V-A14B: 40 steps
)
def test_the_release_configs_split_as_documented(
    shift: float, boundary: float, split: tuple[int, int]
) -> None:
    assert expert_split(official_timesteps(40, shift), boundary) == split
    # diffusers' own scheduler agrees when given the release's shift
    assert expert_split(diffusers_timesteps(40, shift), boundary) == split


def test_the_official_schedule_by_hand() -> None:
    """Shift 12, 40 steps: σ₀ = 0.999 → 12·0.999 / (1 + 11·0.999) = 0.99991… → t = 999; the last
    σ = 0.999/40 = 0.024975 → 0.29970 / 1.274725 = 0.23511 → t = 235; the switch falls between
    877 and 865."""
    t = official_timesteps(40, 12.0)
    assert (t[0], t[-1], len(t)) == (999, 235, 40)
    assert t[25:27] == [877, 865]


def test_the_shift_decides_the_split() -> None:
    """The Hub configs' flow_shift 3.0 would give a different split (the reason the shift is an input)."""
    assert expert_split(diffusers_timesteps(40, 3.0), 0.875) == (13, 27)
    assert expert_split(diffusers_timesteps(40, 3.0), 0.900) == (11, 29)
