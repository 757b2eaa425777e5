"""The 5 Hz LM's quality score of a generated song: how well its audio codes explain the song's description.

The LM is asked to "understand" the codes (the understand prompt with the codes) and teacher-forced on
what the song should be: each metadata field is scored by top-k recall of its CoT line, the caption
and the lyrics by pointwise mutual information against the same prompt without codes, squashed with
a sigmoid. The parts are mixed 0.5 caption / 0.3 lyrics / 0.2 metadata, renormalized over the parts
present. Everything follows the official `test_time_scaling` / `lm_score` (lm-text-vae.md §5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
import yaml

from acestep_core.errors import AceStepError
from acestep_core.planner.blueprint import PlanItem
from acestep_core.planner.cot import codes_to_text
from acestep_core.planner.model import PlannerLM
from acestep_core.planner.prompts import NO_USER_INPUT, understand_prompt

METADATA_FIELDS = ("bpm", "duration", "genres", "keyscale", "language", "timesignature")
WEIGHTS: dict[str, float] = {"caption": 0.5, "lyrics": 0.3, "metadata": 0.2}
TOP_K = 10
DEFAULT_PMI_SCALE = 0.1   # the scoring function's default
UI_PMI_SCALE = 0.5        # the official app's slider default
_EXP_LIMIT = 709.0        # math.exp overflows beyond this


@dataclass(frozen=True)
class QualityScore:
    """The weighted total (0..1) and each part: metadata fields (top-k recall), `caption`, `lyrics` (PMI)."""

    total: float
    parts: dict[str, float]


def yaml_line(field: str, value: Any) -> str:
    """The CoT line(s) of one field, serialised as the official code does (PyYAML, sorted, unicode)."""
    return yaml.dump({field: value}, allow_unicode=True, sort_keys=True).strip()


def field_target(field: str, value: Any) -> str:
    return f"<think>\n{yaml_line(field, value)}\n</think>\n"


def lyrics_target(lyrics: str) -> str:
    return f"<think>\n</think>\n# Lyric\n{lyrics}\n"


def target_logits(lm: PlannerLM, prompt: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced logits predicting each target token `[n, V]` and the target ids `[n]`.

    Prompt and target are tokenized together (so merges across the seam are the tokenizer's), the prompt
    alone gives the split point; only the rows that predict target tokens go through the output layer.
    """
    prompt_length = len(lm.tokenizer.encode(prompt))
    ids = torch.tensor([lm.tokenizer.encode(prompt + target)], dtype=torch.long, device=lm.device)
    if ids.shape[1] <= prompt_length:
        return torch.empty(0, 0, device=lm.device), torch.empty(0, dtype=torch.long, device=lm.device)
    with torch.inference_mode():
        hidden = lm.model.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).last_hidden_state
        logits = lm.model.lm_head(hidden[0, prompt_length - 1:-1])
    return logits, ids[0, prompt_length:]


def topk_recall(logits: torch.Tensor, targets: torch.Tensor, k: int = TOP_K) -> float:
    """Mean over target tokens of `1 − (rank − 1)/k` when the token ranks within the top k, else 0."""
    if targets.numel() == 0:
        return 0.0
    top = torch.topk(logits, k=min(k, logits.shape[-1]), dim=-1).indices.tolist()
    total = 0.0
    for ranked, target in zip(top, targets.tolist()):
        if target in ranked:
            total += 1.0 - ranked.index(target) / k
    return total / len(top)


