"""Best-of-N: rank the takes of a batch by a score and keep the best ones.

The official app shows a score per take and leaves the choice to the user; this does the choosing.
Ranking is stable (equal scores keep batch order) so the same batch and scores always give the same
pick, and a take without a usable score (None or NaN) is ranked after every scored take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from acestep_core.errors import AceStepError


@dataclass(frozen=True)
class RankedTake:
    """One take in ranking order: where it sits in the batch, its seed and its score (None: unscored)."""

    index: int
    seed: int
    score: Optional[float]


def _usable(score: Optional[float]) -> bool:
    return score is not None and not math.isnan(score)


def rank_takes(scores: Sequence[Optional[float]], seeds: Sequence[int], top_k: Optional[int] = None,
               higher_is_better: bool = True) -> list[RankedTake]:
    """Takes ordered best first, cut to `top_k` (all when None).

    `scores[i]` and `seeds[i]` belong to batch item i. Ties keep batch order; unscored takes come last.
    """
    if len(scores) != len(seeds):
        raise AceStepError(f"Best-of-N got {len(scores)} scores for {len(seeds)} takes; score every take of the batch.")
    if not scores:
        raise AceStepError("Best-of-N got an empty batch; generate at least one take.")
    if top_k is not None and top_k < 1:
        raise AceStepError(f"top_k must be at least 1, got {top_k}.")
    sign = -1.0 if higher_is_better else 1.0

    def key(index: int) -> tuple[int, float, int]:
        score = scores[index]
        return (0, sign * float(score), index) if _usable(score) else (1, 0.0, index)

    order = sorted(range(len(scores)), key=key)
    ranked = [RankedTake(i, int(seeds[i]), float(scores[i]) if _usable(scores[i]) else None) for i in order]
    return ranked if top_k is None else ranked[:top_k]


def take_rows(batch: torch.Tensor, ranked: Sequence[RankedTake]) -> torch.Tensor:
    """The rows of a batched tensor (latents `[B, …]`, audio `[B, C, N]`) in ranking order."""
    if any(take.index >= batch.shape[0] for take in ranked):
        raise AceStepError(f"The ranking refers to take {max(t.index for t in ranked) + 1} but the batch holds "
                           f"{batch.shape[0]}; rank and select from the same batch.")
    indices = torch.tensor([take.index for take in ranked], dtype=torch.long, device=batch.device)
    return batch.index_select(0, indices)
