"""The planner's text side against the official golden file: every prompt builder case byte for byte (and
token for token), the CoT YAML, the output parser and the tokens injected for user values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from acestep_core.planner import prompts as P
from acestep_core.planner.constraint import ConstrainedDecoder, ConstraintSpec
from acestep_core.planner.cot import code_tokens, extract_lyrics, format_cot, parse_metadata
from tests.core.tiny_lm import shared_tables, single_thread  # noqa: F401 (fixture)

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "golden" / "prompts" / "lm_prompts.json")
                    .read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tables():
    return shared_tables()


def build(case: dict) -> str:
    """Our builder for an official builder call (function name and its keyword arguments)."""
    kwargs, name = case["kwargs"], case["function"].rsplit(".", 1)[-1]
    negative = kwargs.get("is_negative_prompt", False)
    negative_prompt = kwargs.get("negative_prompt", P.NO_USER_INPUT)
    legacy = case.get("handler_attributes", {}).get("use_legacy_cfg_prompt", False)
    if name == "build_formatted_prompt":
        if not negative:
            return P.think_prompt(kwargs["caption"], kwargs.get("lyrics", ""))
        if kwargs.get("generation_phase", "cot") == "cot":
            return P.think_uncond_prompt(kwargs.get("lyrics", ""), negative_prompt)
        return P.chat_prompt(P.GENERATE_INSTRUCTION, kwargs["caption"])
    if name == "build_formatted_prompt_with_cot":
        if negative:
            return P.codes_uncond_prompt(kwargs["caption"], kwargs["lyrics"], negative_prompt, legacy)
        return P.codes_prompt(kwargs["caption"], kwargs["lyrics"], kwargs["cot_text"])
    if name == "build_formatted_prompt_for_understanding":
        return P.plain_uncond_prompt(P.UNDERSTAND_INSTRUCTION, negative_prompt) if negative \
            else P.understand_prompt(kwargs["audio_codes"])
    if name == "build_formatted_prompt_for_inspiration":
        return P.plain_uncond_prompt(P.INSPIRE_INSTRUCTION, negative_prompt) if negative \
            else P.sample_prompt(kwargs["query"], kwargs.get("instrumental", False))
    if name == "build_formatted_prompt_for_format":
        return P.plain_uncond_prompt(P.REWRITE_INSTRUCTION, negative_prompt) if negative \
            else P.format_prompt(kwargs["caption"], kwargs["lyrics"])
    raise AssertionError(f"no builder of ours for the official {case['function']}")


def test_instructions_match_the_official_constants() -> None:
    official = GOLDEN["instructions"]
    assert official["DEFAULT_LM_INSTRUCTION"] == P.GENERATE_INSTRUCTION
    assert official["DEFAULT_LM_UNDERSTAND_INSTRUCTION"] == P.UNDERSTAND_INSTRUCTION
    assert official["DEFAULT_LM_INSPIRED_INSTRUCTION"] == P.INSPIRE_INSTRUCTION
    assert official["DEFAULT_LM_REWRITE_INSTRUCTION"] == P.REWRITE_INSTRUCTION


@pytest.mark.parametrize("case", GOLDEN["builders"], ids=lambda case: case["id"])
def test_builder_prompt_and_ids(case: dict, tables) -> None:
    prompt = build(case)
    assert prompt == case["prompt"]
    assert tables.tokenizer.encode(prompt) == case["token_ids"]


@pytest.mark.parametrize("case", GOLDEN["cot_yaml"], ids=lambda case: case["id"])
def test_cot_yaml(case: dict, tables) -> None:
    cot = format_cot(case["metadata"])
    assert cot == case["cot_text"]
    assert tables.tokenizer.encode(cot) == case["token_ids"]


@pytest.mark.parametrize("case", GOLDEN["parse_lm_output"], ids=lambda case: case["id"])
def test_parse_lm_output(case: dict) -> None:
    assert parse_metadata(case["output_text"]) == case["metadata"]
    assert code_tokens(case["output_text"]) == case["audio_codes"]
    assert extract_lyrics(case["output_text"]) == case["lyrics_extract"]


@pytest.mark.parametrize("case", GOLDEN["constrained_decoder_user_value_tokens"],
                         ids=lambda case: f"{case['field']}={case['value']}")
def test_user_value_tokens(case: dict, tables) -> None:
    """The tables give the official forced tokens, and the machine forces exactly those at the field's value."""
    assert list(tables.forced_value(case["value"])) == case["forced_token_ids"]
    assert tables.tokenizer.decode(case["forced_token_ids"]) == case["forced_text"]
    fields = ("bpm", "duration", "keyscale", "language", "timesignature")
    machine = ConstrainedDecoder(tables, ConstraintSpec("cot", True, fields, {case["field"]: str(case["value"])}))
    written: list[int] = []
    forced_at_value: list[int] = []
    scores = torch.zeros(tables.vocab_size)
    while not machine.done and len(written) < 200:
        allowed = machine.allowed(scores)
        token = int(allowed[0])
        inside = machine.kind == "value" and machine.stages[machine.index][1] == case["field"]
        if inside:
            assert allowed.numel() == 1, "a user value must be forced, not chosen"
            forced_at_value.append(token)
        machine.advance(token)
        written.append(token)
    assert forced_at_value == case["forced_token_ids"]


def test_golden_file_has_every_section() -> None:
    """The replays above cover each section; an empty section would make them vacuous."""
    for section in ("builders", "pipelines", "cot_yaml", "parse_lm_output", "constrained_decoder_user_value_tokens"):
        assert GOLDEN[section], section
        assert len(GOLDEN[section]) == GOLDEN["counts"][section]
