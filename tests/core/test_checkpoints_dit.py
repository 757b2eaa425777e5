"""Loading the DiT from every layout and dtype, identifying it, and the errors for wrong inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from acestep_core.checkpoint_identify import identify_dit, infer_dit_config
from acestep_core.checkpoints import load_dit
from acestep_core.errors import AceStepError
from acestep_core.models.config import AceStepConfig
from tests.core import tiny_layouts as T

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Config fields the weights cannot hold (dit.md §1.3); the tiny models use other values than the defaults.
NOT_IN_WEIGHTS = {"sliding_window", "layer_types", "rope_theta", "rms_norm_eps", "fsq_input_levels",
                  "fsq_input_num_quantizers", "is_turbo", "model_version", "lyric_alignment_layers_config",
                  "use_sliding_window", "attention_bias"}


def _official(tmp: Path, family: str, dtype: torch.dtype) -> Path:
    return T.write_official_dit(tmp / f"acestep-v15-{'xl-' if family == 'xl' else ''}turbo", family, dtype)


def _sharded(tmp: Path, family: str, dtype: torch.dtype) -> Path:
    return T.write_sharded_dit(tmp / f"acestep-v15-{'xl-' if family == 'xl' else ''}turbo", family, dtype)


def _comfy(tmp: Path, family: str, dtype: torch.dtype) -> Path:
    name = "acestep_v1.5_xl_turbo_bf16" if family == "xl" else "acestep_v1.5_turbo"
    return T.write_comfy_dit(tmp / "diffusion_models" / f"{name}.safetensors", family, dtype, with_silence=True)


def _aio(tmp: Path, family: str, dtype: torch.dtype) -> Path:
    file = T.write_aio(tmp / "checkpoints" / "ace_step_1.5_turbo_aio.safetensors", family, dtype)
    torch.save(T.golden_silence(family).transpose(1, 2).contiguous(), file.parent / "silence_latent.pt")
    return file


LAYOUTS: dict[str, Callable[[Path, str, torch.dtype], Path]] = {
    "official": _official, "sharded": _sharded, "comfyui": _comfy, "all-in-one": _aio,
}
EXPECTED_LAYOUT = {"official": "official", "sharded": "official", "comfyui": "official",
                   "all-in-one": "comfyui-checkpoint"}


@pytest.mark.parametrize("stored", DTYPES, ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("family", ["2b", "xl"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_loads_strictly_and_is_identified(tmp_path: Path, layout: str, family: str,
                                                       stored: torch.dtype) -> None:
    path = LAYOUTS[layout](tmp_path, family, stored)
    loaded = load_dit(path, dtype=stored)
    source, config = T.golden_dit(family)
    state = loaded.model.state_dict()
    assert set(state) == set(source)
    for key, value in source.items():
        assert state[key].dtype == stored
        assert torch.equal(state[key], value.to(stored)), key
    info = loaded.info
    assert info.kind == "dit"
    assert info.layout == EXPECTED_LAYOUT[layout]
    assert info.dit.family == family
    assert info.dit.variant == "turbo" and info.dit.is_turbo is True
    assert info.config.is_xl == (family == "xl")
    assert info.config.hidden_size == config["hidden_size"]
    assert loaded.silence_latent.dtype == stored
    assert torch.equal(loaded.silence_latent, T.golden_silence(family).to(stored))
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())


@pytest.mark.parametrize("target", DTYPES, ids=["fp32", "bf16", "fp16"])
def test_load_dtype_differs_from_stored(tmp_path: Path, target: torch.dtype) -> None:
    folder = T.write_official_dit(tmp_path / "acestep-v15-turbo", "2b", torch.bfloat16)
    loaded = load_dit(folder, dtype=target)
    source, _ = T.golden_dit("2b")
    key = "encoder.lyric_encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(loaded.model.state_dict()[key], source[key].to(torch.bfloat16).to(target))
    assert loaded.info.stored_dtype == "bf16"


@pytest.mark.parametrize("family", ["2b", "xl"])
def test_config_inferred_from_weights_matches_config_json(family: str) -> None:
    source, config = T.golden_dit(family)
    inferred = AceStepConfig.from_dict(infer_dit_config({k: tuple(v.shape) for k, v in source.items()}, "test"))
    expected = AceStepConfig.from_dict(config)
    for name, value in expected.to_dict().items():
        if name not in NOT_IN_WEIGHTS:
            assert getattr(inferred, name) == value, name
    assert inferred.is_xl == (family == "xl")


def test_comfy_file_without_config_uses_inferred_config(tmp_path: Path) -> None:
    file = _comfy(tmp_path, "xl", torch.float32)
    loaded = load_dit(file)
    assert loaded.info.config_source == "inferred from weights"
    assert loaded.info.config.encoder_hidden_size == 48 and loaded.info.config.hidden_size == 64
    assert loaded.info.dit.family == "xl" and loaded.info.dit.source == "name"
    assert "not stored in the weights" in loaded.info.describe()


@pytest.mark.parametrize(("folder", "config", "variant", "is_turbo", "flavour"), [
    ("acestep-v15-turbo", {"is_turbo": True}, "turbo", True, None),
    ("acestep-v15-sft", {"is_turbo": False}, "sft", False, None),
    ("acestep-v15-base", {"is_turbo": False}, "base", False, None),
    ("acestep-v15-base-sft-fix-inst", {"is_turbo": False}, "sft", False, None),
    ("acestep-v15-turbo-shift3", {"is_turbo": True}, "turbo", True, "shift3"),
    ("acestep-v15-turbo-continuous", {}, "turbo", True, "continuous"),
    ("my-finetune", {"is_turbo": False}, None, False, None),
    ("my-finetune", {"is_turbo": True}, "turbo", True, None),
    ("my-finetune", {"model_version": "xl_base"}, "base", False, None),
    ("my-finetune", {}, None, None, None),
    ("acestep_v1.5_xl_sft_bf16", {}, "sft", False, None),
])
def test_variant_rules(folder: str, config: dict, variant: str, is_turbo: bool, flavour: str) -> None:
    found = identify_dit("2b", config, (folder,))
    assert (found.variant, found.is_turbo, found.flavour) == (variant, is_turbo, flavour)


def test_config_beats_name_and_override_beats_both(tmp_path: Path) -> None:
    folder = T.write_official_dit(tmp_path / "acestep-v15-base", "2b", is_turbo=False)
    assert load_dit(folder).info.dit.variant == "base"
    assert load_dit(folder).info.dit.source == "config.json + name"
    loaded = load_dit(folder, variant="sft")
    assert loaded.info.dit.variant == "sft" and loaded.info.dit.source == "given"
    with pytest.raises(AceStepError, match="not one of turbo, sft, base"):
        load_dit(folder, variant="fast")


def test_describe_says_when_variant_is_unknown(tmp_path: Path) -> None:
    file = T.write_comfy_dit(tmp_path / "finetune.safetensors", with_silence=True)
    info = load_dit(file).info
    assert info.dit.variant is None
    assert "variant unknown (turbo/sft/base)" in info.describe()


def test_given_config_replaces_inferred(tmp_path: Path) -> None:
    file = T.write_comfy_dit(tmp_path / "acestep_v1.5_turbo.safetensors", with_silence=True)
    _, config = T.golden_dit("2b")
    assert load_dit(file).info.config.sliding_window == 128
    given = load_dit(file, config=config)
    assert given.info.config.sliding_window == config["sliding_window"]
    assert given.info.config_source == "given"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_dit(file, config=tmp_path / "config.json").info.config.sliding_window == 4


def test_vae_given_as_dit(tmp_path: Path) -> None:
    for path in (T.write_official_vae(tmp_path / "vae"), T.write_comfy_vae(tmp_path / "ace_1.5_vae.safetensors")):
        with pytest.raises(AceStepError) as error:
            load_dit(path)
        assert "not a DiT checkpoint" in str(error.value)
        assert "Oobleck VAE" in str(error.value) and "load_vae" in str(error.value)


def test_unknown_key_set(tmp_path: Path) -> None:
    file = tmp_path / "sdxl.safetensors"
    save_file({"input_blocks.0.0.weight": torch.zeros(2, 2), "out.2.bias": torch.zeros(2)}, file)
    with pytest.raises(AceStepError) as error:
        load_dit(file)
    assert "not an ACE-Step 1.5 checkpoint" in str(error.value) and "input_blocks.0.0.weight" in str(error.value)


def test_missing_and_unexpected_tensors_are_listed(tmp_path: Path) -> None:
    tensors, config = T.golden_dit("2b")
    tensors.pop("decoder.layers.2.mlp.up_proj.weight")
    tensors["decoder.layers.0.extra.weight"] = torch.zeros(3)
    folder = tmp_path / "acestep-v15-turbo"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(AceStepError) as error:
        load_dit(folder, require_silence_latent=False)
    message = str(error.value)
    assert "1 missing (decoder.layers.2.mlp.up_proj.weight)" in message
    assert "1 unexpected (decoder.layers.0.extra.weight)" in message
    assert str(folder) in message


def test_config_json_that_does_not_fit_the_weights(tmp_path: Path) -> None:
    folder = T.write_official_dit(tmp_path / "acestep-v15-turbo", "2b")
    _, xl_config = T.golden_dit("xl")
    (folder / "config.json").write_text(json.dumps(xl_config))
    with pytest.raises(AceStepError) as error:
        load_dit(folder)
    message = str(error.value)
    assert "with other shapes" in message and "decoder.condition_embedder.weight: file [64, 64] vs model [64, 48]" \
        in message
    assert "the config.json beside the weights does not describe them" in message
    with pytest.raises(AceStepError, match="the given config does not describe these weights"):
        load_dit(folder / "model.safetensors", config=xl_config)


def test_missing_silence_latent(tmp_path: Path) -> None:
    file = T.write_comfy_dit(tmp_path / "diffusion_models" / "acestep_v1.5_turbo.safetensors")
    with pytest.raises(AceStepError) as error:
        load_dit(file)
    message = str(error.value)
    assert "no silence latent found" in message
    assert "huggingface.co/ACE-Step/Ace-Step1.5" in message and "download_silence_latent" in message
    assert load_dit(file, require_silence_latent=False).silence_latent is None
    given = tmp_path / "elsewhere.pt"
    torch.save(T.golden_silence("2b").transpose(1, 2).contiguous(), given)
    assert torch.equal(load_dit(file, silence_latent=given).silence_latent, T.golden_silence("2b"))
    with pytest.raises(AceStepError, match="silence latent not found"):
        load_dit(file, silence_latent=tmp_path / "nope.pt")


def test_silence_latent_safetensors_in_folder(tmp_path: Path) -> None:
    folder = T.write_official_dit(tmp_path / "acestep-v15-turbo", "xl", silence="safetensors")
    assert torch.equal(load_dit(folder).silence_latent, T.golden_silence("xl"))


def test_weights_file_inside_official_folder_uses_its_config(tmp_path: Path) -> None:
    folder = T.write_official_dit(tmp_path / "acestep-v15-sft", "2b", is_turbo=False)
    info = load_dit(folder / "model.safetensors").info
    assert info.config_source == "config.json" and info.dit.variant == "sft"
    assert info.config.sliding_window == 4
