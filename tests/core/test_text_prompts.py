"""Prompt builders against the official prompt strings and token ids (golden/prompts/dit_text_prompts.json)."""

from __future__ import annotations

import json

import pytest

from acestep_core.constants import LYRICS_MAX_TOKENS, SAMPLE_RATE, TEXT_MAX_TOKENS
from acestep_core.errors import AceStepError
from acestep_core.text import prompts as P
from acestep_core.text.encoder import pad_right
from acestep_core.text.tokenizer import TextTokenizer
from tests.conftest import GOLDEN
from tests.core import qwen_vocab

CASES = json.loads((GOLDEN / "prompts" / "dit_text_prompts.json").read_text(encoding="utf-8"))["cases"]


def request_from_case(case: dict) -> P.TextRequest:
    """Our request for a golden case: the user's inputs, plus what the LM filled in when one ran.

    The handler's keyword arguments hold the values after the LM step; the user's duration is taken
    from the inputs (so the duration lock of source tasks is ours to apply) unless the LM ran.
    """
    inputs = case["inputs"]
    handler = case["handler_generate_music_kwargs"]
    codes = handler.get("audio_code_string") or ""
    has_codes = any(c.strip() for c in codes) if isinstance(codes, list) else bool(codes.strip())
    lm_ran = bool(case.get("lm_trace"))
    derive = inputs.get("derive_instruction", True)
    return P.TextRequest(
        task=inputs["task"],
        caption=handler["captions"],
        lyrics=handler["lyrics"],
        language=handler["vocal_language"],
        bpm=handler["bpm"],
        keyscale=handler["key_scale"],
        timesignature=handler["time_signature"],
        duration=handler["audio_duration"] if lm_ran else inputs.get("duration"),
        source_samples=inputs.get("source_samples"),
        has_audio_codes=has_codes,
        track_name=inputs.get("track_name"),
        track_classes=tuple(inputs.get("track_classes") or ()),
        instruction=None if derive else handler["instruction"],
        audio_cover_strength=handler["audio_cover_strength"],
        batch_size=handler["batch_size"],
        global_caption=handler.get("global_caption") or "",
        lego_sft=bool(case["official_call"].get("dit_handler_model_config_is_lego_sft")),
        chunk_mask_mode=handler.get("chunk_mask_mode", "auto"),
    )


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(qwen_vocab.qwen_tokenizer(append_eos=True))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_prompt_strings_match_official(case: dict) -> None:
    built = P.build_prompts(request_from_case(case))
    resolved = case["resolved"]
    assert built.instruction == resolved["instruction_to_dit"]
    assert built.metas == resolved["metas_block"]
    assert built.caption == resolved["caption_after_sft_extraction"]
    assert built.language == resolved["vocal_language"]
    assert len(built.items) == len(case["items"])
    for ours, official in zip(built.items, case["items"]):
        assert ours.caption == official["caption_prompt"]
        assert ours.lyrics == official["lyrics_prompt"]
        assert ours.non_cover_caption == official.get("non_cover_caption_prompt")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_prompt_token_ids_match_official(case: dict, tokenizer: TextTokenizer) -> None:
    built = P.build_prompts(request_from_case(case))
    caption_ids = [tokenizer.encode(item.caption, TEXT_MAX_TOKENS) for item in built.items]
    lyric_ids = [tokenizer.encode(item.lyrics, LYRICS_MAX_TOKENS) for item in built.items]
    for ours_caption, ours_lyrics, official in zip(caption_ids, lyric_ids, case["items"]):
        assert ours_caption == official["caption_token_ids"]
        assert ours_lyrics == official["lyrics_token_ids"]

    text = pad_right(caption_ids, tokenizer.pad_id)
    lyrics = pad_right(lyric_ids, tokenizer.pad_id)
    batch = case["batch"]
    assert text.ids.tolist() == batch["text_token_ids"]
    assert text.mask.int().tolist() == batch["text_attention_mask"]
    assert lyrics.ids.tolist() == batch["lyric_token_ids"]
    assert lyrics.mask.int().tolist() == batch["lyric_attention_mask"]

    if built.items[0].non_cover_caption is not None:
        non_cover_ids = [tokenizer.encode(item.non_cover_caption, TEXT_MAX_TOKENS) for item in built.items]
        fitted = pad_right(non_cover_ids, tokenizer.pad_id).fit(text.ids.shape[1], tokenizer.pad_id)
        for row, official in enumerate(case["items"]):
            assert non_cover_ids[row] == official["non_cover_caption_token_ids"]
            assert fitted.ids[row].tolist() == official["non_cover_token_ids_to_dit"]
            assert fitted.mask[row].int().tolist() == official["non_cover_attention_mask_to_dit"]


def test_explicit_eos_equals_the_embedding_post_processor(tokenizer: TextTokenizer) -> None:
    """Our `text ids[:max-1] + <|endoftext|>` is what Qwen3-Embedding's own post-processor yields."""
    backend = qwen_vocab.qwen_tokenizer(append_eos=True)
    backend.enable_truncation(max_length=TEXT_MAX_TOKENS)
    for case in CASES:
        for item in case["items"]:
            assert tokenizer.encode(item["caption_prompt"], TEXT_MAX_TOKENS) == backend.encode(
                item["caption_prompt"]).ids