def mean_log_prob(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Average log-probability of the target tokens (no temperature: PMI needs the exact distribution)."""
    if targets.numel() == 0:
        return float("-inf")
    log_probs = F.log_softmax(logits, dim=-1)
    return log_probs[torch.arange(targets.shape[0], device=logits.device), targets].mean().item()


def pmi_to_score(pmi: float, scale: float = DEFAULT_PMI_SCALE) -> float:
    """sigmoid(PMI / scale): 0.5 means the codes tell nothing about the text, above 0.5 they fit it."""
    exponent = -pmi / scale
    if exponent > _EXP_LIMIT:
        return 0.0
    return 1.0 / (1.0 + math.exp(exponent))


def combine_scores(parts: Mapping[str, float], weights: Mapping[str, float] = WEIGHTS) -> float:
    """Weighted mean of caption, lyrics and the metadata mean, weights renormalized over the parts present.

    Every part other than `caption` and `lyrics` counts as a metadata field.
    """
    fields = [value for name, value in parts.items() if name not in ("caption", "lyrics")]
    present = {name: parts[name] for name in ("caption", "lyrics") if parts.get(name) is not None}
    if fields:
        present["metadata"] = sum(fields) / len(fields)
    weight_sum = sum(weights[name] for name in present)
    if weight_sum == 0:
        return 0.0
    total = 0.0
    for name in sorted(present, key=lambda part: weights[part], reverse=True):
        total += present[name] * (weights[name] / weight_sum)
    return total


def score_metadata(lm_metadata: Optional[Mapping[str, Any]] = None, *, caption: Optional[str] = None,
                   bpm: Any = None, duration: Optional[float] = None, keyscale: Optional[str] = None,
                   language: Optional[str] = None, timesignature: Optional[str] = None) -> dict[str, Any]:
    """What the song should be: the LM's own metadata first, then the user's values for fields it lacks.

    Mirrors the official app: bpm and duration as whole numbers (a duration only when positive), text
    fields stripped, empty values left out.
    """
    metadata = dict(lm_metadata or {})
    if bpm is not None and "bpm" not in metadata:
        try:
            metadata["bpm"] = int(bpm)
        except (TypeError, ValueError):
            pass
    if caption and "caption" not in metadata:
        metadata["caption"] = caption
    if duration is not None and "duration" not in metadata:
        try:
            if float(duration) > 0:
                metadata["duration"] = int(float(duration))
        except (TypeError, ValueError):
            pass
    for name, value in (("keyscale", keyscale), ("language", language), ("timesignature", timesignature)):
        if value and value.strip() and name not in metadata:
            metadata[name] = value.strip()
    return metadata


def lm_quality_score(lm: PlannerLM, codes: Union[str, Sequence[int]], caption: Optional[str] = "", lyrics: str = "",
                     metadata: Optional[Mapping[str, Any]] = None, *, top_k: int = TOP_K,
                     scale: float = DEFAULT_PMI_SCALE) -> QualityScore:
    """Score one song's audio codes (`<|audio_code_N|>…` or code values) against its description.

    `metadata` holds the fields to check (see `score_metadata`); its `caption` wins over `caption`.
    Metadata fields present among bpm, duration, genres, keyscale, language, timesignature are scored
    by top-k recall; the caption (when not None) and non-empty lyrics by PMI with `scale`.
    """
    codes_text = codes if isinstance(codes, str) else codes_to_text(codes)
    if not codes_text.strip():
        raise AceStepError("The LM quality score needs the song's audio codes: score songs made from an LM plan "
                           "(blueprint with codes), or use the lyric-alignment score instead.")
    if scale <= 0:
        raise AceStepError(f"The PMI scale must be positive (the official app uses {UI_PMI_SCALE}), got {scale}.")
    fields = dict(metadata or {})
    fields.setdefault("caption", caption)
    prompt, uncond_prompt = understand_prompt(codes_text), understand_prompt(NO_USER_INPUT)

    def pmi_part(target: str) -> float:
        conditional = mean_log_prob(*target_logits(lm, prompt, target))
        unconditional = mean_log_prob(*target_logits(lm, uncond_prompt, target))
        return pmi_to_score(conditional - unconditional, scale)

    parts: dict[str, float] = {}
    for name in METADATA_FIELDS:
        if fields.get(name) is not None:
            parts[name] = topk_recall(*target_logits(lm, prompt, field_target(name, fields[name])), k=top_k)
    if fields["caption"] is not None:
        parts["caption"] = pmi_part(field_target("caption", fields["caption"]))
    if lyrics:
        parts["lyrics"] = pmi_part(lyrics_target(lyrics))
    return QualityScore(combine_scores(parts), parts)


def score_plan_item(lm: PlannerLM, item: PlanItem, *, top_k: int = TOP_K,
                    scale: float = DEFAULT_PMI_SCALE) -> QualityScore:
    """`lm_quality_score` of a planner item: its codes, caption and lyrics, the LM's metadata then the item's."""
    metadata = score_metadata(item.metadata, caption=item.caption, bpm=item.bpm, duration=item.duration,
                              keyscale=item.keyscale, language=item.language, timesignature=item.timesignature)
    return lm_quality_score(lm, item.codes, item.caption, item.lyrics, metadata, top_k=top_k, scale=scale)
