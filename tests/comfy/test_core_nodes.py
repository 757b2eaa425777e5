"""The core nodes (loaders, Text Encode, DiT Sampler, source audio, VAE Decode) in the real ComfyUI server.

Tiny checkpoints sit in the server's model folders (official folders under models/acestep/, ComfyUI single
files in diffusion_models/ and vae/); API prompts run text2music, cover, repaint and extend end to end into
core SaveAudio, and the saved files are fetched and checked. Songs are 6-10 s: the tiny VAE at 48 kHz is
what costs time.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any, Optional

import comfyui_test_env
import numpy as np
import pytest
import soundfile

from .client import ComfyClient, execution_error
from .node_definitions import check_node_definitions
from .tiny_model_folders import COMFY_DIT, COMFY_VAE, install_model_folders

CORE_NODES = {
    "AceStepLoadDit": ["dit_name", "dtype", "variant", "download"],
    "AceStepLoadVae": ["vae_name", "dtype", "download"],
    "AceStepLoadTextEncoder": ["text_encoder_name", "dtype", "download"],
    "AceStepTextEncode": ["text_encoder", "caption", "lyrics", "language", "bpm", "keyscale", "timesignature",
                          "duration", "task", "track_name", "track_classes", "latent", "blueprint"],
    "AceStepSourceAudioEncode": ["vae", "audio", "encode_mode", "seed", "batch_size"],
    "AceStepRepaintMask": ["latent", "repaint_start", "repaint_end", "mode", "strength"],
    "AceStepReferenceAudio": ["vae", "audio", "encode_mode", "seed"],
    "AceStepDitSampler": ["dit", "conditioning", "latent", "seed", "steps", "shift", "guidance_scale", "use_adg",
                          "cfg_interval_start", "cfg_interval_end", "infer_method", "sampler",
                          "audio_cover_strength", "cover_noise_strength", "reference"],
    "AceStepVaeDecode": ["vae", "latent", "normalize", "peak_db", "fade_in", "fade_out"],
}
RATE = 48000
HOP = 1920
SOURCE_FILE = "acestep_source.wav"
SOURCE_SECONDS = 6.0


def source_waveform() -> np.ndarray:
    """A 6 s stereo 48 kHz test recording `[samples, 2]`: chords with a beat, different per channel."""
    t = np.arange(int(SOURCE_SECONDS * RATE)) / RATE
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0)
    left = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) * beat
    right = sum(np.sin(2 * np.pi * f * t) for f in (196.0, 246.9, 293.7)) * beat
    return (0.2 * np.stack([left, right], axis=1)).astype(np.float32)


@pytest.fixture(scope="session")
def core_models(comfy_server: comfyui_test_env.ComfyServer, comfy_env: comfyui_test_env.TestEnv) -> Path:
    """Tiny models in the server's model folders and the test recording in its input folder."""
    install_model_folders(comfy_server.base / "models", comfy_env.home / "tiny-models")
    soundfile.write(comfy_server.base / "input" / SOURCE_FILE, source_waveform(), RATE, subtype="FLOAT")
    return comfy_server.base / "models"


