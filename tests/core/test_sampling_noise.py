"""Noise draws and retake mixing (dit.md §5.1, §4.11)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from acestep_core.errors import AceStepError
from acestep_core.sampling import draw_noise, mix_retake_noise, resolve_seeds


@pytest.mark.parametrize(
    ("name", "seed"),
    [("tiny_2b/generate_turbo_shift3_8steps_dcw_off.safetensors", 1234),
     ("tiny_xl/generate_xl_turbo_shift3_8steps_dcw_off.safetensors", 77)],
)
def test_single_seed_draw_equals_official_noise(golden_dir: Path, name: str, seed: int) -> None:
    with safe_open(str(golden_dir / name), "pt") as f:
        expected = f.get_tensor("debug.noise")
    assert torch.equal(draw_noise(*expected.shape, seed), expected)
    assert torch.equal(draw_noise(*expected.shape, [seed]), expected)  # a one-item list draws [1, T, C] too


def test_seed_list_draws_one_generator_per_item() -> None:
    noise = draw_noise(3, 10, 4, [5, 6, 5])
    assert noise.shape == (3, 10, 4)
    for i, seed in enumerate([5, 6, 5]):
        expected = torch.randn((1, 10, 4), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(noise[i : i + 1], expected)
    whole = torch.randn((3, 10, 4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(draw_noise(3, 10, 4, 5), whole)
    assert not torch.equal(whole[1], noise[1])


def test_dtype_is_that_of_the_draw() -> None:
    assert draw_noise(1, 4, 2, 0, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("seed", [-1, None, 1.5, True, [1, -2]])
def test_unresolved_seeds_are_refused(seed: object) -> None:
    with pytest.raises(AceStepError, match="non-negative"):
        draw_noise(2 if isinstance(seed, list) else 1, 4, 2, seed)  # type: ignore[arg-type]


def test_seed_list_length_must_match_batch() -> None:
    with pytest.raises(AceStepError, match="one seed per item"):
        draw_noise(2, 4, 2, [1, 2, 3])


def test_retake_mix() -> None:
    noise, retake = draw_noise(1, 8, 2, 1), draw_noise(1, 8, 2, 2)
    assert mix_retake_noise(noise, retake, 0.0) is noise
    half = mix_retake_noise(noise, retake, 0.5)
    assert torch.allclose(half, (noise + retake) * math.sqrt(0.5), atol=1e-6)
    assert torch.allclose(mix_retake_noise(noise, retake, 1.0), retake, atol=1e-7)
    third = mix_retake_noise(noise, retake, 1 / 3)  # angle π/6
    assert torch.allclose(third, noise * math.sqrt(3) / 2 + retake / 2, atol=1e-6)


class Scripted(random.Random):
    """A stand-in rng whose "random" seeds are 1000, 1001, … so the test can see where they land."""

    def __init__(self) -> None:
        super().__init__(0)
        self.next_seed = 1000

    def randint(self, a: int, b: int) -> int:
        assert (a, b) == (0, 2**32 - 1)
        self.next_seed += 1
        return self.next_seed - 1


@pytest.mark.parametrize(
    ("seed", "batch", "expected"),
    [
        (42, 1, [42]),
        (42, 3, [42, 1000, 1001]),  # a single seed fixes item 0 only
        ("42", 2, [42, 1000]),
        ("7, 8", 2, [7, 8]),
        ("7, -1, 9.0, x, ", 5, [7, 1000, 9, 1001, 1002]),
        ("1, 2, 3", 2, [1, 2]),
        ([5, 6], 3, [5, 6, 1000]),
        (None, 2, [1000, 1001]),
        (-1, 2, [1000, 1001]),
    ],
)
def test_resolve_seeds_like_the_official_handler(seed: object, batch: int, expected: list[int]) -> None:
    assert resolve_seeds(batch, seed, Scripted()) == expected  # type: ignore[arg-type]


def test_resolved_random_seeds_come_from_the_given_rng() -> None:
    assert resolve_seeds(3, None, random.Random(1)) == resolve_seeds(3, None, random.Random(1))
    assert all(0 <= s <= 2**32 - 1 for s in resolve_seeds(4, "-1", random.Random(2)))
