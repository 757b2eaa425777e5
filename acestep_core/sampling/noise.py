"""Initial noise and retake mixing (dit.md §5.1, §4.11; tasks.md §8.2–8.3).

Every draw comes from an explicit `torch.Generator` seeded with the user's seed, in the official
layout: one generator for the whole batch when a single seed is given, one generator per item (each
drawing `[1, T, C]`) for a seed list. Seeds must already be resolved: the official "None or negative →
unseeded draw" is replaced by an error, so a song is always reproducible from the seeds it records.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from acestep_core.errors import AceStepError


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