def song_prompt(task: str = "text2music", *, seed: int = 1, steps: int = 0, seconds: float = 10.0, batch: int = 1,
                dit: str = "acestep/acestep-v15-turbo", vae: str = "acestep/vae", source: bool = False,
                repaint: Optional[tuple[float, float]] = None, track_name: str = "none",
                reference: bool = False, save: str = "audio", dit_dtype: str = "auto") -> dict[str, Any]:
    """An API prompt: loaders → Text Encode → empty or source latent → DiT Sampler → VAE Decode → SaveAudio
    (or SaveLatent of the sampler's output with `save="latent"`).

    The source is always encoded with seed 0, so ComfyUI reuses one encode across the prompts."""
    prefix = f"acestep_core/{task}_{uuid.uuid4().hex[:8]}"
    prompt: dict[str, Any] = {
        "dit": {"class_type": "AceStepLoadDit",
                "inputs": {"dit_name": dit, "dtype": dit_dtype, "variant": "auto", "download": False}},
        "vae": {"class_type": "AceStepLoadVae", "inputs": {"vae_name": vae, "dtype": "auto", "download": False}},
        "te": {"class_type": "AceStepLoadTextEncoder",
               "inputs": {"text_encoder_name": "acestep/Qwen3-Embedding-0.6B", "dtype": "auto", "download": False}},
        "cond": {"class_type": "AceStepTextEncode", "inputs": {
            "text_encoder": ["te", 0], "caption": "dream pop, airy synths, female vocal", "lyrics": "[verse]\nla la",
            "language": "en", "bpm": 0, "keyscale": "auto", "timesignature": "auto", "duration": 0.0, "task": task,
            "track_name": track_name, "track_classes": "", "latent": ["latent", 0]}},
        "sample": {"class_type": "AceStepDitSampler", "inputs": {
            "dit": ["dit", 0], "conditioning": ["cond", 0], "latent": ["latent", 0], "seed": seed, "steps": steps,
            "shift": 3.0, "guidance_scale": 7.0, "use_adg": False, "cfg_interval_start": 0.0,
            "cfg_interval_end": 1.0, "infer_method": "ode", "sampler": "euler", "audio_cover_strength": 1.0,
            "cover_noise_strength": 0.0}},
    }
    if source:
        prompt["load"] = {"class_type": "LoadAudio", "inputs": {"audio": SOURCE_FILE}}
        encode = {"class_type": "AceStepSourceAudioEncode", "inputs": {
            "vae": ["vae", 0], "audio": ["load", 0], "encode_mode": "seeded", "seed": 0, "batch_size": batch}}
        prompt["source" if repaint is not None else "latent"] = encode
        if repaint is not None:
            prompt["latent"] = {"class_type": "AceStepRepaintMask", "inputs": {
                "latent": ["source", 0], "repaint_start": repaint[0], "repaint_end": repaint[1],
                "mode": "balanced", "strength": 0.5}}
    else:
        prompt["latent"] = {"class_type": "AceStepEmptyLatent", "inputs": {"seconds": seconds, "batch_size": batch}}
    if reference:
        prompt["load"] = {"class_type": "LoadAudio", "inputs": {"audio": SOURCE_FILE}}
        prompt["ref"] = {"class_type": "AceStepReferenceAudio",
                         "inputs": {"vae": ["vae", 0], "audio": ["load", 0], "encode_mode": "mean", "seed": seed}}
        prompt["sample"]["inputs"]["reference"] = ["ref", 0]
    if save == "latent":
        prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}}
    else:
        prompt["decode"] = {"class_type": "AceStepVaeDecode", "inputs": {
            "vae": ["vae", 0], "latent": ["sample", 0], "normalize": True, "peak_db": -1.0, "fade_in": 0.0,
            "fade_out": 0.0}}
        prompt["save"] = {"class_type": "SaveAudio", "inputs": {"audio": ["decode", 0], "filename_prefix": prefix}}
    return prompt


def saved_songs(comfy: ComfyClient, entry: dict[str, Any]) -> list[tuple[np.ndarray, int]]:
    """Every file core SaveAudio wrote, fetched through /view and decoded: `([samples, channels], rate)`."""
    assert execution_error(entry) is None, execution_error(entry)
    files = entry["outputs"]["save"]["audio"]
    return [soundfile.read(io.BytesIO(comfy.view(f["filename"], f["subfolder"], f["type"])), dtype="float32")
            for f in files]


def check_song(data: np.ndarray, rate: int, frames: int) -> None:
    assert rate == RATE
    assert data.shape == (frames * HOP, 2)
    assert np.isfinite(data).all()
    assert float(np.sqrt(np.mean(data ** 2))) > 1e-3, "the song is silent"
    assert 0.5 < float(np.abs(data).max()) <= 1.0


def test_object_info_documents_every_core_node(comfy: ComfyClient, core_models: Path) -> None:
    check_node_definitions(comfy, CORE_NODES, "audio/ACE-Step")


