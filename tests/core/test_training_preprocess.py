"""Preprocessing on the tiny official-layout models (VAE, text encoder, DiT), the disk cache, auto-labels with the
tiny LM, and the whole path folder → dataset → cache → LoRA → adapter."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_core.errors import AceStepError
from acestep_core.lora import read_adapter
from acestep_core.pipeline_models import Models, load_models
from acestep_core.planner import PlannerSettings
from acestep_core.task_inputs import silence_frames
from acestep_core.text.prompts import TEXT2MUSIC_INSTRUCTION
from acestep_core.training import (
    TrainingConfig, audio_codes, cached_items, label_dataset, load_item, preprocess_dataset, scan_folder, text_inputs, train_lora,
)
from acestep_core.training.preprocess import TRAIN_LYRIC_TOKENS, TRAIN_TEXT_TOKENS
from acestep_core.audio import load_audio
from acestep_core.planner import PlannerLM, plan_understand
from tests.core.tiny_lm import lm_tokenizer, single_thread, tiny_lm  # noqa: F401 (fixture)
from tests.core.tiny_models import write_tiny_models

RATE = 48000


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return load_models(write_tiny_models(tmp_path_factory.mktemp("models")))


def write_song(path: Path, seconds: float, freq: float) -> None:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.stack([tone, 0.5 * tone], axis=1), RATE)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "songs"
    write_song(root / "one.wav", 0.6, 220.0)
    write_song(root / "two.flac", 0.4, 330.0)
    (root / "one.caption.txt").write_text("bright piano")
    (root / "one.json").write_text('{"bpm": 100, "keyscale": "D major"}')
    (root / "two.lyrics.txt").write_text("[chorus]\nhey")
    return root


def preprocess(models: Models, dataset, cache: Path, **kwargs) -> list[Path]:
    return preprocess_dataset(dataset, models.dit, models.silence_latent, models.vae, models.text_encoder, cache,
                              **kwargs)


def test_text_inputs_follow_the_official_training_prompt(folder: Path) -> None:
    dataset = scan_folder(folder, custom_tag="zz")
    prompt, lyrics = text_inputs(dataset, dataset.samples[0], 0.6)
    assert prompt == (f"# Instruction\n{TEXT2MUSIC_INSTRUCTION}\n\n# Caption\nzz, bright piano\n\n# Metas\n"
                      "- bpm: 100\n- timesignature: N/A\n- keyscale: D major\n- duration: 0 seconds\n<|endoftext|>\n")
    assert lyrics == "[Instrumental]"
    assert text_inputs(dataset, dataset.samples[1], 0.4)[1] == "[chorus]\nhey"


def test_preprocess_caches_by_content(models: Models, folder: Path, tmp_path: Path) -> None:
    dataset = scan_folder(folder)
    calls = []
    paths = preprocess(models, dataset, tmp_path / "cache", progress=lambda i, n, name: calls.append((i, n, name)))
    assert calls == [(0, 2, "one.wav"), (1, 2, "two.flac"), (2, 2, "")]
    assert [p.name.split("-")[0] for p in paths] == ["one", "two"] and cached_items(tmp_path / "cache") == sorted(paths)
    item = load_item(paths[0])
    frames, channels = int(0.6 * RATE) // 1920, models.dit.config.audio_acoustic_hidden_dim
    assert item.target_latents.shape == (frames, channels) and item.name == "one.wav"
    silence = silence_frames(models.silence_latent, frames)
    assert torch.equal(item.context_latents, torch.cat([silence, torch.ones_like(silence)], -1))
    width = models.dit.null_condition_emb.shape[-1]
    assert item.encoder_hidden_states.shape == (TRAIN_TEXT_TOKENS + TRAIN_LYRIC_TOKENS + 1, width)
    kept = int(item.encoder_attention_mask.sum())
    assert 1 < kept < TRAIN_TEXT_TOKENS and bool(item.encoder_attention_mask[:kept].all())
    # Same inputs: the same files, untouched. A changed caption or seed: a new file; the other song is reused.
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert preprocess(models, dataset, tmp_path / "cache") == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    edited = dataset.with_samples((replace(dataset.samples[0], caption="dark piano"), dataset.samples[1]))
    again = preprocess(models, edited, tmp_path / "cache")
    assert again[0] != paths[0] and again[1] == paths[1]
    reseeded = preprocess(models, dataset, tmp_path / "cache", seed=1)
    assert reseeded[0] != paths[0]
    assert not torch.equal(load_item(reseeded[0]).target_latents, item.target_latents)
    mean = preprocess(models, dataset, tmp_path / "mean", vae_sample=False)
    assert torch.equal(load_item(mean[0]).encoder_hidden_states, item.encoder_hidden_states)


def test_cache_errors(models: Models, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(AceStepError, match="Cannot read training cache"):
        load_item(bad)
    with pytest.raises(AceStepError, match="No preprocessed songs"):
        cached_items(tmp_path / "nothing")


def test_auto_label_fills_only_empty_fields(models: Models, folder: Path) -> None:
    dataset = scan_folder(folder)
    settings = PlannerSettings(temperature=0.7, top_p=1.0, max_duration=12, max_text_tokens=80)
    lm = PlannerLM(tiny_lm(0), lm_tokenizer())
    labelled = label_dataset(dataset, lm, models.dit, models.vae, models.silence_latent, settings=settings, seed=3)
    one, two = labelled.samples
    # Song 2 (index 1) is described by the LM from its own codes with seed 3 + 1.
    waveform, rate = load_audio(folder / "two.flac")
    codes = audio_codes(models.dit, models.vae, models.silence_latent, waveform, rate)
    assert len(codes) == 2   # 0.4 s = 10 latent frames = 2 windows of 5
    plan = plan_understand(lm, codes, seeds=[4], settings=settings).items[0]
    assert (two.caption, two.bpm, two.keyscale, two.timesignature) == (
        plan.caption, plan.bpm, plan.keyscale, plan.timesignature)
    assert two.caption and two.lyrics == "[chorus]\nhey"
    # Given values stay; only the empty ones were filled.
    assert (one.caption, one.bpm, one.keyscale) == ("bright piano", 100, "D major")
    # Nothing left to fill: no model runs (a runner that cannot run proves it).
    assert label_dataset(labelled, object(), models.dit, models.vae, models.silence_latent,
                         fields=("caption",)) == labelled
    with pytest.raises(AceStepError, match="Cannot auto-label lyrics"):
        label_dataset(dataset, lm, models.dit, models.vae, models.silence_latent, fields=("lyrics",))


def test_folder_to_trained_adapter(models: Models, folder: Path, tmp_path: Path) -> None:
    dataset = scan_folder(folder)
    files = preprocess(models, dataset, tmp_path / "cache")
    config = TrainingConfig(rank=2, alpha=4, epochs=2, gradient_accumulation=1, warmup_steps=1, save_every_epochs=1)
    result = train_lora(models.dit, files, tmp_path / "lora", config, name="tiny")
    assert result.steps == 4 and len(result.checkpoints) == 1 and result.comfy_file.name == "tiny.safetensors"
    adapter = read_adapter(tmp_path / "lora")
    assert adapter.modules and all(d.rank == 2 for d in adapter.modules.values())
