"""Schedules against the tables and worked examples of spec dit.md §4.2–4.3 and tasks.md §6.2."""

from __future__ import annotations

import pytest
import torch

from acestep_core.errors import AceStepError
from acestep_core.sampling import (
    TURBO_ALLOWED_TIMESTEPS,
    TURBO_FIXED_TABLES,
    base_schedule,
    cover_noise_start,
    turbo_schedule,
)

TABLE_FLOAT32 = {
    2.0: [1, 0.933333337, 0.857142866, 0.769230783, 0.666666687, 0.545454562, 0.400000006, 0.222222224],
    3.0: [1, 0.954545438, 0.899999976, 0.833333313, 0.75, 0.642857134, 0.5, 0.300000012],
}


def starts(schedule) -> list[float]:
    return list(schedule.values[:-1])


@pytest.mark.parametrize("shift", [1.0, 2.0, 3.0])
def test_turbo_fixed_tables(shift: float) -> None:
    schedule = turbo_schedule(shift)
    assert schedule.values[-1] == 0.0 and schedule.num_steps == 8
    assert starts(schedule) == list(TURBO_FIXED_TABLES[shift])
    if shift in TABLE_FLOAT32:
        assert schedule.tensor()[:-1].tolist() == pytest.approx(TABLE_FLOAT32[shift], abs=1e-9)


def test_fixed_tables_equal_every_8_step_formula_in_float32() -> None:
    for shift in (1.0, 2.0, 3.0):
        table = torch.tensor(TURBO_FIXED_TABLES[shift], dtype=torch.float32)
        assert torch.equal(turbo_schedule(shift, infer_steps=8).tensor()[:-1], table)
        assert torch.equal(base_schedule(8, shift).tensor()[:-1], table)


def test_turbo_shift_is_rounded_for_the_fixed_table_ties_to_lower() -> None:
    assert starts(turbo_schedule(2.5)) == list(TURBO_FIXED_TABLES[2.0])
    assert starts(turbo_schedule(1.4)) == list(TURBO_FIXED_TABLES[1.0])
    assert starts(turbo_schedule(4.7)) == list(TURBO_FIXED_TABLES[3.0])


def test_turbo_infer_steps_examples() -> None:
    assert starts(turbo_schedule(3.0, infer_steps=4)) == pytest.approx([1, 0.9, 0.75, 0.5], abs=1e-15)
    assert starts(turbo_schedule(3.0, infer_steps=6)) == pytest.approx(
        [1, 0.9375, 0.8571428571428571, 0.75, 0.6, 0.375], abs=1e-15
    )
    assert starts(turbo_schedule(2.5, infer_steps=8)) == pytest.approx(
        [1, 0.945946, 0.882353, 0.806452, 0.714286, 0.6, 0.454545, 0.263158], abs=5e-7
    )


def test_turbo_infer_steps_is_capped_at_20_and_shift_not_rounded() -> None:
    assert turbo_schedule(3.0, infer_steps=50).num_steps == 20
    assert starts(turbo_schedule(1.0, infer_steps=5)) == [1.0, 0.8, 0.6, 0.4, 0.19999999999999996]


def test_turbo_custom_timesteps_are_snapped() -> None:
    documented = [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0]
    expected = [0.9545454545454546, 0.7692307692307693, 0.625, 0.5, 0.4, 0.3, 0.2222222222222222, 0.125]
    assert starts(turbo_schedule(3.0, timesteps=documented)) == expected
    assert starts(turbo_schedule(3.0, timesteps=torch.tensor(documented))) == expected
    assert set(starts(turbo_schedule(timesteps=[0.99, 0.51, 0.01]))) <= set(TURBO_ALLOWED_TIMESTEPS)


def test_turbo_custom_timesteps_edge_cases() -> None:
    # all zeros: falls through to infer_steps, then to the table
    assert starts(turbo_schedule(3.0, infer_steps=4, timesteps=[0, 0])) == starts(turbo_schedule(3.0, infer_steps=4))
    assert starts(turbo_schedule(3.0, timesteps=[0.0])) == list(TURBO_FIXED_TABLES[3.0])
    # more than 20 values: the first 20 are kept; a custom list wins over infer_steps
    assert turbo_schedule(3.0, infer_steps=4, timesteps=[1.0] * 25).num_steps == 20
    # snapping picks the nearest allowed value, whatever the order of the list
    assert starts(turbo_schedule(timesteps=[0.3875, 0.95, 0.1])) == [0.375, 0.9545454545454546, 0.125]


def test_base_float32_schedule_6_steps_shift_3() -> None:
    schedule = base_schedule(6, 3.0)
    assert schedule.family == "base" and schedule.num_steps == 6
    expected = torch.tensor([1.0, 0.93750006, 0.8571428, 0.75, 0.59999996, 0.375, 0.0], dtype=torch.float32)
    assert torch.equal(schedule.tensor(), expected)
    assert schedule.values[1] != 0.9375  # float32 arithmetic, not the python formula (trap 7)


def test_base_50_steps_is_float32_arithmetic_not_the_python_formula() -> None:
    base = base_schedule(50, 3.0).tensor()[:-1]
    python = torch.tensor([3.0 * s / (1 + 2.0 * s) for s in [1.0 - i / 50 for i in range(50)]], dtype=torch.float32)
    ulps = (base.view(torch.int32).long() - python.view(torch.int32).long()).abs()
    assert 10 < int((ulps > 0).sum()) < 50  # many values differ in the last bits (trap 7) ...
    assert int(ulps.max()) <= 2  # ... but only there


def test_base_custom_timesteps_verbatim_and_checked() -> None:
    schedule = base_schedule(timesteps=[1.0, 0.7, 0.3, 0.0])
    assert schedule.num_steps == 3
    assert schedule.values == tuple(torch.tensor([1.0, 0.7, 0.3, 0.0]).tolist())
    with pytest.raises(AceStepError, match="end with 0"):
        base_schedule(timesteps=[1.0, 0.5])
    with pytest.raises(AceStepError, match="between 0 and 1"):
        base_schedule(timesteps=[1.5, 0.5, 0.0])
    with pytest.raises(AceStepError, match="too short"):
        base_schedule(timesteps=[0.0])


def test_bf16_base_schedule_is_rounded_in_bf16() -> None:
    schedule = base_schedule(8, 3.0, dtype=torch.bfloat16)
    assert schedule.tensor().dtype == torch.bfloat16
    assert torch.equal(schedule.tensor(), torch.tensor(schedule.values, dtype=torch.bfloat16))


def test_cover_noise_start_examples() -> None:
    schedule = turbo_schedule(3.0)
    index = cover_noise_start(schedule, 0.2)  # level 0.8 → t* = 0.8333…, 5 of 8 steps remain
    assert schedule.values[index] == 0.8333333333333334
    assert schedule.starting_at(index).num_steps == 5
    assert schedule.values[cover_noise_start(schedule, 1.0)] == 0.3  # smallest non-zero start
    # ties go to the earlier (larger) t: level 0.5625 is equidistant from 0.625 and 0.5
    assert turbo_schedule(1.0).values[cover_noise_start(turbo_schedule(1.0), 0.4375)] == 0.625
