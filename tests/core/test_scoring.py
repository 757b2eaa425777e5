"""The LM quality score: its pieces on hand-made numbers, then the whole score on a tiny random 5 Hz LM."""

from __future__ import annotations

import math

import pytest
import torch

from acestep_core import scoring as S
from acestep_core.errors import AceStepError
from acestep_core.planner.blueprint import PlanItem
from acestep_core.planner.model import PlannerLM
from tests.core import tiny_lm

CODES = tuple(range(100, 160, 3))
UNDERSTAND = ("<|im_start|>system\n# Instruction\nUnderstand the given musical conditions and describe the audio "
              "semantics accordingly:\n\n<|im_end|>\n<|im_start|>user\n{codes}<|im_end|>\n<|im_start|>assistant\n")


def test_topk_recall_weights_by_rank() -> None:
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2],    # target 0: rank 1 → 1.0
                           [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],     # target 9: rank 3 → 0.8
                           [11.0, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])   # target 11: rank 12 → outside → 0
    assert S.topk_recall(logits, torch.tensor([0, 9, 11])) == pytest.approx((1.0 + 0.8 + 0.0) / 3)
    assert S.topk_recall(logits, torch.tensor([0, 9, 11]), k=12) == pytest.approx((1.0 + 10 / 12 + 1 / 12) / 3)
    assert S.topk_recall(logits[:0], torch.tensor([], dtype=torch.long)) == 0.0


def test_mean_log_prob() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]])
    assert S.mean_log_prob(logits, torch.tensor([2, 0])) == pytest.approx((math.log(0.25) + math.log(0.5)) / 2)
    assert S.mean_log_prob(logits[:0], torch.tensor([], dtype=torch.long)) == float("-inf")


def test_pmi_to_score_is_a_sigmoid_that_never_overflows() -> None:
    assert S.pmi_to_score(0.0) == 0.5
    assert S.pmi_to_score(0.1) == pytest.approx(1 / (1 + math.exp(-1)))
    assert S.pmi_to_score(0.3, 0.5) + S.pmi_to_score(-0.3, 0.5) == pytest.approx(1.0)
    assert S.pmi_to_score(-1000.0) == 0.0 and S.pmi_to_score(1000.0) == 1.0


def test_combine_scores_with_the_official_weights() -> None:
    parts = {"bpm": 0.5, "keyscale": 1.0, "caption": 1.0, "lyrics": 0.0}
    assert S.combine_scores(parts) == pytest.approx(0.5 * 1.0 + 0.3 * 0.0 + 0.2 * 0.75)
    # Without lyrics the other weights are renormalized: caption 0.5/0.7, metadata 0.2/0.7.
    assert S.combine_scores({"caption": 0.4, "bpm": 1.0}) == pytest.approx(0.4 * 5 / 7 + 1.0 * 2 / 7)
    assert S.combine_scores({"lyrics": 0.3}) == pytest.approx(0.3)
    assert S.combine_scores({}) == 0.0


def test_targets_are_the_cot_lines() -> None:
    assert S.field_target("bpm", 120) == "<think>\nbpm: 120\n</think>\n"
    assert S.field_target("language", "no") == "<think>\nlanguage: 'no'\n</think>\n"   # YAML quotes "no"
    assert S.field_target("timesignature", "4") == "<think>\ntimesignature: '4'\n</think>\n"
    long_caption = "a bright synth pop song with punchy drums and shimmering pads " * 2
    assert "\n  " in S.field_target("caption", long_caption.strip())   # PyYAML folds at 80 columns
    assert S.lyrics_target("[Verse]\nla") == "<think>\n</think>\n# Lyric\n[Verse]\nla\n"


def test_score_metadata_prefers_the_lm_then_fills_in_the_user_values() -> None:
    lm = {"bpm": 128, "caption": "the LM's caption", "genres": "house"}
    merged = S.score_metadata(lm, caption="user caption", bpm="90", duration=30.7, keyscale=" A minor ",
                              language="en", timesignature="")
    assert merged == {"bpm": 128, "caption": "the LM's caption", "genres": "house", "duration": 30,
                      "keyscale": "A minor", "language": "en"}
    assert S.score_metadata(None, bpm="fast", duration=0, keyscale="  ") == {}
    assert S.score_metadata({}, bpm=96.0, caption="x") == {"bpm": 96, "caption": "x"}


@pytest.fixture(scope="module")
def lm() -> PlannerLM:
    return PlannerLM(tiny_lm.tiny_lm(seed=3), tiny_lm.lm_tokenizer())


