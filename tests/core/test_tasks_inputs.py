"""Task plans and DiT inputs per task (tasks.md §3–§7), on small tensors without any model."""

from __future__ import annotations

import pytest
import torch

from acestep_core.errors import AceStepError
from acestep_core.task_inputs import (
    TaskPlan,
    build_dit_inputs,
    chunk_masks,
    lm_hints,
    pack_references,
    pad_source,
    parse_audio_codes,
    plan_task,
    silence_frames,
    src_latents,
    target_latents,
    text_request,
)
from acestep_core.tasks import AudioData, GenerationRequest
from acestep_core.text.encoder import TextConditioning
from acestep_core.text.prompts import build_prompts

SR = 48000
SOURCE = AudioData(torch.zeros(2, SR), SR)  # only the request's shape matters here; lengths go to plan_task


def plan(samples: int | None = None, **changes) -> TaskPlan:
    return plan_task(GenerationRequest(**changes), samples)


def codes(n: int, first: int = 0) -> str:
    return "".join(f"<|audio_code_{first + i}|>" for i in range(n))


@pytest.mark.parametrize("duration, frames", [(10.0, 250), (60.04, 1500), (33.33, 832), (600.0, 15000), (None, 3000)])
def test_text2music_length_comes_from_the_duration(duration: float, frames: int) -> None:
    p = plan(duration=duration)
    assert p.frames == frames and p.item_frames == (frames,) and p.region is None and p.source_samples is None
    assert p.is_covers == (False,) and p.dit_task == "text2music"


def test_unknown_duration_is_120_s_but_the_metas_say_30() -> None:
    request = GenerationRequest(caption="x")
    assert plan_task(request, None).seconds == 120.0
    assert "- duration: 30 seconds" in build_prompts(text_request(request, plan_task(request, None))).metas


def test_audio_codes_set_the_length_and_turn_text2music_into_cover() -> None:
    p = plan(duration=30, audio_codes=(codes(40), codes(10, 7)), batch_size=2)
    assert p.dit_task == "cover" and p.is_covers == (True, True)
    assert p.item_frames == (200, 50) and p.frames == 200
    assert p.codes[1] == tuple(range(7, 17))
    short = plan(audio_codes=codes(10))
    assert short.frames == 128 and short.item_frames == (50,)  # at least 128 frames
    request = GenerationRequest(duration=30, audio_codes=codes(40))
    prompts = build_prompts(text_request(request, plan_task(request, None)))
    assert prompts.task == "cover" and "- duration: 30 seconds" in prompts.metas
    cover = GenerationRequest(task="cover", duration=90, audio_codes=codes(40))
    assert "- duration: 30 seconds" in build_prompts(text_request(cover, plan_task(cover, None))).metas


def test_codes_are_parsed_and_clamped() -> None:
    assert parse_audio_codes("<|audio_code_5|> junk <|audio_code_70000|>") == (5, 63999)
    with pytest.raises(AceStepError, match="no <\\|audio_code_N\\|> token"):
        parse_audio_codes("1 2 3")


def test_source_tasks_take_the_source_length() -> None:
    for task, covers in (("cover", True), ("cover-nofsq", False), ("extract", False), ("complete", False)):
        p = plan(10 * SR + 1000, task=task, src_audio=SOURCE, duration=60)
        assert p.item_frames == (250,) and p.frames == 250 and p.region is None and p.pad_left == p.pad_right == 0
        assert p.is_covers == (covers,)
    short = plan(3 * SR, task="cover", src_audio=SOURCE)
    assert short.item_frames == (75,) and short.frames == 128


def test_right_extend_worked_example() -> None:
    request = GenerationRequest(task="repaint", src_audio=SOURCE, repaint_start=60, repaint_end=90)
    p = plan_task(request, 60 * SR)
    assert (p.pad_left, p.pad_right, p.frames) == (0, 30 * SR, 2250)
    assert p.frame_range == (1500, 2250) and p.is_covers == (False,)
    assert "- duration: 60 seconds" in build_prompts(text_request(request, p)).metas  # the unpadded source
    extend = plan(60 * SR, task="extend", src_audio=SOURCE, repaint_start=60, repaint_end=90)
    assert extend.frame_range == (1500, 2250) and extend.dit_task == "repaint"


