"""Every recorded official planner run replayed through our modes with the LM's outputs canned.

Each golden pipeline lists the LM calls the official code made (prompts, the left-padded guidance batch,
sampling settings, constrained-decoder settings) and what it returned. A scripted runner checks each
call our modes make against the record, answers with the recorded output, and the parsed results
must equal the official ones. Our one deliberate difference shows up here and is asserted as such: a
language given to format mode is injected instead of dropped from the CoT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import pytest

from acestep_core.planner import modes
from acestep_core.planner.calls import LMCall
from acestep_core.planner.engine import left_pad
from acestep_core.planner.modes import PlannerSettings
from acestep_core.planner.values import FIELD_ORDER
from tests.core.tiny_lm import shared_tables, single_thread  # noqa: F401 (fixture)

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "golden" / "prompts" / "lm_prompts.json")
                    .read_text(encoding="utf-8"))
RESULT_BOOKKEEPING = ("status_message", "success", "error", "extra_outputs")


@pytest.fixture(scope="module")
def tables():
    return shared_tables()


def _top_k(value: Optional[int]) -> int:
    return int(value) if value else 0


def _top_p(value: Optional[float]) -> float:
    return float(value) if value is not None and 0 < value < 1 else 1.0


class ScriptedRunner:
    """Checks each call against the next recorded one and answers with the recorded output."""

    def __init__(self, records: Sequence[dict], tables, format_language: Optional[str] = None):
        self.records, self.tables, self.format_language = list(records), tables, format_language
        self.calls: list[LMCall] = []

    def run(self, calls: Sequence[LMCall], progress=None, cancel=None) -> list[str]:
        outputs = []
        for call in calls:
            assert self.records, "our planner made more LM calls than the official one"
            record = self.records.pop(0)
            self.check(call, record)
            self.calls.append(call)
            outputs.append(record["canned_output_text"])
        return outputs

    def check(self, call: LMCall, record: dict) -> None:
        encode = self.tables.tokenizer.encode
        assert call.prompt == record["prompt"]
        if "prompt_token_ids" in record:
            assert encode(call.prompt) == record["prompt_token_ids"]
        sampling, official = call.sampling, record["sampling"]
        assert call.max_new_tokens == official["max_new_tokens"]
        assert sampling.temperature == official["temperature"]
        assert sampling.cfg_scale == official.get("cfg_scale", 1.0)
        assert sampling.top_k == _top_k(official.get("top_k"))
        assert sampling.top_p == _top_p(official.get("top_p"))
        assert sampling.repetition_penalty == official.get("repetition_penalty", 1.0)
        assert self.tables.pad == official["pad_token_id"]
        if "uncond_prompt" in record:
            assert sampling.uses_cfg and call.uncond_prompt == record["uncond_prompt"]
            assert encode(call.uncond_prompt) == record["uncond_prompt_token_ids"]
            batch = record["cfg_batch_left_padded"]
            ids, mask = left_pad([encode(call.prompt), encode(call.uncond_prompt)], self.tables.pad)
            assert ids.tolist() == batch["input_ids"] and mask.tolist() == batch["attention_mask"]
        else:
            assert not sampling.uses_cfg
        self.check_constraint(call, record["constrained_decoder"])

    def check_constraint(self, call: LMCall, official: dict) -> None:
        spec = call.constraint
        assert spec.enabled == official["enabled"]
        assert spec.phase == official["generation_phase"]
        assert spec.stop_at_reasoning == official["stop_at_reasoning"]
        assert spec.target_codes == official["target_codes"]
        if spec.phase == "codes":
            return  # the prompt holds </think>: fields and user values are never visited
        skipped = {"genres": official["skip_genres"], "caption": official["skip_caption"],
                   "language": official["skip_language"]}
        expected_values = {k: str(v) for k, v in official["user_provided_metadata"].items() if v is not None}
        if self.format_language and skipped["language"] and "language" in expected_values:
            skipped["language"] = False  # deliberate: we inject the user's language
        assert spec.fields == tuple(name for name in FIELD_ORDER if not skipped.get(name, False))
        assert dict(spec.user_values) == expected_values
        for name, forced in official["user_value_forced_tokens"].items():
            tokens = self.tables.forced_value(spec.user_values[name])
            assert self.tables.tokenizer.decode(tokens) == forced["text"]
            if "token_ids" in forced:
                assert list(tokens) == forced["token_ids"]


def _settings(kwargs: dict, handler: dict) -> PlannerSettings:
    return PlannerSettings(
        temperature=kwargs.get("temperature", 0.85), cfg_scale=kwargs.get("cfg_scale", 1.0),
        top_k=_top_k(kwargs.get("top_k")), top_p=_top_p(kwargs.get("top_p")),
        repetition_penalty=kwargs.get("repetition_penalty", 1.0),
        negative_prompt=kwargs.get("negative_prompt", "NO USER INPUT"),
        constrained=kwargs.get("use_constrained_decoding", True),
        legacy_cfg_prompt=handler.get("use_legacy_cfg_prompt", False), share_cot=True)


def _replay(case: dict, runner: ScriptedRunner) -> Any:
    """Run our mode for the official call; returns what the official call returned, in its shape."""
    kwargs, name = case["kwargs"], case["call"].split("(")[0].rsplit(".", 1)[-1]
    settings = _settings(kwargs, case.get("handler_attributes", {}))
    batch = kwargs.get("batch_size") or 1
    seeds = list(kwargs.get("seeds") or range(batch))[:batch]
    if name == "generate_with_stop_condition":
        outcomes = modes.think(
            runner, kwargs["caption"], kwargs["lyrics"], seeds, settings, user_metadata=kwargs.get("user_metadata"),
            target_duration=kwargs.get("target_duration"), write_codes=kwargs["infer_type"] == "llm_dit",
            use_cot_metas=kwargs.get("use_cot_metas", True), use_cot_caption=kwargs.get("use_cot_caption", True),
            use_cot_language=kwargs.get("use_cot_language", True))
        if batch > 1:
            return {"metadata": [o.metadata for o in outcomes], "audio_codes": [o.codes for o in outcomes]}
        return {"metadata": outcomes[0].metadata, "audio_codes": outcomes[0].codes}
    if name in ("create_sample", "create_sample_from_query"):
        outcomes = modes.create_sample(runner, kwargs["query"], seeds, settings,
                                       instrumental=kwargs.get("instrumental", False),
                                       language=kwargs.get("vocal_language"))
    elif name in ("format_sample", "format_sample_from_input"):
        outcomes = modes.format_sample(runner, kwargs["caption"], kwargs["lyrics"], seeds, settings,
                                       user_metadata=kwargs.get("user_metadata"))
    elif name in ("understand_music", "understand_audio_from_codes"):
        outcomes = modes.understand(runner, kwargs["audio_codes"], seeds, settings)
    else:
        raise AssertionError(f"no mode of ours for the official {case['call']}")
    return outcomes[0].fields if name in ("create_sample", "format_sample", "understand_music") \
        else outcomes[0].metadata


@pytest.mark.parametrize("case", GOLDEN["pipelines"], ids=lambda case: case["id"])
def test_pipeline_replay(case: dict, tables) -> None:
    format_mode = "format_sample" in case["call"]
    runner = ScriptedRunner(case["network_calls"], tables, format_language="inject" if format_mode else None)
    ours = _replay(case, runner)
    assert not runner.records, "the official planner made LM calls that ours did not"
    result = case["result"]
    if isinstance(result, dict) and "metadata" in result and "audio_codes" in result:
        assert ours["metadata"] == result["metadata"]
        assert ours["audio_codes"] == result["audio_codes"]
        counts = result.get("extra_outputs", {})
        if "codes_count" in counts:
            assert ours["audio_codes"].count("<|audio_code_") == counts["codes_count"]
        return
    expected = {key: value for key, value in result.items() if key not in RESULT_BOOKKEEPING}
    assert {key: ours.get(key) for key in expected} == expected


def test_official_traces_use_the_builders_we_replay(tables) -> None:
    """Each traced builder call of the pipelines gives the traced prompt through our builders too."""
    from tests.core.test_planner_prompts import build

    checked = 0
    for case in GOLDEN["pipelines"]:
        for step in case["official_trace"]:
            name = step["function"].rsplit(".", 1)[-1]
            if not name.startswith("build_formatted_prompt"):
                continue
            names = {"build_formatted_prompt": ("caption", "lyrics"),
                     "build_formatted_prompt_with_cot": ("caption", "lyrics", "cot_text")}.get(name, ())
            kwargs = dict(zip(names, step.get("args", []))) | step.get("kwargs", {})
            built = build({"function": step["function"], "kwargs": kwargs,
                           "handler_attributes": case.get("handler_attributes", {})})
            assert built == step["returned"]
            checked += 1
    assert checked
