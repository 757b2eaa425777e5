"""Best-of-N ranking: best first, stable ties, unscored takes last, rows picked in ranking order."""

from __future__ import annotations

import math

import pytest
import torch

from acestep_core.best_of import RankedTake, rank_takes, take_rows
from acestep_core.errors import AceStepError


def test_best_first_with_ties_in_batch_order_and_unscored_last() -> None:
    scores = [0.5, 0.9, 0.5, None, math.nan, 0.9, 0.1]
    seeds = [10, 11, 12, 13, 14, 15, 16]
    ranked = rank_takes(scores, seeds)
    assert [t.index for t in ranked] == [1, 5, 0, 2, 6, 3, 4]
    assert [t.seed for t in ranked] == [11, 15, 10, 12, 16, 13, 14]
    assert [t.score for t in ranked] == [0.9, 0.9, 0.5, 0.5, 0.1, None, None]
    assert rank_takes(scores, seeds, top_k=2) == [RankedTake(1, 11, 0.9), RankedTake(5, 15, 0.9)]
    assert rank_takes(scores, seeds, top_k=50) == ranked


def test_lower_is_better_scores() -> None:
    ranked = rank_takes([3.0, 1.0, 2.0, 1.0], [1, 2, 3, 4], higher_is_better=False)
    assert [t.index for t in ranked] == [1, 3, 2, 0]


def test_ranking_is_stable_under_repeats() -> None:
    scores = [0.25, 0.75, 0.25, 0.75]
    assert rank_takes(scores, [7, 8, 9, 10]) == rank_takes(list(scores), (7, 8, 9, 10))
    assert [t.index for t in rank_takes(scores, [7, 8, 9, 10])] == [1, 3, 0, 2]


def test_take_rows_in_ranking_order() -> None:
    batch = torch.arange(4.0)[:, None, None].expand(4, 2, 3)
    ranked = rank_takes([0.1, 0.4, 0.3, 0.2], [0, 1, 2, 3], top_k=2)
    picked = take_rows(batch, ranked)
    assert picked.shape == (2, 2, 3) and picked[:, 0, 0].tolist() == [1.0, 2.0]
    with pytest.raises(AceStepError, match="same batch"):
        take_rows(batch[:1], ranked)


@pytest.mark.parametrize("scores, seeds, top_k, message", [
    ([0.1, 0.2], [1], None, "2 scores for 1 takes"),
    ([], [], None, "empty batch"),
    ([0.1], [1], 0, "top_k must be at least 1"),
])
def test_bad_inputs(scores, seeds, top_k, message) -> None:
    with pytest.raises(AceStepError, match=message):
        rank_takes(scores, seeds, top_k)