def full_logits(lm: PlannerLM, text: str) -> torch.Tensor:
    ids = torch.tensor([lm.tokenizer.encode(text)])
    with torch.no_grad():
        return lm.model(input_ids=ids).logits[0]


def test_target_logits_are_the_teacher_forced_rows(lm: PlannerLM) -> None:
    prompt = UNDERSTAND.format(codes=S.codes_to_text(CODES))
    target = S.field_target("bpm", 120)
    logits, targets = S.target_logits(lm, prompt, target)
    prompt_length = len(lm.tokenizer.encode(prompt))
    assert lm.tokenizer.decode(targets.tolist()) == target
    torch.testing.assert_close(logits, full_logits(lm, prompt + target)[prompt_length - 1:-1], rtol=1e-5, atol=1e-5)


def test_metadata_recall_against_ranks_counted_from_the_full_forward(lm: PlannerLM) -> None:
    k = 100_000   # wide enough that the random LM ranks most target tokens inside it
    result = S.lm_quality_score(lm, CODES, None, "", {"bpm": 120, "keyscale": "C major"}, top_k=k)
    assert list(result.parts) == ["bpm", "keyscale"]
    prompt = UNDERSTAND.format(codes=S.codes_to_text(CODES))
    for field, value in (("bpm", 120), ("keyscale", "C major")):
        target = f"<think>\n{field}: {value}\n</think>\n"
        ids = lm.tokenizer.encode(prompt + target)
        start = len(lm.tokenizer.encode(prompt))
        logits = full_logits(lm, prompt + target)
        ranks = [int((logits[p - 1] > logits[p - 1, ids[p]]).sum()) + 1 for p in range(start, len(ids))]
        expected = sum(1 - (r - 1) / k if r <= k else 0.0 for r in ranks) / len(ranks)
        assert result.parts[field] == pytest.approx(expected, abs=1e-9)
        assert 0.0 < result.parts[field] < 1.0
    assert result.total == pytest.approx((result.parts["bpm"] + result.parts["keyscale"]) / 2)


def test_without_codes_information_the_pmi_is_exactly_neutral(lm: PlannerLM) -> None:
    # With "NO USER INPUT" as the codes, the conditional and unconditional prompts are the same text.
    result = S.lm_quality_score(lm, "NO USER INPUT", "a song", "la la\n")
    assert result.parts == {"caption": 0.5, "lyrics": 0.5} and result.total == 0.5


def test_whole_score_is_deterministic_and_bounded(lm: PlannerLM) -> None:
    metadata = {"bpm": 120, "duration": 30, "genres": "pop", "keyscale": "C major", "language": "en",
                "timesignature": "4"}
    first = S.lm_quality_score(lm, CODES, "bright pop", "[Verse]\nla la\n", metadata, scale=S.UI_PMI_SCALE)
    again = S.lm_quality_score(lm, S.codes_to_text(CODES), "bright pop", "[Verse]\nla la\n", metadata,
                               scale=S.UI_PMI_SCALE)
    assert first == again
    assert list(first.parts) == ["bpm", "duration", "genres", "keyscale", "language", "timesignature", "caption",
                                 "lyrics"]
    assert all(0.0 <= value <= 1.0 for value in first.parts.values())
    assert first.total == S.combine_scores(first.parts)
    other_codes = S.lm_quality_score(lm, CODES[::-1], "bright pop", scale=S.UI_PMI_SCALE)
    assert list(other_codes.parts) == ["caption"] and other_codes.parts["caption"] != first.parts["caption"]


def test_plan_items_are_scored_with_their_own_fields(lm: PlannerLM) -> None:
    item = PlanItem(seed=1, caption="warm folk", lyrics="hey\n", language="en", bpm=90, keyscale="D major",
                    timesignature="3", duration=20.0, codes=CODES, metadata={"bpm": 92, "genres": "folk"})
    result = S.score_plan_item(lm, item)
    expected = S.lm_quality_score(lm, CODES, "warm folk", "hey\n",
                                  {"bpm": 92, "genres": "folk", "caption": "warm folk", "duration": 20,
                                   "keyscale": "D major", "language": "en", "timesignature": "3"})
    assert result == expected


def test_score_errors_name_the_input(lm: PlannerLM) -> None:
    with pytest.raises(AceStepError, match="audio codes"):
        S.lm_quality_score(lm, (), "a song")
    with pytest.raises(AceStepError, match="audio codes"):
        S.lm_quality_score(lm, "  ", "a song")
    with pytest.raises(AceStepError, match="PMI scale must be positive"):
        S.lm_quality_score(lm, CODES, "a song", scale=0.0)