def test_left_extend_moves_the_region_into_the_padded_timeline() -> None:
    p = plan(60 * SR, task="extend", src_audio=SOURCE, repaint_start=-10, repaint_end=5)
    assert (p.pad_left, p.pad_right, p.frames) == (10 * SR, 0, 1750)
    assert (p.region.start, p.region.end) == (0.0, 15.0) and p.frame_range == (0, 375)
    whole = plan(60 * SR, task="repaint", src_audio=SOURCE, repaint_start=-10)
    assert whole.frame_range == (0, 1750)  # end −1: everything is regenerated


def test_repaint_region_frames_floor_seconds_times_25() -> None:
    p = plan(60 * SR, task="repaint", src_audio=SOURCE, repaint_start=20.03, repaint_end=30.07)
    assert p.frame_range == (500, 751) and p.frames == 1500
    lego = plan(8 * SR, task="lego", src_audio=SOURCE, track_name="drums")
    assert lego.frame_range == (0, 200) and lego.frames == 200  # default: the whole source


@pytest.mark.parametrize("changes, words", [
    ({"repaint_start": 60}, ["at or after the end of the source", "also give an end"]),
    ({"repaint_start": 70, "repaint_end": 90}, ["after the end of the source", "gap"]),
    ({"repaint_start": -10, "repaint_end": 0.0}, None),  # a left extend that touches the source: fine
    ({"repaint_start": 0, "repaint_end": 700}, ["700", "limit is 600"]),
    ({"repaint_start": -560, "repaint_end": 10}, ["620", "limit is 600"]),
])
def test_ranges_outside_the_audio_are_refused(changes: dict, words: list[str] | None) -> None:
    request = GenerationRequest(task="repaint", src_audio=SOURCE, **changes)
    if words is None:
        assert plan_task(request, 60 * SR).frame_range == (0, 250)
        return
    with pytest.raises(AceStepError) as caught:
        plan_task(request, 60 * SR)
    for word in words:
        assert word in str(caught.value)


def test_source_length_limits() -> None:
    with pytest.raises(AceStepError, match="shorter than one latent frame"):
        plan(1000, task="cover", src_audio=SOURCE)
    with pytest.raises(AceStepError, match="limit is 600"):
        plan(601 * SR, task="cover", src_audio=SOURCE)
    with pytest.raises(AceStepError, match="Extend needs a range past an end"):
        plan(60 * SR, task="extend", src_audio=SOURCE, repaint_start=10, repaint_end=20)


def test_silence_frames_tile_a_short_silence_latent() -> None:
    silence = torch.randn(1, 7, 3)
    assert torch.equal(silence_frames(silence, 5), silence[0, :5])
    tiled = silence_frames(silence, 17)
    assert tiled.shape == (17, 3) and torch.equal(tiled[7:14], silence[0]) and torch.equal(tiled[14:], silence[0, :3])


def test_target_latents_and_src_latents_per_task() -> None:
    silence = torch.randn(1, 50, 4)
    source = torch.randn(130, 4)
    p = plan(130 * 1920, task="repaint", src_audio=SOURCE, repaint_start=1.0, repaint_end=2.0)
    target = target_latents(p, silence, source, [None])
    assert torch.equal(target[0], source)
    holed = src_latents(p, target, True, silence)
    assert p.frame_range == (25, 50)
    assert torch.equal(holed[0, 25:50], silence_frames(silence, 130)[25:50])  # silence frames f0..f1−1
    assert torch.equal(holed[0, :25], source[:25]) and torch.equal(holed[0, 50:], source[50:])
    lego = plan(130 * 1920, task="lego", src_audio=SOURCE, repaint_start=1.0, repaint_end=2.0)
    assert torch.equal(src_latents(lego, target, True, silence)[0], source)  # lego keeps the source
    text = plan(duration=10)
    empty = target_latents(text, silence, None, [None])
    assert torch.equal(src_latents(text, empty, False, silence)[0], silence_frames(silence, 250))
    short = plan(60 * 1920, task="cover", src_audio=SOURCE)
    padded = target_latents(short, silence, source[:60], [None])
    assert padded.shape == (1, 128, 4) and torch.equal(padded[0, 60:], silence_frames(silence, 68))


