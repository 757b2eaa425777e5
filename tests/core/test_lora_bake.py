"""Baked DiT folders: loaded back by `load_dit` with the same weights, config and variant; never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from acestep_core.checkpoints import load_dit
from acestep_core.errors import AceStepError
from acestep_core.lora import apply_adapters, lora_adapter
from acestep_core.lora_bake import baked_folder, write_baked_dit
from tests.core import tiny_adapters


def _merged_tiny() -> torch.nn.Module:
    model = tiny_adapters.tiny_dit()
    shapes = tiny_adapters.golden_shapes()
    modules = tiny_adapters.attention_modules(shapes)
    apply_adapters(model, [(lora_adapter(tiny_adapters.random_lora(shapes, modules, rank=2, seed=5), alpha=2.0), 0.7)])
    return model


def test_baked_folder_loads_back_with_weights_config_and_variant(tmp_path: Path) -> None:
    model = _merged_tiny()
    original = load_dit(tiny_adapters.GOLDEN_DIT, require_silence_latent=False)
    silence = torch.randn(1, 20, original.info.config.audio_acoustic_hidden_dim)
    folder = baked_folder(tmp_path, "sub/baked")
    assert folder == tmp_path / "sub" / "baked_00001_"
    weights = write_baked_dit(folder, model.state_dict(), original.info.config.to_dict(), silence, variant="sft",
                              adapters=[("style", 0.7)], base_name="tiny")
    loaded = load_dit(folder)
    assert loaded.info.dit.variant == "sft" and loaded.info.config_source == "config.json"
    assert loaded.info.config.sliding_window == original.info.config.sliding_window
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(loaded.silence_latent, silence)
    with safe_open(str(weights), "pt") as handle:
        assert json.loads(handle.metadata()["acestep_adapters"]) == [{"name": "style", "strength": 0.7}]


def test_folders_are_numbered_and_never_overwritten(tmp_path: Path) -> None:
    first, second = baked_folder(tmp_path, "x"), baked_folder(tmp_path, "x")
    assert (first.name, second.name) == ("x_00001_", "x_00002_")
    (first / "model.safetensors").write_bytes(b"keep")
    with pytest.raises(AceStepError, match="already exists"):
        write_baked_dit(first, {}, {}, torch.zeros(1, 1, 1), variant=None, adapters=[], base_name="b")
    assert (first / "model.safetensors").read_bytes() == b"keep"


@pytest.mark.parametrize("prefix", ["../escape", "a/../../b", "", "/abs/path"])
def test_prefix_must_stay_inside_the_folder(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(AceStepError, match="filename_prefix"):
        baked_folder(tmp_path / "out", prefix)
