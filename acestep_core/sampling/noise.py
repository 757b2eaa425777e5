"""Seeds, initial noise and retake mixing (dit.md §5, §4.11; tasks.md §8).

Every draw comes from an explicit `torch.Generator` seeded with the user's seed, in the official
layout: one generator for the whole batch when a single seed is given, one generator per item (each
drawing `[1, T, C]`) for a seed list. Seeds must already be resolved: the official "None or negative →
unseeded draw" is replaced by an error (`resolve_seeds` picks the missing ones first), so a song is
always reproducible from the seeds it records.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch

from acestep_core.errors import AceStepError

MAX_SEED = 2**32 - 1


def _parse_seed_text(text: str) -> list[int]:
    """Comma-separated seeds; empty, "-1" or unreadable parts mean "random" (-1)."""
    seeds = []
    for part in (p.strip() for p in text.split(",")):
        try:
            seeds.append(int(float(part)) if part else -1)
        except (ValueError, OverflowError):
            seeds.append(-1)
    return seeds


def resolve_seeds(batch: int, seed: int | str | Sequence[int] | None, rng: random.Random) -> list[int]:
    """Per-item seeds the way the official handler resolves them (tasks.md §8.1, dit.md §5.2).

    A single non-negative seed fixes item 0 only; the other items, and every missing or negative
    entry, get a fresh seed in [0, 2³²−1] from `rng` (an explicit generator, so the caller decides
    whether "random" is reproducible). The list returned is what the song should record.
    """
    if isinstance(seed, str):
        given = _parse_seed_text(seed)
    elif seed is None:
        given = []
    elif isinstance(seed, Sequence):
        given = [int(s) for s in seed]
    else:
        given = [int(seed)]
    single = len(given) == 1 and given[0] >= 0
    resolved = []
    for i in range(batch):
        value = given[i] if i < len(given) else -1
        keep = value >= 0 and not (single and i > 0)
        resolved.append(value if keep else rng.randint(0, MAX_SEED))
    return resolved


def _checked_seed(seed: object, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AceStepError(
            f"{what} must be a non-negative integer (got {seed!r}); pick a random seed first and pass it."
        )
    return seed


def draw_noise(
    batch: int,
    frames: int,
    channels: int,
    seed: int | Sequence[int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise `[batch, frames, channels]` exactly as the official `prepare_noise` draws it.

    `device` is the generator's device: the official CPU/golden numbers come from a CPU generator in
    float32; official CUDA runs draw from a CUDA generator in the pipeline dtype. With a seed list,
    item i uses `seed[i]` (the list length must equal `batch`).
    """
    if isinstance(seed, Sequence):
        if len(seed) != batch:
            raise AceStepError(f"Got {len(seed)} seeds for a batch of {batch}: give one seed per item.")
        parts = []
        for i, item_seed in enumerate(seed):
            generator = torch.Generator(device=device).manual_seed(_checked_seed(item_seed, f"Seed {i}"))
            parts.append(torch.randn((1, frames, channels), generator=generator, device=device, dtype=dtype))
        return torch.cat(parts, dim=0)
    generator = torch.Generator(device=device).manual_seed(_checked_seed(seed, "Seed"))
    return torch.randn((batch, frames, channels), generator=generator, device=device, dtype=dtype)


def mix_retake_noise(noise: torch.Tensor, retake_noise: torch.Tensor, variance: float) -> torch.Tensor:
    """Variance-preserving blend `cos(a)·noise + sin(a)·retake` with `a = variance·π/2` (python doubles).

    Variance 0 keeps `noise`; 1 is the same as sampling with the retake seed. The official code mixes
    only when variance > 0, and so do we.
    """
    if variance <= 0.0:
        return noise
    angle = variance * (math.pi / 2.0)
    return math.cos(angle) * noise + math.sin(angle) * retake_noise
