"""Every mode through the public entry points (`plan_song`, `plan_sample`, `plan_format`, `plan_understand`,
`random_example`): the prompts they send to the LM are the official ones of the golden file byte for byte,
with the guidance, constraint and budget each mode should have; user values are checked before any LM call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest

from acestep_core.errors import AceStepError
from acestep_core.planner import (
    LMCall, PlannerSettings, PlanRequest, plan_format, plan_sample, plan_song, plan_understand, random_example,
)
from acestep_core.planner.cot import codes_to_text

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "golden" / "prompts" / "lm_prompts.json")
                    .read_text(encoding="utf-8"))
BUILDERS = {case["id"]: case for case in GOLDEN["builders"]}
TEXT_FIELDS = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")


class Recorder:
    """A runner that records the calls and answers with nothing (an empty plan)."""

    def __init__(self) -> None:
        self.calls: list[LMCall] = []

    def run(self, calls: Sequence[LMCall], progress=None, cancel=None) -> list[str]:
        self.calls += calls
        return [""] * len(calls)


def golden(case_id: str) -> str:
    return BUILDERS[case_id]["prompt"]


@pytest.mark.parametrize("case_id", ["cot_cond_en", "cot_cond_instrumental"])
def test_think_phase_one(case_id: str) -> None:
    kwargs = BUILDERS[case_id]["kwargs"]
    runner = Recorder()
    plan_song(runner, PlanRequest(caption=kwargs["caption"], lyrics=kwargs["lyrics"], seeds=[1]))
    first = runner.calls[0]
    assert first.prompt == golden(case_id)
    assert first.uncond_prompt is None and not first.sampling.uses_cfg
    assert first.constraint.phase == "cot" and first.constraint.stop_at_reasoning
    assert "genres" not in first.constraint.fields


def test_think_phase_two_from_user_metadata() -> None:
    kwargs = BUILDERS["codes_cond_user_meta_cot"]["kwargs"]
    runner = Recorder()
    plan_song(runner, PlanRequest(caption=kwargs["caption"], lyrics=kwargs["lyrics"], bpm=140, duration=30,
                                  keyscale="g minor", timesignature="4/4", seeds=[1]))
    (call,) = runner.calls  # every metadata given: no phase 1
    assert call.prompt == golden("codes_cond_user_meta_cot")
    assert call.constraint.phase == "codes" and call.constraint.target_codes == 150
    assert call.sampling.cfg_scale == 2.0 and call.max_new_tokens == 160


@pytest.mark.parametrize("case_id, settings", [
    ("codes_uncond_custom_negative", PlannerSettings(negative_prompt="low quality, muffled")),
    ("codes_uncond_legacy_toggle_default", PlannerSettings(legacy_cfg_prompt=True)),
])
def test_think_phase_two_guidance_prompt(case_id: str, settings: PlannerSettings) -> None:
    kwargs = BUILDERS[case_id]["kwargs"]
    runner = Recorder()
    plan_song(runner, PlanRequest(caption=kwargs["caption"], lyrics=kwargs["lyrics"], duration=20, seeds=[1]),
              settings)
    codes = runner.calls[-1]
    assert codes.uncond_prompt == golden(case_id) and codes.sampling.uses_cfg


def _text_call(runner: Recorder) -> LMCall:
    (call,) = runner.calls
    assert call.uncond_prompt is None and not call.sampling.uses_cfg
    assert call.constraint.phase == "understand" and call.constraint.fields == TEXT_FIELDS
    return call


def test_simple_mode() -> None:
    kwargs = BUILDERS["inspire_unicode_query"]["kwargs"]
    runner = Recorder()
    plan_sample(runner, kwargs["query"], instrumental=kwargs["instrumental"], seeds=[1])
    assert _text_call(runner).prompt == golden("inspire_unicode_query")
    flagged = Recorder()
    plan_sample(flagged, kwargs["query"], instrumental=True, language="ja", seeds=[1])
    call = _text_call(flagged)
    assert call.prompt == golden("inspire_unicode_query").replace("instrumental: false", "instrumental: true")
    assert dict(call.constraint.user_values) == {"language": "ja"}


def test_format_mode() -> None:
    kwargs = BUILDERS["format_en"]["kwargs"]
    runner = Recorder()
    plan_format(runner, kwargs["caption"], kwargs["lyrics"], bpm=100, seeds=[1])
    call = _text_call(runner)
    assert call.prompt == golden("format_en") and dict(call.constraint.user_values) == {"bpm": "100"}


def test_understand_and_random_example() -> None:
    official_codes = BUILDERS["understand_edge_codes"]["kwargs"]["audio_codes"]
    codes = (0, 1, 63999, 12)
    runner = Recorder()
    blueprint = plan_understand(runner, codes, seeds=[1])
    assert _text_call(runner).prompt == golden("understand_edge_codes").replace(official_codes, codes_to_text(codes))
    assert blueprint.items[0].codes == codes
    runner = Recorder()
    random_example(runner, seeds=[1])
    assert _text_call(runner).prompt == golden("understand_edge_codes").replace(official_codes, "NO USER INPUT")


def test_each_item_has_its_own_calls_and_seed() -> None:
    runner = Recorder()
    blueprint = plan_song(runner, PlanRequest(caption="x", duration=10, batch_size=3, seeds=[4, 5, 6]))
    phase1, phase2 = runner.calls[:3], runner.calls[3:]
    assert [call.seed for call in phase2] == [4, 5, 6] and len({call.seed for call in phase1}) == 3
    assert blueprint.seeds == (4, 5, 6)


@pytest.mark.parametrize("make, words", [
    (lambda r: plan_format(r, "c", "l", keyscale="H major"), "keyscale 'H major'"),
    (lambda r: plan_format(r, "c", "l", bpm=301), "bpm 301"),
    (lambda r: plan_format(r, "c", "l", bpm=29), "bpm 29"),
    (lambda r: plan_format(r, "c", "l", timesignature="7/8"), "timesignature '7/8'"),
    (lambda r: plan_sample(r, "q", language="klingon"), "language 'klingon'"),
    (lambda r: plan_song(r, PlanRequest(keyscale="C lydian")), "keyscale 'C lydian'"),
    (lambda r: plan_song(r, PlanRequest(bpm=0.5)), "bpm 0.5"),
    (lambda r: plan_understand(r, (5, 64000)), "63999"),
])
def test_bad_user_values_stop_before_the_lm(make, words: str) -> None:
    runner = Recorder()
    with pytest.raises(AceStepError) as error:
        make(runner)
    assert words in str(error.value) and not runner.calls
