"""Every task end to end through `pipeline.generate` on the tiny official-layout models (CPU).

Sources are 3 s (the batch is then the 128-frame minimum), text2music runs 10 s, and most runs take 2–4
steps: the tiny VAE at 48 kHz is what costs time here, not the DiT.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest
import soundfile as sf
import torch

from acestep_core.audio import Cancelled
from acestep_core.errors import AceStepError
from acestep_core.pipeline import encode_source, generate, load_audio_inputs
from acestep_core.pipeline_models import Models, load_models
from acestep_core.task_inputs import plan_task
from acestep_core.tasks import AudioData, GenerationRequest, resolve_request
from tests.core.tiny_models import write_tiny_models

SR = 48000
PEAK = 10 ** (-1 / 20)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def turbo(models_dir: Path) -> Models:
    return load_models(models_dir)


@pytest.fixture(scope="module")
def base(models_dir: Path) -> Models:
    return load_models(models_dir, dit="acestep-v15-base")


def song(seconds: float = 3.0, rate: int = 44100, seed: int = 0) -> AudioData:
    """A stereo chord with a little noise, at 44.1 kHz so that loading resamples it."""
    t = torch.arange(int(seconds * rate)) / rate
    noise = torch.randn(2, t.numel(), generator=torch.Generator().manual_seed(seed))
    tone = sum(torch.sin(2 * math.pi * f * t) for f in (220.0, 277.2, 329.6)) / 6
    return AudioData(torch.stack([tone, 0.8 * tone]) + 0.02 * noise, rate)


def run(models: Models, **fields) -> object:
    fields.setdefault("seeds", 7)
    fields.setdefault("steps", 2)
    return generate(GenerationRequest(caption="warm synth pop", lyrics="[verse]\nla la", **fields), models)


def check_song(result, batch: int, frames: int, normalized: bool = True) -> None:
    assert result.audio.shape == (batch, 2, frames * 1920) and result.audio.dtype == torch.float32
    assert result.sample_rate == SR and torch.isfinite(result.audio).all()
    assert result.latents.shape == (batch, frames, 8) and len(result.seeds) == batch
    if normalized:
        torch.testing.assert_close(result.audio.abs().amax(dim=(1, 2)), torch.full((batch,), PEAK))


def test_text2music_batch_records_everything_to_reproduce_it(turbo: Models) -> None:
    stages = []
    request = GenerationRequest(caption="lo-fi beat", duration=10, seeds=(1, 2), batch_size=2, steps=3,
                                audio_cover_strength=0.5)  # the text-only branch slices a tiled silence latent
    result = generate(request, turbo, progress=lambda stage, done, total: stages.append((stage, done, total)))
    check_song(result, 2, 250)
    assert turbo.silence_latent.shape[1] < 250 and result.prompts.items[0].non_cover_caption is not None
    assert result.seeds == (1, 2) and result.request.seeds == (1, 2)
    assert (result.request.steps, result.request.shift, result.request.guidance_scale) == (3, 3.0, 1.0)
    assert result.schedule.family == "turbo" and result.schedule.num_steps == 3
    assert set(result.model_ids) == {"dit", "vae", "text_encoder"} and "turbo" in result.model_ids["dit"]
    assert "Fill the audio semantic mask" in result.prompts.items[0].caption
    assert [s for s in stages if s[0] == "sample"] == [("sample", i, 3) for i in (1, 2, 3)]
    assert stages[-1][0] == "decode"
    assert not torch.equal(result.audio[0], result.audio[1])  # different seeds differ


def test_same_seed_same_audio_and_other_seed_other_audio(turbo: Models) -> None:
    first = run(turbo, task="cover", src_audio=song(), seeds=None)  # a random seed, recorded in the result
    again = run(turbo, task="cover", src_audio=song(), seeds=first.seeds[0])
    other = run(turbo, task="cover", src_audio=song(), seeds=first.seeds[0] + 1)
    assert torch.equal(first.audio, again.audio)
    assert not torch.equal(first.audio, other.audio)


def test_reference_pieces_follow_the_seed() -> None:
    long_reference = AudioData(torch.randn(2, 40 * SR, generator=torch.Generator().manual_seed(3)) * 0.1, SR)

    def clips(seed: int) -> tuple[torch.Tensor, ...]:
        request = resolve_request(GenerationRequest(reference_audio=(long_reference,), seeds=seed), "turbo",
                                  random.Random(0))
        return load_audio_inputs(request).references

    assert clips(1)[0].shape == (2, 30 * SR)
    assert torch.equal(clips(1)[0], clips(1)[0]) and not torch.equal(clips(1)[0], clips(2)[0])


@pytest.mark.parametrize("task, fields", [
    ("cover", {}),
    ("cover-nofsq", {}),
    ("cover", {"audio_cover_strength": 0.5, "cover_noise_strength": 0.3, "steps": 4}),
    ("repaint", {"repaint_start": 1.0, "repaint_end": 2.0}),
    ("repaint", {"repaint_start": 0.5, "repaint_end": 2.5, "chunk_mask_mode": "explicit",
                 "repaint_mode": "aggressive"}),
])
def test_source_tasks_on_turbo(turbo: Models, task: str, fields: dict) -> None:
    result = run(turbo, task=task, src_audio=song(), duration=60, **fields)
    check_song(result, 1, 128)
    assert result.plan.source_samples == 3 * SR and result.plan.dit_task == task
    assert "- duration: 3 seconds" in result.prompts.metas
    if "audio_cover_strength" in fields:
        assert result.prompts.items[0].non_cover_caption is not None


def _target(models: Models, request: GenerationRequest) -> torch.Tensor:
    resolved = resolve_request(request, models.variant, random.Random(0))
    source = load_audio_inputs(resolved).source
    plan = plan_task(resolved, source.shape[-1])
    return encode_source(models, resolved, plan, source)[0]


def test_repaint_keeps_the_source_outside_the_region(turbo: Models) -> None:
    request = GenerationRequest(task="repaint", src_audio=song(6.0), repaint_start=2.0, repaint_end=3.0, seeds=5,
                                steps=4, repaint_mode="conservative", normalize=False)
    result = generate(request, turbo)
    check_song(result, 1, 150, normalized=False)
    assert result.plan.frame_range == (50, 75)
    target = _target(turbo, request)
    # conservative: 25-frame latent crossfade, then exactly the clean source latents
    assert torch.equal(result.latents[0, :25], target[0, :25]) and torch.equal(result.latents[0, 100:], target[0, 100:])
    assert not torch.equal(result.latents[0, 50:75], target[0, 50:75])
    source = load_audio_inputs(resolve_request(request, "turbo", random.Random(0))).source
    fade = 2400  # 0.05 s waveform crossfade
    assert torch.equal(result.audio[0, :, : 2 * SR - fade], source[:, : 2 * SR - fade])
    assert torch.equal(result.audio[0, :, 3 * SR + fade:], source[:, 3 * SR + fade:])
    assert not torch.equal(result.audio[0, :, 2 * SR: 3 * SR], source[:, 2 * SR: 3 * SR])
    wild = generate(dataclasses.replace(request, repaint_mode="aggressive"), turbo)
    assert not torch.equal(wild.audio[0, :, : SR], source[:, : SR])  # aggressive: no splice


def test_extend_adds_time_and_keeps_the_source(turbo: Models) -> None:
    request = GenerationRequest(task="extend", src_audio=song(), repaint_start=3.0, repaint_end=6.0, seeds=3,
                                steps=3, repaint_mode="conservative", normalize=False)
    result = generate(request, turbo)
    check_song(result, 1, 150, normalized=False)
    assert result.plan.pad_right == 3 * SR and result.plan.frame_range == (75, 150)
    assert "Repaint the mask area" in result.prompts.items[0].caption
    assert "- duration: 3 seconds" in result.prompts.metas
    source = load_audio_inputs(resolve_request(request, "turbo", random.Random(0))).source
    assert torch.equal(result.audio[0, :, : 3 * SR - 2400], source[:, : 3 * SR - 2400])
    left = generate(GenerationRequest(task="extend", src_audio=song(), repaint_start=-2.0, repaint_end=0.0, seeds=3,
                                      steps=2), turbo)
    assert left.plan.pad_left == 2 * SR and left.plan.frame_range == (0, 50) and left.audio.shape[-1] == 128 * 1920


def test_audio_codes_drive_text2music_and_cover(turbo: Models) -> None:
    tokens = [f"<|audio_code_{(i * 997) % 64000}|>" for i in range(30)]
    codes, half = "".join(tokens), "".join(tokens[:15])
    auto = run(turbo, duration=20, audio_codes=codes)
    check_song(auto, 1, 150)
    assert auto.plan.dit_task == "cover" and "Generate audio semantic tokens" in auto.prompts.items[0].caption
    assert "- duration: 20 seconds" in auto.prompts.metas
    cover = run(turbo, task="cover", audio_codes=(codes, half), batch_size=2, seeds="4,5")
    check_song(cover, 2, 150)
    assert cover.plan.item_frames == (150, 75) and "- duration: 30 seconds" in cover.prompts.metas


def test_base_only_tasks_on_a_base_model(base: Models) -> None:
    lego = run(base, task="lego", src_audio=song(), track_name="drums", guidance_scale=5.0)
    check_song(lego, 1, 128)
    assert "Generate the DRUMS track based on the audio context:" in lego.prompts.items[0].caption
    assert lego.schedule.family == "base" and lego.request.guidance_scale == 5.0
    extract = run(base, task="extract", src_audio=song(), track_name="vocals")
    assert "Extract the VOCALS track from the audio:" in extract.prompts.items[0].caption
    complete = run(base, task="complete", src_audio=song(), track_classes=("bass", "drums"))
    assert "Complete the input track with BASS | DRUMS:" in complete.prompts.items[0].caption
    check_song(complete, 1, 128)
    no_source = run(base, task="complete", duration=10)
    check_song(no_source, 1, 250)
    assert no_source.plan.source_samples is None


def test_xl_turbo_and_sft(models_dir: Path) -> None:
    xl = load_models(models_dir, dit="acestep-v15-xl-turbo")
    codes = "".join(f"<|audio_code_{i * 331}|>" for i in range(26))
    check_song(run(xl, audio_codes=codes), 1, 130)
    sft = load_models(models_dir, dit="acestep-v15-sft")
    assert sft.variant == "sft" and sft.family == "base"
    with pytest.raises(AceStepError, match="needs an ACE-Step 1.5 base model.*sft"):
        run(sft, task="extract", src_audio=song())


def test_reference_clips_change_the_timbre_condition(turbo: Models) -> None:
    plain = run(turbo, task="cover", src_audio=song())
    clip = song(1.0, rate=SR, seed=1)  # 1 s repeats to exactly 30 s: one clip, encoded once for both entries
    with_refs = run(turbo, task="cover", src_audio=song(), reference_audio=(clip, clip))
    check_song(with_refs, 1, 128)
    assert not torch.equal(plain.latents, with_refs.latents)


def test_cancel_stops_the_run(turbo: Models) -> None:
    seen = []

    def cancel() -> bool:
        return len(seen) >= 1

    with pytest.raises(Cancelled, match="after step 1 of 4"):
        generate(GenerationRequest(duration=10, steps=4, seeds=1), turbo, cancel=cancel,
                 progress=lambda stage, done, total: seen.append(stage))


def _file(tmp_path: Path, name: str, data: object, subtype: str = "FLOAT") -> Path:
    path = tmp_path / name
    sf.write(path, data, SR, subtype=subtype)
    return path


@pytest.mark.parametrize("case", ["repaint range", "duration", "zero-length", "nan", "unreadable", "missing",
                                  "silent reference", "base-only", "batch", "track"])
def test_bad_inputs_give_one_clear_error(turbo: Models, tmp_path: Path, case: str) -> None:
    import numpy as np

    garbage = tmp_path / "noise.flac"
    garbage.write_bytes(b"not audio at all" * 10)
    requests = {
        "repaint range": (dict(task="repaint", src_audio=song(), repaint_start=4.0), "at or after the end of the"),
        "duration": (dict(duration=700), "between 10 and 600"),
        "zero-length": (dict(task="cover", src_audio=_file(tmp_path, "empty.wav", np.zeros((0, 2)))), "no samples"),
        "nan": (dict(task="cover", src_audio=AudioData(torch.full((2, SR), float("nan")), SR)), "NaN"),
        "unreadable": (dict(task="cover", src_audio=garbage), "Cannot read audio file"),
        "missing": (dict(task="cover", src_audio=tmp_path / "nope.wav"), "does not exist"),
        "silent reference": (dict(reference_audio=(AudioData(torch.zeros(2, SR), SR),)), "Reference audio 1 is silent"),
        "base-only": (dict(task="lego", src_audio=song()), "needs an ACE-Step 1.5 base model"),
        "batch": (dict(batch_size=9), "1 to 8"),
        "track": (dict(task="extract", src_audio=song(), track_name="theremin"), "Track name 'theremin'"),
    }
    fields, words = requests[case]
    with pytest.raises(AceStepError, match=words):
        generate(GenerationRequest(**fields), turbo)
