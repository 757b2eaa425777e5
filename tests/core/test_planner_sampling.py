"""The planner's sampler against independent references: its filters (repetition penalty, top-k, top-p, min-p)
against transformers' logits processors applied to the whole masked row, the guidance formula, the draw's
distribution, and the engine feeding guided tokens to both rows of each item."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper,
)

from acestep_core.planner.constraint import ConstraintSpec
from acestep_core.planner.engine import Job, generate
from acestep_core.planner.sampling import Sampling, candidates, choose, draw, guide
from tests.core.tiny_lm import shared_tables, single_thread  # noqa: F401 (fixture)

VOCAB = 400
SETTINGS = [
    Sampling(top_k=40), Sampling(top_p=0.7), Sampling(min_p=0.05), Sampling(repetition_penalty=1.3),
    Sampling(top_k=120, top_p=0.9, min_p=0.01, repetition_penalty=1.15),
    Sampling(top_k=5000, top_p=0.95),  # top-k wider than the candidates: off
]


def reference(row: torch.Tensor, allowed: torch.Tensor, seen: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """The whole row masked to the allowed ids, then transformers' processors in the planner's order."""
    scores = torch.full_like(row, float("-inf"))
    scores[allowed] = row[allowed]
    scores = scores[None]
    if sampling.repetition_penalty != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty)(seen[None], scores)
    if sampling.top_k:
        scores = TopKLogitsWarper(sampling.top_k)(seen[None], scores)
    if sampling.top_p < 1.0:
        scores = TopPLogitsWarper(sampling.top_p)(seen[None], scores)
    if sampling.min_p:
        scores = MinPLogitsWarper(sampling.min_p)(seen[None], scores)
    return scores[0]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sampling", SETTINGS, ids=repr)
def test_filters_match_transformers_on_the_masked_row(seed: int, sampling: Sampling) -> None:
    generator = torch.Generator().manual_seed(seed)
    row = torch.randn(VOCAB, generator=generator) * 3
    allowed = torch.randperm(VOCAB, generator=generator)[:300]
    seen = torch.randint(0, VOCAB, (60,), generator=generator)
    ids, logits = candidates(allowed, row[allowed], sampling, seen)
    expected = reference(row, allowed, seen, sampling)
    kept = torch.isfinite(expected).nonzero().squeeze(1)
    assert sorted(ids.tolist()) == kept.tolist()
    order = torch.argsort(ids)
    torch.testing.assert_close(logits[order], expected[kept])
    assert ids.numel() < allowed.numel() or not torch.equal(logits, row[ids]), "the settings changed nothing"


def test_guidance_formula_and_banned_tokens() -> None:
    cond, uncond = torch.tensor([[1.0, 3.0, float("-inf")]]), torch.tensor([[2.0, 0.5, float("-inf")]])
    guided = guide(cond, uncond, 2.0)
    torch.testing.assert_close(guided[0, :2], uncond[0, :2] + 2.0 * (cond[0, :2] - uncond[0, :2]))
    assert guided[0, 2] == float("-inf")
    torch.testing.assert_close(guide(cond[:, :2], uncond[:, :2], 1.0), cond[:, :2])


def test_draw_follows_the_probabilities() -> None:
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2])
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(probs, generator) for _ in range(20000)]), minlength=4) / 20000
    assert counts[1] == 0
    torch.testing.assert_close(counts, probs, atol=0.015, rtol=0)


def test_temperature_zero_is_greedy_and_seeds_decide_the_draw() -> None:
    ids, logits = torch.arange(10, 20), torch.linspace(0.0, 1.0, 10)
    assert choose(ids, logits, Sampling(temperature=0.0), torch.Generator().manual_seed(1)) == 19
    hot = Sampling(temperature=5.0)
    draws = [choose(ids, logits, hot, torch.Generator().manual_seed(seed)) for seed in range(30)]
    again = [choose(ids, logits, hot, torch.Generator().manual_seed(seed)) for seed in range(30)]
    assert draws == again and len(set(draws)) > 3


class ScriptedDecoder:
    """Conditional rows score A 5 and B 4, unconditional rows A 5 and B 0 (guided at 2: A 5, B 8); records the rows."""

    A, B = 1000, 2000

    def __init__(self, vocab: int, items: int):
        self.vocab, self.items, self.device = vocab, items, torch.device("cpu")
        self.fed: list[list[int]] = []

    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.started = ids.clone()
        self.rows = ids.shape[0]

    def feed(self, tokens: torch.Tensor) -> None:
        self.fed.append(tokens.tolist())

    def logits(self, codes_only: bool) -> torch.Tensor:
        scores = torch.zeros(self.rows, self.vocab)
        scores[:, self.A] = 5.0
        cond_rows = self.items if self.rows > self.items else self.rows
        scores[:cond_rows, self.B] = 4.0
        return scores

    def keep(self, rows: torch.Tensor) -> None:
        self.rows = rows.numel()


@pytest.mark.parametrize("cfg_scale, expected", [(2.0, ScriptedDecoder.B), (1.0, ScriptedDecoder.A)])
def test_engine_guides_and_feeds_both_rows(cfg_scale: float, expected: int) -> None:
    tables = shared_tables()
    free = ConstraintSpec("cot", enabled=False)
    jobs = [Job((11, 12, 13), (21,), free, 3, seed=1), Job((14,), (22, 23), free, 3, seed=2)]
    decoder = ScriptedDecoder(tables.vocab_size, len(jobs))
    outputs = generate(decoder, tables, jobs, Sampling(temperature=0.0, cfg_scale=cfg_scale))
    assert outputs == [[expected] * 3, [expected] * 3]
    pad = tables.pad
    if cfg_scale > 1:
        assert decoder.started.tolist() == [[11, 12, 13], [pad, pad, 14], [pad, pad, 21], [pad, 22, 23]]
        assert decoder.fed == [[expected] * 4] * 2
    else:
        assert decoder.started.tolist() == [[11, 12, 13], [pad, pad, 14]]
        assert decoder.fed == [[expected] * 2] * 2
