"""Blueprints: the text modes on the tiny LM, JSON save/load, the hand-off to the DiT, and loading the LM
from an official folder and from a ComfyUI file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_core.checkpoints import load_dit
from acestep_core.errors import AceStepError
from acestep_core.planner import (
    Blueprint, PlanItem, PlannerLM, PlannerSettings, PlanRequest, apply_blueprint, generation_requests, item_hints,
    load_blueprint, load_planner, plan_format, plan_sample, plan_song, plan_understand, planner_phases,
    random_example, save_blueprint, text_request,
)
from acestep_core.tasks import GenerationRequest
from acestep_core.text.prompts import COVER_INSTRUCTION, TextRequest, build_prompts
from tests.core.tiny_lm import (  # noqa: F401 (fixture)
    lm_tokenizer, single_thread, tiny_lm, tiny_weights, write_comfy_lm, write_lm_folder,
    write_plain_tokenizer_folder,
)

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"
TEXT = PlannerSettings(top_p=1.0, max_duration=12, max_text_tokens=160)
FAST = PlannerSettings(max_duration=12, max_text_tokens=160)


@pytest.fixture(scope="module")
def lm() -> PlannerLM:
    return PlannerLM(tiny_lm(0), lm_tokenizer())


@pytest.fixture(scope="module")
def song(lm: PlannerLM) -> Blueprint:
    return plan_song(lm, PlanRequest(caption="lofi", lyrics="[Instrumental]", duration=10, use_cot_caption=False,
                                     batch_size=2, seeds=[1, 2]), FAST)


def test_simple_mode_injects_the_language_and_keeps_the_flag(lm: PlannerLM) -> None:
    blueprint = plan_sample(lm, "a soft Bengali love song", language="bn", instrumental=True, seeds=[3],
                            settings=TEXT)
    item = blueprint.items[0]
    assert blueprint.mode == "sample" and item.metadata["language"] == "bn" and item.language == "bn"
    assert item.metadata["instrumental"] is True and item.lyrics
    assert list(item.metadata)[:7] == ["bpm", "caption", "duration", "genres", "keyscale", "language",
                                       "timesignature"]


def test_format_keeps_the_user_values(lm: PlannerLM) -> None:
    item = plan_format(lm, "", "", bpm=128, keyscale="a minor", language="de", seeds=[4], settings=TEXT).items[0]
    assert item.bpm == 128 and item.keyscale == "A minor" and item.language == "de"
    assert item.metadata["bpm"] == 128 and item.metadata["keyscale"] == "A minor"
    assert "keyscale: A minor\n" in item.lm_text and "language: de\n" in item.lm_text


def test_understand_keeps_the_codes_and_random_example_has_none(lm: PlannerLM) -> None:
    codes = (0, 1, 63999, 12)
    item = plan_understand(lm, codes, seeds=[5], settings=TEXT).items[0]
    assert item.codes == codes and item.metadata and "</think>" in item.lm_text
    example = random_example(lm, seeds=[6], settings=TEXT).items[0]
    assert example.codes == () and example.metadata
    with pytest.raises(AceStepError, match="63999"):
        plan_understand(lm, (64000,), seeds=[5], settings=TEXT)


def test_blueprint_json_round_trip_and_no_overwrite(song: Blueprint, tmp_path: Path) -> None:
    path = save_blueprint(song, tmp_path / "plans" / "song.json")
    loaded = load_blueprint(path)
    assert loaded == song
    assert json.loads(path.read_text())["items"][0]["codes"] == list(song.items[0].codes)
    with pytest.raises(AceStepError, match="already exists"):
        save_blueprint(song, path)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(format="other"), "not an ACE-Step blueprint"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(items=[]), "no plan items"),
    (lambda d: d["items"][0].update(codes=[1, 70000]), "0 … 63999"),
    (lambda d: d["items"][0].pop("seed"), "seed"),
    (lambda d: d.update(mode="dream"), "mode"),
])
def test_damaged_blueprints_are_refused(song: Blueprint, tmp_path: Path, change, words: str) -> None:
    data = song.to_dict()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AceStepError, match=words):
        load_blueprint(path)


def test_handoff_per_item_requests_and_prompts(song: Blueprint) -> None:
    requests = generation_requests(GenerationRequest(caption="ignored", guidance_scale=5.0), song)
    for request, item in zip(requests, song.items):
        assert request.seeds == (item.seed,) and request.batch_size == 1 and request.guidance_scale == 5.0
        assert request.audio_codes == item.codes_text and request.duration == 10.0
        assert request.bpm == item.bpm and request.language == item.language and request.caption == "lofi"
    prompts = build_prompts(text_request(TextRequest(), song.items[0]))
    caption = prompts.items[0].caption
    assert COVER_INSTRUCTION in caption and "- duration: 10 seconds\n" in caption
    assert f"- keyscale: {song.items[0].keyscale}\n" in caption
    assert prompts.items[0].lyrics.startswith(f"# Languages\n{song.items[0].language}\n")


def test_language_the_lm_chose_reaches_the_dit(song: Blueprint) -> None:
    item = song.items[0]
    assert item.language == item.metadata["language"] != "unknown"


def test_one_batch_request_only_when_items_share_their_text(lm: PlannerLM) -> None:
    differing = Blueprint("think", (PlanItem(seed=1, bpm=90), PlanItem(seed=2, bpm=100)))
    with pytest.raises(AceStepError, match="differ in bpm"):
        apply_blueprint(GenerationRequest(), differing)
    shared = plan_song(lm, PlanRequest(caption="lofi", duration=10, use_cot_caption=False, batch_size=2,
                                       seeds=[1, 2]), replace(FAST, share_cot=True))
    request = apply_blueprint(GenerationRequest(), shared)
    assert request.batch_size == 2 and request.seeds == (1, 2)
    assert request.audio_codes == tuple(item.codes_text for item in shared.items)


def test_codes_become_the_official_hints() -> None:
    golden = load_file(GOLDEN / "tiny_2b" / "audio_detokenizer.safetensors")
    model = load_dit(GOLDEN / "tiny_2b").model
    item = PlanItem(seed=0, codes=tuple(int(c) for c in golden["input.codes"].flatten()))
    torch.testing.assert_close(item_hints(model, item), golden["output.lm_hints_25hz"], rtol=1e-5, atol=1e-6)
    with pytest.raises(AceStepError, match="no audio codes"):
        item_hints(model, PlanItem(seed=0))


@pytest.mark.parametrize("task, thinking, use_cot, has_codes, expected", [
    ("text2music", True, True, False, (True, True)), ("text2music", True, True, True, (True, False)),
    ("text2music", False, True, False, (True, False)), ("text2music", False, False, False, (False, False)),
    ("cover", True, True, False, (False, False)), ("repaint", True, True, False, (False, False)),
    ("lego", True, True, False, (True, False)), ("complete", True, False, False, (False, False)),
])
def test_when_the_lm_runs_per_task(task, thinking, use_cot, has_codes, expected) -> None:
    assert planner_phases(task, thinking, use_cot, has_codes) == expected


@pytest.mark.parametrize("prefix", ["", "model."])
def test_load_official_folder(tmp_path: Path, prefix: str, lm: PlannerLM) -> None:
    folder = write_lm_folder(tmp_path / "acestep-5Hz-lm-0.6B", seed=0, prefix=prefix)
    loaded = load_planner(folder)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    request = PlanRequest(caption="x", duration=10, use_cot_caption=False, seeds=[9])
    assert plan_song(loaded, request, FAST).items == plan_song(lm, request, FAST).items


def test_load_comfy_file_with_a_plain_qwen_tokenizer(tmp_path: Path) -> None:
    file = write_comfy_lm(tmp_path / "text_encoders" / "qwen_0.6b_ace15.safetensors")
    with pytest.raises(AceStepError, match="tokenizer_folder"):
        load_planner(file)
    loaded = load_planner(file, tokenizer_folder=write_plain_tokenizer_folder(tmp_path / "tok"))
    assert loaded.tables.code_slice == slice(151669, 215669)
    assert loaded.encode("<|audio_code_5|>") == (151674,)


def test_untied_output_layer_is_used(lm: PlannerLM) -> None:
    from acestep_core.planner import build_lm

    weights, config = tiny_weights(0)
    head = torch.randn_like(weights["embed_tokens.weight"])
    model = build_lm(config, weights | {"lm_head.weight": head})
    assert torch.equal(model.lm_head.weight, head)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    with pytest.raises(AceStepError, match="do not fit"):
        build_lm(config, {k: v for k, v in weights.items() if k != "norm.weight"})
