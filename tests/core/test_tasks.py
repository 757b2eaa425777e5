"""Generation requests: checks with one clear error each, defaults per DiT variant, seeds, repaint seams."""

from __future__ import annotations

import random

import pytest
import torch

from acestep_core.errors import AceStepError
from acestep_core.task_seams import repaint_seams, splice_mask, splice_waveform
from acestep_core.tasks import (
    AudioData,
    GenerationRequest,
    check_for_model,
    check_request,
    resolve_request,
    sampler_settings,
)

SOURCE = AudioData(torch.zeros(2, 48000), 48000)


@pytest.mark.parametrize("changes, words", [
    ({"duration": 5.0}, ["duration", "between 10 and 600"]),
    ({"duration": 600.5}, ["duration", "between 10 and 600"]),
    ({"duration": float("nan")}, ["duration", "finite"]),
    ({"batch_size": 9}, ["Batch size", "1 to 8"]),
    ({"batch_size": 0}, ["Batch size", "1 to 8"]),
    ({"task": "remix"}, ["Task 'remix'", "text2music"]),
    ({"task": "lego", "src_audio": SOURCE, "track_name": "kazoo"}, ["Track name 'kazoo'", "vocals"]),
    ({"task": "complete", "track_classes": ("drums", "tuba")}, ["Track name 'tuba'"]),
    ({"track_name": "vocals"}, ["track name", "lego and extract"]),
    ({"task": "lego", "src_audio": SOURCE, "track_classes": ("drums",)}, ["Track classes", "complete"]),
    ({"task": "cover"}, ["needs source audio", "--src"]),
    ({"task": "repaint", "audio_codes": "<|audio_code_1|>"}, ["Audio codes", "repaint"]),
    ({"task": "cover", "src_audio": SOURCE, "audio_codes": "<|audio_code_1|>"}, ["either source audio or audio codes"]),
    ({"src_audio": SOURCE}, ["text2music does not use source audio"]),
    ({"task": "repaint", "src_audio": SOURCE, "repaint_end": -5.0}, ["Repaint end", "-1"]),
    ({"task": "repaint", "src_audio": SOURCE, "repaint_start": 4.0, "repaint_end": 2.0}, ["empty", "after the start"]),
    ({"task": "repaint", "src_audio": SOURCE, "repaint_mode": "wild"}, ["Repaint mode 'wild'"]),
    ({"task": "repaint", "src_audio": SOURCE, "repaint_strength": 1.5}, ["repaint strength"]),
    ({"task": "repaint", "src_audio": SOURCE, "chunk_mask_mode": "soft"}, ["Chunk mask mode 'soft'"]),
    ({"cover_noise_strength": 0.3}, ["Cover noise strength", "text2music"]),
    ({"steps": 0}, ["steps"]),
    ({"shift": 9.0}, ["shift", "between 1 and 5"]),
    ({"audio_cover_strength": -0.1}, ["audio cover strength"]),
    ({"infer_method": "ddim"}, ["Infer method 'ddim'"]),
    ({"encode_mode": "random"}, ["Encode mode 'random'"]),
    ({"bpm": 120.5}, ["bpm"]),
    ({"audio_codes": 42}, ["audio_codes must be"]),
])
def test_each_bad_input_gives_one_clear_error(changes: dict, words: list[str]) -> None:
    with pytest.raises(AceStepError) as caught:
        check_request(GenerationRequest(**changes))
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), message


def test_good_requests_pass() -> None:
    for request in (
        GenerationRequest(caption="pop", duration=10, batch_size=8),
        GenerationRequest(task="cover", src_audio=SOURCE, duration=60),  # duration is ignored for covers
        GenerationRequest(task="cover", audio_codes=("<|audio_code_3|>", None)),
        GenerationRequest(task="repaint", src_audio=SOURCE, repaint_start=-5, repaint_end=0),
        GenerationRequest(task="extract", src_audio=SOURCE, track_name="BACKING_VOCALS"),
        GenerationRequest(task="complete", track_classes=("drums", "bass")),
    ):
        check_request(request)


@pytest.mark.parametrize("task", ["lego", "extract", "complete"])
@pytest.mark.parametrize("variant", ["turbo", "sft"])
def test_base_only_tasks_are_refused_on_turbo_and_sft(task: str, variant: str) -> None:
    request = GenerationRequest(task=task, src_audio=SOURCE)
    with pytest.raises(AceStepError, match=f"Task {task} needs an ACE-Step 1.5 base model.*is {variant}"):
        check_for_model(request, variant)
    check_for_model(request, "base")
    check_for_model(request, None)


def test_step_limits_per_family() -> None:
    check_for_model(GenerationRequest(steps=20), "turbo")
    with pytest.raises(AceStepError, match="1–20"):
        check_for_model(GenerationRequest(steps=21), "turbo")
    check_for_model(GenerationRequest(steps=200), "base")
    with pytest.raises(AceStepError, match="1–200"):
        check_for_model(GenerationRequest(steps=201), "sft")


@pytest.mark.parametrize("variant, steps, guidance", [("turbo", 8, 1.0), ("sft", 50, 7.0), ("base", 32, 7.0),
                                                      (None, 32, 7.0)])