def test_chunk_masks_auto_is_all_ones_even_for_repaint() -> None:
    auto = plan(130 * 1920, task="repaint", src_audio=SOURCE, repaint_start=1.0, repaint_end=2.0)
    assert chunk_masks(auto, 4, torch.float32).eq(1).all()
    explicit = plan(130 * 1920, task="repaint", src_audio=SOURCE, repaint_start=1.0, repaint_end=2.0,
                    chunk_mask_mode="explicit")
    masks = chunk_masks(explicit, 4, torch.float32)
    assert masks.shape == (1, 130, 4) and masks[0, 25:50].eq(1).all()
    assert masks[0, :25].eq(0).all() and masks[0, 50:].eq(0).all()


def test_lm_hints_are_padded_with_silence_or_cropped() -> None:
    silence = torch.randn(1, 300, 4)
    p = plan(audio_codes=(codes(30), None, codes(20)), batch_size=3, duration=10)
    assert p.frames == 250 and p.item_frames == (150, 250, 100)
    hints = [torch.randn(150, 4), None, torch.randn(100, 4)]
    packed = lm_hints(p, hints, silence)
    assert torch.equal(packed[0, :150], hints[0]) and torch.equal(packed[0, 150:], silence[0, :100])
    assert torch.equal(packed[1], silence[0, :250])  # an item without codes: silence hints
    assert lm_hints(plan(duration=10), [None], silence) is None


def test_references_are_packed_per_item_with_their_order() -> None:
    silence = torch.randn(1, 800, 4)
    packed, order = pack_references([], 3, silence)
    assert packed.shape == (3, 750, 4) and order.tolist() == [0, 1, 2] and torch.equal(packed[2], silence[0, :750])
    clips = [torch.randn(750, 4), torch.randn(750, 4)]
    packed, order = pack_references(clips, 2, silence)
    assert order.tolist() == [0, 0, 1, 1] and torch.equal(packed[1], clips[1]) and torch.equal(packed[2], clips[0])


def test_pad_source_adds_outpaint_zeros() -> None:
    p = plan(SR, task="extend", src_audio=SOURCE, repaint_start=-0.5, repaint_end=2.0)
    waveform = torch.ones(2, SR)
    padded = pad_source(waveform, p)
    assert padded.shape == (2, p.padded_samples) == (2, 5 * SR // 2)
    assert padded[:, : SR // 2].eq(0).all() and padded[:, SR // 2: 3 * SR // 2].eq(1).all()
    assert padded[:, 3 * SR // 2:].eq(0).all()


def _text(batch: int, non_cover: bool) -> TextConditioning:
    mask = torch.ones(batch, 5, dtype=torch.bool)
    return TextConditioning(torch.randn(batch, 5, 6), mask, torch.zeros(batch, 5), torch.randn(batch, 3, 6),
                            torch.ones(batch, 3, dtype=torch.bool), torch.zeros(batch, 3),
                            torch.randn(batch, 5, 6) if non_cover else None, mask if non_cover else None)


def test_build_dit_inputs_for_a_repaint_batch() -> None:
    silence = torch.randn(1, 60, 4)  # shorter than the song: the DiT gets a tiled copy
    p = plan(130 * 1920, task="repaint", src_audio=SOURCE, repaint_start=1.0, repaint_end=2.0, batch_size=2)
    target = target_latents(p, silence, torch.randn(130, 4), [None, None])
    built = build_dit_inputs(p, _text(2, True), target, True, [None, None], pack_references([], 2, silence), silence)
    dit = built.dit
    assert dit.src_latents.shape == (2, 130, 4) and dit.chunk_masks.shape == (2, 130, 4)
    assert dit.is_covers.tolist() == [False, False] and dit.precomputed_lm_hints_25Hz is None
    assert dit.silence_latent.shape == (1, 130, 4) and torch.equal(dit.silence_latent[0], silence_frames(silence, 130))
    assert dit.attention_mask.eq(1).all() and dit.text_attention_mask.dtype == torch.float32
    assert dit.non_cover_text_hidden_states is not None
    assert built.repaint.mask[:, 25:50].all() and not built.repaint.mask[:, :25].any()
    assert torch.equal(built.repaint.clean_latents, target)
    cover = plan(130 * 1920, task="cover", src_audio=SOURCE)
    built = build_dit_inputs(cover, _text(1, False), target[:1], True, [None], pack_references([], 1, silence), silence)
    assert built.repaint is None and built.dit.is_covers.tolist() == [True]
