"""Graphs the browser tests build: the repaint song on the tiny models."""

from __future__ import annotations

from typing import Any

from .comfy_page import ComfyPage
from .conftest import SOURCE_FILE

DIT, VAE, TEXT_ENCODER = "acestep/acestep-v15-turbo", "acestep/vae", "acestep/Qwen3-Embedding-0.6B"


def song_graph(ui: ComfyPage, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, int]:
    """Load Audio → Source Audio Encode → Repaint Mask → Text Encode (repaint) → DiT Sampler → VAE Decode →
    Save Audio, on the tiny models (plus unconnected `extra` nodes); returns once the waveform is shown."""
    nodes = {
        "dit": {"type": "AceStepLoadDit", "pos": [0, 0], "widgets": {"dit_name": DIT}},
        "vae": {"type": "AceStepLoadVae", "pos": [0, 200], "widgets": {"vae_name": VAE}},
        "te": {"type": "AceStepLoadTextEncoder", "pos": [0, 400], "widgets": {"text_encoder_name": TEXT_ENCODER}},
        "load": {"type": "AceStepLoadAudio", "pos": [0, 600], "widgets": {"audio": SOURCE_FILE}},
        "source": {"type": "AceStepSourceAudioEncode", "pos": [380, 600]},
        "mask": {"type": "AceStepRepaintMask", "pos": [380, 0], "size": [600, 330]},
        "text": {"type": "AceStepTextEncode", "pos": [1050, 0], "size": [460, 600],
                 "widgets": {"caption": "dream pop, airy synths", "lyrics": "[Verse]\nla la la", "task": "repaint"}},
        "sample": {"type": "AceStepDitSampler", "pos": [1580, 0], "widgets": {"seed": 7}},
        "decode": {"type": "AceStepVaeDecode", "pos": [1580, 520]},
        "save": {"type": "AceStepSaveAudio", "pos": [1050, 680], "widgets": {"filename_prefix": "web/repaint"}},
    }
    links = [["load", 0, "source", "audio"], ["vae", 0, "source", "vae"], ["source", 0, "mask", "latent"],
             ["te", 0, "text", "text_encoder"], ["mask", 0, "text", "latent"], ["dit", 0, "sample", "dit"],
             ["text", 0, "sample", "conditioning"], ["mask", 0, "sample", "latent"], ["vae", 0, "decode", "vae"],
             ["sample", 0, "decode", "latent"], ["decode", 0, "save", "audio"]]
    ids = ui.build({**nodes, **(extra or {})}, links, scale=0.62)
    ui.evaluate("(id) => { app.graph.getNodeById(id).widgets.find((w) => w.name === 'control_after_generate')"
                ".value = 'fixed'; return true; }", ids["sample"])
    ui.wait_for("(id) => app.graph.getNodeById(id).acestepRegion.audio?.duration", ids["mask"], timeout_s=20)
    return ids