def test_defaults_follow_the_variant(variant: str, steps: int, guidance: float) -> None:
    resolved = resolve_request(GenerationRequest(), variant, random.Random(0))
    assert (resolved.steps, resolved.shift, resolved.guidance_scale) == (steps, 3.0, guidance)
    chosen = resolve_request(GenerationRequest(steps=12, shift=2.0, guidance_scale=5.0), variant, random.Random(0))
    assert (chosen.steps, chosen.shift) == (12, 2.0)
    assert chosen.guidance_scale == (1.0 if variant == "turbo" else 5.0)


def test_seeds_follow_the_official_rules_and_are_recorded() -> None:
    single = resolve_request(GenerationRequest(seeds=7, batch_size=3), "turbo", random.Random(1))
    again = resolve_request(GenerationRequest(seeds=7, batch_size=3), "turbo", random.Random(1))
    other = resolve_request(GenerationRequest(seeds=7, batch_size=3), "turbo", random.Random(2))
    assert single.seeds[0] == 7 and len(set(single.seeds)) == 3  # a single seed fixes item 0 only
    assert single.seeds == again.seeds and single.seeds[1:] != other.seeds[1:]
    listed = resolve_request(GenerationRequest(seeds="5, -1, 9", batch_size=3), "turbo", random.Random(1))
    assert listed.seeds[0] == 5 and listed.seeds[2] == 9 and listed.seeds[1] >= 0
    assert resolve_request(single, "turbo", random.Random(3)) == single  # a resolved request is a fixed recipe
    assert single.retake_seeds is None
    retake = resolve_request(GenerationRequest(retake_variance=0.5, retake_seeds=11), "turbo", random.Random(1))
    assert retake.retake_seeds == (11,)


def test_audio_codes_broadcast_like_the_official_handler() -> None:
    code = "<|audio_code_1|>"
    assert GenerationRequest(audio_codes=code, batch_size=3).codes_per_item() == (code,) * 3
    assert GenerationRequest(audio_codes=(code,), batch_size=2).codes_per_item() == (code, code)
    assert GenerationRequest(audio_codes=(code, "<|audio_code_2|>"), batch_size=3).codes_per_item() == (
        code, "<|audio_code_2|>", None)
    assert GenerationRequest(audio_codes="  ", batch_size=2).codes_per_item() == (None, None)
    assert not GenerationRequest(audio_codes=("", None)).has_codes


@pytest.mark.parametrize("mode, strength, expected", [
    ("conservative", 0.9, (1.0, 25, 2400, True)),
    ("balanced", 0.5, (0.5, 12, 1200, True)),
    ("balanced", 0.1, (0.9, 22, 2160, True)),
    ("balanced", 0.3, (0.7, 18, 1679, True)),
    ("balanced", 0.7, (0.30000000000000004, 8, 720, True)),
    ("balanced", 0.8, (0.19999999999999996, 5, 479, True)),
    ("balanced", 1.0, (0.0, 0, 0, True)),  # not aggressive: a hard-cut splice remains
    ("balanced", 3.0, (0.0, 0, 0, True)),  # strength is clamped to [0, 1]
    ("aggressive", 0.5, (0.0, 0, 0, False)),
])
def test_repaint_mode_presets(mode: str, strength: float, expected: tuple) -> None:
    seams = repaint_seams(mode, strength)
    assert (seams.injection_ratio, seams.latent_crossfade_frames, seams.wav_crossfade_samples, seams.splice) == expected
    settings = sampler_settings(GenerationRequest(), seams.injection_ratio, seams.latent_crossfade_frames)
    assert settings.repaint_injection_ratio == seams.injection_ratio
    assert settings.repaint_crossfade_frames == seams.latent_crossfade_frames


def test_splice_mask_ramps_outside_the_region() -> None:
    mask = splice_mask(100, 40, 60, 4)
    assert mask[40:60].eq(1).all() and mask[:36].eq(0).all() and mask[64:].eq(0).all()
    assert mask[36:40].tolist() == pytest.approx([k / 5 for k in range(1, 5)])
    assert mask[60:64].tolist() == pytest.approx([k / 5 for k in range(4, 0, -1)])
    clipped = splice_mask(100, 2, 99, 4)  # ramps are cut at the ends, their steps follow the cut length
    assert clipped[:2].tolist() == pytest.approx([1 / 3, 2 / 3]) and clipped[99] == pytest.approx(0.5)


def test_splice_keeps_the_source_outside_and_the_generated_tail() -> None:
    generated = torch.randn(2, 2, 120)
    source = torch.randn(2, 100)
    out = splice_waveform(generated, source, 40 / 48000, 60 / 48000, 4)
    assert torch.equal(out[..., :36], source[:, :36].expand(2, -1, -1))
    assert torch.equal(out[..., 64:100], source[:, 64:100].expand(2, -1, -1))
    assert torch.equal(out[..., 40:60], generated[..., 40:60])
    assert torch.equal(out[..., 100:], generated[..., 100:])  # past the source: as generated
    blended = 0.2 * generated[..., 36] + 0.8 * source[:, 36]
    torch.testing.assert_close(out[..., 36], blended)
    assert splice_waveform(generated, source, 0.0, 1.0, 4) is generated  # whole range: nothing to keep
