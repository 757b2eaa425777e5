"""The training nodes in the real ComfyUI server: a tiny dataset in the input folder goes through Scan, Edit,
Auto-Label (tiny LM), Preprocess and Train LoRA; the adapter it writes loads in our reader, its ComfyUI file has
ComfyUI's key names, the DiT is left unchanged (the next song equals the one before), and errors name the input."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import comfyui_test_env
import numpy as np
import pytest
import soundfile
import torch

from acestep_core.lora import read_adapter

from .client import ComfyClient, execution_error
from .node_definitions import check_node_definitions
from .test_core_nodes import core_models, song_prompt  # noqa: F401  (core_models is a fixture)
from .test_empty_latent import saved_latent

TRAINING_NODES = {
    "AceStepDatasetScan": ["folder", "recursive", "custom_tag", "tag_position"],
    "AceStepDatasetEdit": ["dataset", "edits", "save_as"],
    "AceStepDatasetAutoLabel": ["dataset", "lm", "dit", "vae", "overwrite", "transcribe_lyrics", "seed",
                                "max_text_tokens"],
    "AceStepTrainingPreprocess": ["dataset", "dit", "vae", "text_encoder", "max_duration", "seed", "cache_folder"],
    "AceStepTrainLora": ["dit", "training_set", "lora_name", "epochs", "max_steps", "rank", "alpha",
                         "learning_rate", "gradient_accumulation", "warmup_steps", "timesteps", "save_every_steps",
                         "gradient_checkpointing", "seed", "resume_from", "copy_to_loras"],
}
DATASET = "acestep_lora_dataset"
RATE = 48000


def write_dataset(folder: Path) -> None:
    """Two short songs, one with a caption file, one with JSON metadata but no caption (auto-label fills it)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.8 * RATE)) / RATE
    for name, freq in (("first.wav", 220.0), ("second.flac", 330.0)):
        tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        soundfile.write(folder / name, np.stack([tone, tone], axis=1), RATE)
    (folder / "first.caption.txt").write_text("warm lofi piano")
    (folder / "second.json").write_text(json.dumps({"bpm": 90, "keyscale": "E minor"}))


@pytest.fixture(scope="module")
def dataset_folder(comfy_server: comfyui_test_env.ComfyServer) -> Path:
    folder = comfy_server.base / "input" / DATASET
    write_dataset(folder)
    return folder


def train_prompt(run: str, **train: Any) -> dict[str, Any]:
    settings = {"epochs": 2, "max_steps": 0, "rank": 2, "alpha": 4.0, "learning_rate": 1e-3,
                "gradient_accumulation": 1, "warmup_steps": 1, "timesteps": "continuous", "save_every_steps": 0,
                "gradient_checkpointing": True, "seed": 7, "resume_from": "", "copy_to_loras": False} | train
    return {
        "dit": {"class_type": "AceStepLoadDit", "inputs": {"dit_name": "acestep/acestep-v15-turbo", "dtype": "auto",
                                                           "variant": "auto", "download": False}},
        "vae": {"class_type": "AceStepLoadVae", "inputs": {"vae_name": "acestep/vae", "dtype": "auto",
                                                           "download": False}},
        "te": {"class_type": "AceStepLoadTextEncoder",
               "inputs": {"text_encoder_name": "acestep/Qwen3-Embedding-0.6B", "dtype": "auto", "download": False}},
        "lm": {"class_type": "AceStepLoadLM", "inputs": {"lm_name": "acestep/acestep-5Hz-lm-0.6B", "dtype": "auto",
                                                         "download": False}},
        "scan": {"class_type": "AceStepDatasetScan", "inputs": {"folder": DATASET, "recursive": True,
                                                                "custom_tag": "zzstyle", "tag_position": "prepend"}},
        "label": {"class_type": "AceStepDatasetAutoLabel", "inputs": {
            "dataset": ["scan", 0], "lm": ["lm", 0], "dit": ["dit", 0], "vae": ["vae", 0], "overwrite": False,
            "transcribe_lyrics": False, "seed": 0, "max_text_tokens": 64}},
        "edit": {"class_type": "AceStepDatasetEdit", "inputs": {"dataset": ["label", 0], "edits": "",
                                                                "save_as": f"dataset_{run}"}},
        "prep": {"class_type": "AceStepTrainingPreprocess", "inputs": {
            "dataset": ["edit", 0], "dit": ["dit", 0], "vae": ["vae", 0], "text_encoder": ["te", 0],
            "max_duration": 240.0, "seed": 0, "cache_folder": "acestep_lora_cache"}},
        "train": {"class_type": "AceStepTrainLora", "inputs": {"dit": ["dit", 0], "training_set": ["prep", 0],
                                                               "lora_name": f"test_{run}", **settings}},
    }


@pytest.mark.usefixtures("core_models")
def test_nodes_menu_and_help_pages(comfy: ComfyClient) -> None:
    check_node_definitions(comfy, TRAINING_NODES, "audio/ACE-Step/Training")


@pytest.mark.usefixtures("core_models")
def test_folder_to_lora_and_the_dit_is_unchanged(comfy: ComfyClient, comfy_server: comfyui_test_env.ComfyServer,
                                                 dataset_folder: Path) -> None:
    before = saved_latent(comfy, comfy.run(song_prompt(seed=51, save="latent"), timeout_s=240), "save")
    run = uuid.uuid4().hex[:6]
    entry = comfy.run(train_prompt(run), timeout_s=300)
    assert execution_error(entry) is None, execution_error(entry)
    outputs = entry["outputs"]
    adapter_dir = Path(outputs["train"]["text"][0].split("PEFT folder: ")[1].splitlines()[0])
    assert adapter_dir.parent.parent == comfy_server.base / "output" / "acestep_lora"
    assert adapter_dir.parent.name == f"test_{run}_001" and "4 steps" in outputs["train"]["text"][0]
    adapter = read_adapter(adapter_dir.parent)
    assert adapter.modules and all(d.rank == 2 and d.scale == 2.0 for d in adapter.modules.values())
    comfy_file = adapter_dir.parent / f"test_{run}.safetensors"
    assert read_adapter(comfy_file).key_style == "diffusion_model."
    saved = json.loads((comfy_server.base / "output" / "acestep_lora" / f"dataset_{run}.json").read_text())
    first, second = saved["samples"]
    assert first["caption"] == "warm lofi piano" and second["caption"] and second["bpm"] == 90
    assert saved["custom_tag"] == "zzstyle"
    assert "2 songs" in outputs["scan"]["text"][0] and "2 songs cached" in outputs["prep"]["text"][0]
    after = saved_latent(comfy, comfy.run(song_prompt(seed=51, steps=8, save="latent"), timeout_s=240), "save")
    assert torch.equal(after, before)


@pytest.mark.usefixtures("core_models")
def test_training_errors_name_the_input(comfy: ComfyClient, dataset_folder: Path) -> None:
    prompt = train_prompt(uuid.uuid4().hex[:6], resume_from="acestep_lora/nowhere/checkpoints/step-000001")
    error = execution_error(comfy.run(prompt, timeout_s=300))
    assert error is not None and error["node_id"] == "train", error
    assert error["exception_type"] == "acestep_core.errors.AceStepError", error
    assert "ACE-Step Train LoRA" in error["exception_message"] and "not a training checkpoint" in \
        error["exception_message"], error
    bad = train_prompt(uuid.uuid4().hex[:6])
    bad["scan"]["inputs"]["folder"] = "no_such_dataset_folder"
    error = execution_error(comfy.run(bad, timeout_s=120))
    assert error is not None and error["node_id"] == "scan" and "does not exist" in error["exception_message"], error
