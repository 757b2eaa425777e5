"""The planner on a tiny Qwen3 LM (real vocabulary and audio-code tokens, random weights): exact code
counts, seeds, batches, the KV cache against a plain loop, guidance rows, progress/cancel and errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from acestep_core.errors import AceStepError
from acestep_core.planner import PlannerLM, PlannerSettings, PlanRequest, plan_song
from acestep_core.planner.constraint import ConstraintSpec
from acestep_core.planner.engine import Job, generate, left_pad
from acestep_core.planner.model import KVDecoder
from acestep_core.planner.sampling import Sampling
from acestep_core.vae_tiling import Cancelled
from benchmarks.bench_planner import PlainDecoder  # the no-cache loop the benchmark times is the reference here
from tests.core.tiny_lm import lm_tokenizer, single_thread, tiny_lm  # noqa: F401 (fixture)

FAST = PlannerSettings(max_duration=12, max_text_tokens=120)
REQUEST = PlanRequest(caption="sad indie folk", lyrics="[Verse]\nla la", use_cot_caption=False)


@pytest.fixture(scope="module")
def lm() -> PlannerLM:
    return PlannerLM(tiny_lm(0), lm_tokenizer())


def test_exact_code_count_with_a_user_duration(lm: PlannerLM) -> None:
    blueprint = plan_song(lm, replace(REQUEST, duration=11.5, batch_size=2, seeds=[1, 2]), FAST)
    for item in blueprint.items:
        assert len(item.codes) == int(11.5 * 5)
        assert all(0 <= code < 64000 for code in item.codes)
        assert item.metadata["duration"] == 11 and "duration: 11\n" in item.cot
        assert item.duration == 11.5


def test_codes_follow_the_duration_the_lm_chose(lm: PlannerLM) -> None:
    item = plan_song(lm, replace(REQUEST, seeds=[3]), FAST).items[0]
    assert 10 <= item.metadata["duration"] <= 12
    assert len(item.codes) == item.metadata["duration"] * 5
    assert item.lm_text.startswith("<think>\nbpm:") and item.lm_text.endswith("<|im_end|>")


def test_same_seed_same_plan_and_items_remade_alone(lm: PlannerLM) -> None:
    batch = plan_song(lm, replace(REQUEST, batch_size=3, seeds=[5, 6, 7]), FAST)
    again = plan_song(lm, replace(REQUEST, batch_size=3, seeds=[5, 6, 7]), FAST)
    alone = plan_song(lm, replace(REQUEST, seeds=[6]), FAST)
    assert batch.items == again.items
    assert alone.items[0] == batch.items[1]
    assert len({item.codes for item in batch.items}) == 3


def test_shared_cot_gives_one_metadata_for_the_batch(lm: PlannerLM) -> None:
    blueprint = plan_song(lm, replace(REQUEST, batch_size=2, seeds=[8, 9]), replace(FAST, share_cot=True))
    first, second = blueprint.items
    assert first.metadata == second.metadata and first.cot == second.cot
    assert first.codes != second.codes


def test_all_metas_given_skips_phase_one(lm: PlannerLM) -> None:
    request = replace(REQUEST, bpm=90, keyscale="e minor", timesignature="3/4", duration=10, seeds=[4])
    item = plan_song(lm, request, FAST).items[0]
    assert item.lm_text == ""
    assert item.metadata == {"bpm": 90, "keyscale": "E minor", "timesignature": "3", "duration": 10}
    assert item.cot == "<think>\nbpm: 90\nduration: 10\nkeyscale: E minor\ntimesignature: 3\n</think>"
    assert len(item.codes) == 50


def _jobs(lm: PlannerLM) -> list[Job]:
    encode = lm.encode
    cot = ConstraintSpec("cot", True, ("bpm", "duration", "keyscale", "language", "timesignature"), {"bpm": "100"},
                         max_duration=12)
    codes = ConstraintSpec("codes", False, (), {}, target_codes=7)
    long_prompt = encode("<|im_start|>user\n# Caption\na long caption for padding\n<|im_end|>\n<think>\n</think>\n\n")
    return [Job(encode("<|im_start|>user\nhi"), encode("<|im_start|>user\nNO USER INPUT"), cot, 60, 11),
            Job(long_prompt, encode("<|im_start|>user\nNO USER INPUT</think>\n\n"), codes, 20, 12),
            Job(encode("x</think>\n\n"), encode("</think>\n\n"), replace(codes, target_codes=3), 20, 13)]


@pytest.mark.parametrize("sampling", [Sampling(temperature=0.0, cfg_scale=2.0),
                                      Sampling(temperature=0.9, cfg_scale=1.5, top_k=500, top_p=0.9,
                                               repetition_penalty=1.2)], ids=["greedy", "sampled"])
def test_kv_cache_matches_a_plain_loop(lm: PlannerLM, sampling: Sampling) -> None:
    jobs = _jobs(lm)
    cached = generate(KVDecoder(lm.model, lm.tables), lm.tables, jobs, sampling)
    plain = generate(PlainDecoder(lm.model, lm.tables), lm.tables, jobs, sampling)
    assert cached == plain
    assert [len(out) for out in cached[1:]] == [8, 4]  # exact codes, then EOS; rows left the batch early


def test_padded_guidance_rows_score_like_single_rows(lm: PlannerLM) -> None:
    cond, uncond = lm.encode("<|im_start|>user\n# Caption\nslow piano\n"), lm.encode("NO USER INPUT")
    ids, mask = left_pad([cond, uncond], lm.tables.pad)
    together = KVDecoder(lm.model, lm.tables)
    together.start(ids, mask)
    token = torch.tensor([lm.tables.newline, lm.tables.newline])
    together.feed(token)
    for row, prompt in enumerate((cond, uncond)):
        alone = KVDecoder(lm.model, lm.tables)
        alone.start(torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long))
        alone.feed(token[:1])
        torch.testing.assert_close(together.logits(False)[row], alone.logits(False)[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.logits(True)[row], alone.logits(True)[0], rtol=1e-4, atol=1e-5)


def test_tied_output_layer_and_codes_only_logits(lm: PlannerLM) -> None:
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight
    decoder = KVDecoder(lm.model, lm.tables)
    decoder.start(torch.tensor([lm.encode("hello")]), torch.ones(1, 1, dtype=torch.long))
    full, codes = decoder.logits(False)[0], decoder.logits(True)[0]
    span = lm.tables.code_slice
    torch.testing.assert_close(codes[:-1], full[span])
    torch.testing.assert_close(codes[-1], full[lm.tables.eos])


def test_progress_reports_and_cancel(lm: PlannerLM) -> None:
    seen: list[tuple[str, int, int]] = []
    plan_song(lm, replace(REQUEST, duration=10, seeds=[1]), FAST, progress=lambda *report: seen.append(report))
    stages = [stage for stage, _, _ in seen]
    assert "plan-cot" in stages and "plan-codes" in stages
    done, total = seen[-1][1:]
    assert seen[-1][0] == "plan-codes" and done == total == 51
    with pytest.raises(Cancelled):
        plan_song(lm, replace(REQUEST, duration=10, seeds=[1]), FAST, cancel=lambda: True)


@pytest.mark.parametrize("field, value, words", [
    ("bpm", 301, "30 to 300"), ("bpm", 12.5, "30 to 300"), ("bpm", "fast", "not a number"),
    ("keyscale", "H major", "A–G"), ("keyscale", "C dorian", "major or minor"),
    ("timesignature", "5/4", "2, 3, 4 or 6"), ("duration", 5, "10–12"), ("duration", 13, "10–12"),
    ("language", "xx", "use one of"), ("batch_size", 0, "batch_size"),
])
def test_user_values_outside_what_the_lm_knows_are_refused(lm: PlannerLM, field: str, value, words: str) -> None:
    with pytest.raises(AceStepError) as error:
        plan_song(lm, replace(REQUEST, **{field: value}), FAST)
    assert words in str(error.value)
    if field != "batch_size":
        assert field in str(error.value)


def test_settings_are_checked() -> None:
    with pytest.raises(AceStepError, match="max_duration"):
        PlannerSettings(max_duration=900)
    with pytest.raises(AceStepError, match="temperature"):
        PlannerSettings(temperature=-0.1)
