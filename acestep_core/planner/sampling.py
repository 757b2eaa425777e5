"""Turning next-token logits into a token: guidance, penalties, filters and seeded sampling.

The order is the official PyTorch backend's (lm-text-vae.md §2.6): classifier-free guidance
`uncond + s·(cond − uncond)` in float32, the constraint mask, the repetition penalty (over the
conditional sequence), top-k, top-p (the token that crosses p is kept), then the temperature and a
draw (argmax when the temperature is 0). min-p, which the official planner lacks, sits with
the other filters. Every draw takes the item's own `torch.Generator`, so an item's tokens depend on
its seed only. Work is done on the candidates the constraint allows, not the whole 217k vocabulary:
the same distribution (masked tokens have probability 0), far fewer values to sort and draw from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_NEG = float("-inf")
TOP_P_WINDOW = 4096  # candidates looked at first for the top-p head


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one LM call. `top_k` 0, `top_p` ≥ 1, `min_p` 0 and penalty 1 switch a step off;
    `cfg_scale` ≤ 1 means no guidance (no unconditional sequence is run)."""

    temperature: float = 0.85
    cfg_scale: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("temperature", "cfg_scale", "top_k", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.repetition_penalty == 0:
            raise ValueError("repetition_penalty must be positive (1.0 = off)")

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale > 1.0


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance in float32; -inf − -inf (a token banned on both sides) stays banned."""
    cond, uncond = cond.float(), uncond.float()
    return torch.nan_to_num(uncond + scale * (cond - uncond), nan=_NEG)


def _penalize(ids: torch.Tensor, logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """The CTRL repetition penalty (transformers' rule): scores of seen tokens times the penalty when negative,
    divided by it otherwise."""
    hit = torch.isin(ids, seen)
    return torch.where(hit, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def _top_p(ids: torch.Tensor, logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest head of the sorted distribution whose mass exceeds `top_p` (the crossing token kept).

    Usually the head is short: it is looked for among the best `TOP_P_WINDOW` first, and the whole row is
    sorted only when those do not reach `top_p`. Both give the official full-sort result.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    window = min(TOP_P_WINDOW, probs.numel())
    values, order = torch.topk(probs, window)
    if window < probs.numel() and float(values.sum()) <= top_p:
        values, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(values, dim=-1)
    remove = cumulative > top_p
    remove[1:] = remove[:-1].clone()
    remove[0] = False
    keep = order[~remove]
    return ids[keep], logits[keep]


def candidates(ids: torch.Tensor, logits: torch.Tensor, sampling: Sampling,
               seen: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates `ids` (long `[n]`) that survive the filters, with their scores (before the temperature).

    In order: the repetition penalty over the `seen` ids, top-k, top-p, min-p. Separate from the draw so the
    filters can be checked on their own.
    """
    logits = logits.float()
    if sampling.repetition_penalty != 1.0 and seen is not None and seen.numel():
        logits = _penalize(ids, logits, seen, sampling.repetition_penalty)
    if 0 < sampling.top_k < logits.numel():
        kth = torch.topk(logits, sampling.top_k).values[-1]
        keep = logits >= kth
        ids, logits = ids[keep], logits[keep]
    if 0.0 < sampling.top_p < 1.0:
        ids, logits = _top_p(ids, logits, sampling.top_p)
    if 0.0 < sampling.min_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        keep = probs >= sampling.min_p * probs.max()
        ids, logits = ids[keep], logits[keep]
    return ids, logits


def choose(ids: torch.Tensor, logits: torch.Tensor, sampling: Sampling, generator: torch.Generator,
           seen: torch.Tensor | None = None) -> int:
    """One token among the candidates `ids` (long `[n]`) with scores `logits` `[n]`.

    A single candidate is taken without a draw. Otherwise the `candidates` filters, then the draw at the
    temperature (argmax at 0) from the item's generator.
    """
    if ids.numel() == 1:
        return int(ids[0])
    ids, logits = candidates(ids, logits, sampling, seen)
    if ids.numel() == 1 or sampling.temperature <= 0:
        return int(ids[torch.argmax(logits)])
    return int(ids[draw(torch.softmax(logits / sampling.temperature, dim=-1), generator)])


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """An index drawn with probabilities `probs` (one uniform number, inverted through the cumulative sum).

    Equivalent in distribution to `torch.multinomial(probs, 1)` and much faster on the CPU for a long
    row; tokens with probability 0 are never drawn.
    """
    cumulative = torch.cumsum(probs.double(), dim=-1)
    point = torch.rand(1, generator=generator, dtype=torch.float64, device=probs.device) * cumulative[-1]
    return int(torch.searchsorted(cumulative, point, right=True).clamp(max=probs.numel() - 1))
