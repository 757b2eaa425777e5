"""Timestep schedules of the ACE-Step 1.5 samplers (spec dit.md §4.2, §4.3, §4.10).

A schedule is a plain list of t values from 1 (noise) toward 0 (data), kept apart from the step code
(k-diffusion style). The two model families build theirs in different precisions and the official
numbers depend on it (trap 7): turbo computes python doubles, base/sft computes in the pipeline dtype.
`Schedule.values` stores exactly the python floats the official code holds, so the loop can reproduce
both, and the loop alone turns them into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from acestep_core.errors import AceStepError

Family = Literal["turbo", "base"]

TURBO_MAX_STEPS = 20

# The only t values a turbo model accepts in a custom list: every value of the three 8-step tables.
TURBO_ALLOWED_TIMESTEPS: tuple[float, ...] = (
    1.0, 0.9545454545454546, 0.9333333333333333, 0.9, 0.875,
    0.8571428571428571, 0.8333333333333334, 0.7692307692307693, 0.75,
    0.6666666666666666, 0.6428571428571429, 0.625, 0.5454545454545454,
    0.5, 0.4, 0.375, 0.3, 0.25, 0.2222222222222222, 0.125,
)

# Fixed 8-step turbo tables (step start times, no final 0), keyed by the rounded shift.
TURBO_FIXED_TABLES: dict[float, tuple[float, ...]] = {
    1.0: (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125),
    2.0: (1.0, 0.9333333333333333, 0.8571428571428571, 0.7692307692307693,
          0.6666666666666666, 0.5454545454545454, 0.4, 0.2222222222222222),
    3.0: (1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3),
}


@dataclass(frozen=True)
class Schedule:
    """t values of one sampling run, including the end point.

    `values[i]` is where step i starts and `values[i + 1]` where it ends, so a run has
    `len(values) - 1` steps. Turbo schedules end in an implicit 0.0 that the turbo loop reaches with a
    direct `x - v·t` jump; base schedules end wherever their list ends (0 for every valid schedule).
    `dtype` is the pipeline dtype the values were rounded to (base) or will be rounded to (turbo).
    """

    values: tuple[float, ...]
    family: Family
    dtype: torch.dtype = torch.float32

    @property
    def num_steps(self) -> int:
        return len(self.values) - 1

    def tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The values as the official code holds them during the loop: a tensor in the pipeline dtype."""
        return torch.tensor(self.values, dtype=self.dtype, device=device)

    def starting_at(self, index: int) -> "Schedule":
        """The same schedule with its first `index` steps dropped (cover-noise start, §4.10)."""
        return Schedule(self.values[index:], self.family, self.dtype)


def shift_timestep(t: float, shift: float) -> float:
    """The flow-matching time shift `shift·t / (1 + (shift − 1)·t)` in python doubles."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def snap_to_turbo_timestep(t: float) -> float:
    """Nearest allowed turbo value; on a tie the one listed first in `TURBO_ALLOWED_TIMESTEPS` wins."""
    return min(TURBO_ALLOWED_TIMESTEPS, key=lambda allowed: abs(allowed - t))


def _as_float_list(timesteps: Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(timesteps, torch.Tensor):
        return [float(v) for v in timesteps.detach().cpu().reshape(-1).tolist()]
    return [float(v) for v in timesteps]


def _turbo_custom(timesteps: Sequence[float] | torch.Tensor) -> list[float] | None:
    """Rule 1 of §4.2: strip trailing zeros, keep at most 20, snap each value.

    The official handler hands custom lists over as a float32 tensor, so values are rounded to float32
    before snapping (it can decide a near-tie). Returns None when nothing but zeros was given.
    """
    values = torch.tensor(_as_float_list(timesteps), dtype=torch.float32).tolist()
    while values and values[-1] == 0:
        values.pop()
    if not values:
        return None
    return [snap_to_turbo_timestep(t) for t in values[:TURBO_MAX_STEPS]]


def turbo_schedule(
    shift: float = 3.0,
    infer_steps: int | None = None,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Schedule:
    """Schedule of the turbo and xl_turbo samplers (§4.2), precedence custom list → steps → fixed table.

    `infer_steps` is capped at 20 as the turbo class does; the official pipeline additionally clamps it
    to 8 before calling, which is the caller's choice to copy or not (trap 6).
    """
    starts = _turbo_custom(timesteps) if timesteps is not None else None
    if starts is None and infer_steps is not None and infer_steps > 0:
        n = min(int(infer_steps), TURBO_MAX_STEPS)
        starts = [1.0 - i / n for i in range(n)]
        if shift != 1.0:
            starts = [shift_timestep(s, shift) for s in starts]
    if starts is None:
        rounded = min(TURBO_FIXED_TABLES, key=lambda allowed: abs(allowed - shift))
        starts = list(TURBO_FIXED_TABLES[rounded])
    return Schedule(tuple(starts) + (0.0,), "turbo", dtype)


def base_schedule(
    infer_steps: int = 30,
    shift: float = 1.0,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Schedule:
    """Schedule of the base/sft/xl_base/xl_sft samplers (§4.3), computed in the pipeline dtype.

    Without a custom list: `linspace(1, 0, steps + 1)` then the shift transform, both in `dtype`
    (float32 gives 0.93750006 for 15/16 at shift 3, as the official code does). A custom list is used
    verbatim; unlike the official code we refuse one that does not end in 0, since it would leave
    noise in the song.
    """
    if timesteps is not None:
        values = _as_float_list(timesteps)
        if len(values) < 2:
            raise AceStepError(
                f"Custom timesteps {values} are too short: give at least two values, e.g. '1.0, 0.5, 0'."
            )
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise AceStepError(f"Custom timesteps {values} must all lie between 0 and 1.")
        if values[-1] != 0.0:
            raise AceStepError(
                f"Custom timesteps {values} must end with 0 on base/sft models, "
                "otherwise the result keeps noise: append ', 0'."
            )
        return Schedule(tuple(torch.tensor(values, dtype=dtype).tolist()), "base", dtype)
    if infer_steps < 1:
        raise AceStepError(f"Steps must be at least 1 (got {infer_steps}).")
    t = torch.linspace(1.0, 0.0, infer_steps + 1, dtype=dtype)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return Schedule(tuple(t.tolist()), "base", dtype)


def cover_noise_start(schedule: Schedule, cover_noise_strength: float) -> int:
    """Index of the step start time nearest to `1 − strength` (first one on ties), §4.10.

    The search runs over the python values the official family searches: turbo's doubles, base's
    pipeline-dtype values, all but the end point.
    """
    level = 1.0 - cover_noise_strength
    starts = schedule.values[:-1]
    return min(range(len(starts)), key=lambda i: abs(starts[i] - level))