def test_lyrics_truncate_at_2048_and_keep_eos(tokenizer: TextTokenizer) -> None:
    prompt = P.lyrics_prompt("\n".join(["[Verse]"] + ["la la la, we sing along"] * 400), "en")
    full = tokenizer.backend.encode(prompt, add_special_tokens=False).ids
    assert len(full) > LYRICS_MAX_TOKENS
    ids = tokenizer.encode(prompt, LYRICS_MAX_TOKENS)
    assert len(ids) == LYRICS_MAX_TOKENS
    assert ids[:-1] == full[: LYRICS_MAX_TOKENS - 1]
    assert ids[-1] == tokenizer.eos_id == qwen_vocab.ORDINARY_TOKENS


@pytest.mark.parametrize("name", P.TRACK_NAMES)
def test_track_instructions_use_upper_case_names(name: str) -> None:
    assert P.task_instruction("extract", name) == P.EXTRACT_INSTRUCTION.format(track=name.upper())
    assert P.task_instruction("lego", name) == P.LEGO_INSTRUCTION.format(track=name.upper())
    assert name.upper() in P.task_instruction("complete", track_classes=[name])


def test_instructions_without_tracks_and_unknown_task() -> None:
    assert P.task_instruction("extract") == P.EXTRACT_ANY_INSTRUCTION
    assert P.task_instruction("lego", "") == P.LEGO_ANY_INSTRUCTION
    assert P.task_instruction("complete", track_classes=[]) == P.COMPLETE_ANY_INSTRUCTION
    three = P.task_instruction("complete", track_classes=["drums", "backing_vocals", "fx"])
    assert three == P.COMPLETE_INSTRUCTION.format(tracks="DRUMS | BACKING_VOCALS | FX")
    assert P.task_instruction("cover-nofsq") == P.task_instruction("cover") == P.COVER_INSTRUCTION
    with pytest.raises(AceStepError, match="Unknown task"):
        P.task_instruction("remix")


def test_codes_switch_text2music_to_cover_even_over_an_explicit_instruction() -> None:
    plain = P.build_prompts(P.TextRequest(caption="x", duration=20.0))
    coded = P.build_prompts(P.TextRequest(caption="x", duration=20.0, has_audio_codes=True,
                                          instruction=P.TEXT2MUSIC_INSTRUCTION))
    assert (plain.task, plain.instruction) == ("text2music", P.TEXT2MUSIC_INSTRUCTION)
    assert (coded.task, coded.instruction) == ("cover", P.COVER_INSTRUCTION)
    assert plain.metas == coded.metas  # codes do not change the metas duration of text2music


def test_metas_duration_rules() -> None:
    ten_and_a_half = int(10.5 * SAMPLE_RATE)
    # A used source wins and is truncated; text2music ignores it; codes replace it.
    assert P.metas_seconds("complete", 60.0, ten_and_a_half, False) == 10.5
    assert P.metas_seconds("text2music", 59.9, ten_and_a_half, False) == 59.9
    assert P.metas_seconds("complete", 45.0, ten_and_a_half, True) == 45.0
    # Source-locked tasks never report the requested duration.
    assert P.metas_seconds("cover", 45.0, None, True) is None
    assert P.metas_seconds("repaint", 45.0, None, False) is None
    # Unknown or non-positive durations fall back to the default line.
    assert P.metas_seconds("text2music", -1.0, None, False) is None
    assert P.metas_seconds("text2music", 0, None, False) is None
    block = P.metas_block(None, "", "", 59.99)
    assert block.endswith("- duration: 59 seconds\n") and block.count("N/A") == 3
    assert P.metas_block(0, "N/A", "   ", None) == P.metas_block(None, None, None, None)
    assert f"- duration: {P.DEFAULT_METAS_SECONDS} seconds\n" in P.metas_block(None, None, None, None)


def test_caption_extraction_from_a_whole_caption_prompt() -> None:
    inner = "Dreamy shoegaze\nwith reverb"
    whole = P.caption_prompt(P.COVER_INSTRUCTION, inner, P.metas_block(90, "4", "D major", 100))
    assert P.extract_caption(whole) == inner
    assert P.extract_caption("# Caption\nno instruction header") == "# Caption\nno instruction header"
    built = P.build_prompts(P.TextRequest(caption=whole, duration=12))
    assert f"# Caption\n{inner}\n\n# Metas\n" in built.items[0].caption


def test_lego_sft_caption_block_and_batch() -> None:
    request = P.TextRequest(task="lego", caption="Brushed drums", global_caption="Jazz ballad", lego_sft=True,
                            track_name="drums", chunk_mask_mode="explicit", audio_cover_strength=0.3,
                            batch_size=3, source_samples=SAMPLE_RATE * 8)
    built = P.build_prompts(request)
    assert len(built.items) == 3 and len(set(built.items)) == 1
    item = built.items[0]
    assert "Global: Jazz ballad\nLocal: Brushed drums\nMask Control: true\n" in item.caption
    assert "# Caption\nBrushed drums\n\n" in item.non_cover_caption
    segment = P.lego_sft_caption("Brushed drums", "Jazz ballad", "Generate a segment of the DRUMS track:", "auto")
    assert segment == "Local: Brushed drums\nMask Control: false"


def test_invalid_batch_size() -> None:
    with pytest.raises(AceStepError, match="batch_size"):
        P.build_prompts(P.TextRequest(batch_size=0))