def test_loader_menus_list_official_folders_and_comfy_files(comfy: ComfyClient, core_models: Path) -> None:
    dits = comfy.object_info("AceStepLoadDit")["AceStepLoadDit"]["input"]["required"]["dit_name"][1]["options"]
    assert dits[0] == "acestep/acestep-v15-turbo"
    assert {"acestep/acestep-v15-base", "acestep/acestep-v15-xl-base", f"diffusion_models/{COMFY_DIT}"} <= set(dits)
    vaes = comfy.object_info("AceStepLoadVae")["AceStepLoadVae"]["input"]["required"]["vae_name"][1]["options"]
    assert vaes[0] == "acestep/vae" and f"vae/{COMFY_VAE}" in vaes
    encoders = comfy.object_info("AceStepLoadTextEncoder")["AceStepLoadTextEncoder"]["input"]["required"]
    assert encoders["text_encoder_name"][1]["options"][0] == "acestep/Qwen3-Embedding-0.6B"


def test_text2music_batch_makes_two_songs_of_the_latent_length(comfy: ComfyClient, core_models: Path) -> None:
    """Also: the DiT loader shows what it loaded (its inputs are unique to this test, so it runs here)."""
    entry = comfy.run(song_prompt(seed=11, batch=2, dit_dtype="fp32"), timeout_s=240)
    songs = saved_songs(comfy, entry)
    assert len(songs) == 2
    for data, rate in songs:
        check_song(data, rate, frames=250)
    assert not np.allclose(songs[0][0], songs[1][0]), "both takes got the same noise"
    assert entry["outputs"]["dit"]["text"] == ["ACE-Step 1.5 2B turbo, fp32"]


def test_cover_from_comfy_single_files(comfy: ComfyClient, core_models: Path) -> None:
    prompt = song_prompt("cover", seed=5, source=True, dit=f"diffusion_models/{COMFY_DIT}", vae=f"vae/{COMFY_VAE}")
    entry = comfy.run(prompt, timeout_s=240)
    [(data, rate)] = saved_songs(comfy, entry)
    check_song(data, rate, frames=int(SOURCE_SECONDS * RATE) // HOP)


def _gain_fit(out: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Least-squares gain of `reference` in `out` and the relative residual."""
    gain = float((out * reference).sum() / (reference * reference).sum())
    residual = float(np.linalg.norm(out - gain * reference) / np.linalg.norm(out))
    return gain, residual


def test_repaint_keeps_the_source_outside_the_range(comfy: ComfyClient, core_models: Path) -> None:
    entry = comfy.run(song_prompt("repaint", seed=3, source=True, repaint=(2.0, 4.0)), timeout_s=240)
    [(data, rate)] = saved_songs(comfy, entry)
    check_song(data, rate, frames=int(SOURCE_SECONDS * RATE) // HOP)
    source = source_waveform()
    outside = np.r_[0:int(1.9 * RATE), int(4.1 * RATE):len(source)]
    gain, residual = _gain_fit(data[outside], source[outside])
    assert gain > 0.5 and residual < 1e-3, (gain, residual)
    inside = slice(int(2.2 * RATE), int(3.8 * RATE))
    assert _gain_fit(data[inside], source[inside])[1] > 0.05, "the range was not regenerated"


def test_extend_adds_time_after_the_source(comfy: ComfyClient, core_models: Path) -> None:
    entry = comfy.run(song_prompt("extend", seed=4, source=True, repaint=(5.0, 8.0)), timeout_s=240)
    [(data, rate)] = saved_songs(comfy, entry)
    check_song(data, rate, frames=int(8.0 * RATE) // HOP)
    source = source_waveform()
    kept = slice(0, int(4.9 * RATE))
    assert _gain_fit(data[kept], source[kept])[1] < 1e-3
    assert float(np.sqrt(np.mean(data[int(6.5 * RATE):] ** 2))) > 1e-3, "the extension is silent"


def test_reference_audio_on_a_base_model_with_guidance(comfy: ComfyClient, core_models: Path) -> None:
    entry = comfy.run(song_prompt(seed=8, steps=3, dit="acestep/acestep-v15-base", reference=True), timeout_s=240)
    [(data, rate)] = saved_songs(comfy, entry)
    check_song(data, rate, frames=250)
