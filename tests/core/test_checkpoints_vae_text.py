"""Loading the VAE and the Qwen3 stacks (text encoder, 5 Hz LM) from every layout, and identify()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from acestep_core.checkpoint_keys import LM, TEXT_ENCODER
from acestep_core.checkpoints import identify, load_text_encoder, load_vae, read_qwen
from acestep_core.errors import AceStepError
from tests.core import tiny_layouts as T

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["fp32", "bf16", "fp16"]


def _assert_vae_equals_golden(model: torch.nn.Module, dtype: torch.dtype) -> None:
    source, _ = T.golden_vae()
    state = model.state_dict()
    assert set(state) == set(source)
    for key, value in source.items():
        assert state[key].shape == value.shape, key
        assert torch.equal(state[key], value.to(dtype)), key


@pytest.mark.parametrize("stored", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("layout", "write"), [
    ("official", lambda tmp, dt: T.write_official_vae(tmp / "vae", dt)),
    ("comfyui", lambda tmp, dt: T.write_comfy_vae(tmp / "ace_1.5_vae.safetensors", dt)),
    ("comfyui", lambda tmp, dt: T.write_comfy_vae(tmp / "new_names.safetensors", dt, "parametrizations")),
    ("comfyui", lambda tmp, dt: T.write_comfy_vae(tmp / "unsqueezed.safetensors", dt, squeeze_snake=False)),
    ("comfyui-checkpoint", lambda tmp, dt: T.write_aio(tmp / "aio.safetensors", "2b", dt)),
], ids=["official", "comfy-weight_g", "comfy-parametrizations", "comfy-snake-1C1", "all-in-one"])
def test_vae_layouts_load_strictly(tmp_path: Path, layout: str, write, stored: torch.dtype) -> None:
    loaded = load_vae(write(tmp_path, stored), dtype=stored)
    _assert_vae_equals_golden(loaded.model, stored)
    assert loaded.info.kind == "vae" and loaded.info.layout == layout
    assert loaded.info.config.to_dict() == {k: v for k, v in T.golden_vae()[1].items() if k != "_class_name"}


def test_vae_config_is_inferred_for_comfy_files(tmp_path: Path) -> None:
    loaded = load_vae(T.write_comfy_vae(tmp_path / "ace_1.5_vae.safetensors"))
    expected = {k: v for k, v in T.golden_vae()[1].items() if k != "_class_name"}
    assert loaded.info.config.to_dict() == expected
    assert loaded.info.config_source == "inferred from weights"


def test_vae_under_any_prefix(tmp_path: Path) -> None:
    tensors = T.prefixed(T.comfy_vae_tensors(T.golden_vae()[0]), "first_stage_model.")
    save_file(tensors, tmp_path / "checkpoint.safetensors")
    loaded = load_vae(tmp_path / "checkpoint.safetensors")
    _assert_vae_equals_golden(loaded.model, torch.float32)
    assert loaded.info.layout == "prefixed"


def test_vae_loads_in_another_dtype(tmp_path: Path) -> None:
    loaded = load_vae(T.write_official_vae(tmp_path / "vae", torch.bfloat16), dtype="fp32")
    source, _ = T.golden_vae()
    key = "decoder.block.3.res_unit2.conv1.weight_v"
    assert torch.equal(loaded.model.state_dict()[key], source[key].to(torch.bfloat16).float())


def test_vae_with_a_missing_tensor(tmp_path: Path) -> None:
    tensors = T.comfy_vae_tensors(T.golden_vae()[0])
    tensors.pop("decoder.layers.2.layers.3.layers.1.weight_v")
    save_file(tensors, tmp_path / "vae.safetensors")
    with pytest.raises(AceStepError) as error:
        load_vae(tmp_path / "vae.safetensors")
    assert "decoder.block.1.res_unit2.conv1.weight_v" in str(error.value)


@pytest.fixture(scope="module")
def qwens() -> dict[str, tuple[dict, dict]]:
    return {TEXT_ENCODER: T.tiny_qwen(T.TEXT_VOCAB, seed=1), LM: T.tiny_qwen(T.LM_VOCAB, seed=2)}


@pytest.mark.parametrize(("layout", "role", "stored"), [
    *((layout, role, torch.bfloat16) for layout in ("official", "model-prefix", "comfyui", "all-in-one")
      for role in (TEXT_ENCODER, LM)),
    ("official", TEXT_ENCODER, torch.float32), ("comfyui", LM, torch.float16),
])
def test_qwen_layouts_give_official_keys(tmp_path: Path, qwens, layout: str, role: str, stored: torch.dtype) -> None:
    tensors, config = qwens[role]
    if layout == "official":
        path = T.write_qwen_folder(tmp_path / "Qwen3-Embedding-0.6B", tensors, config, dtype=stored)
    elif layout == "model-prefix":
        path = T.write_qwen_folder(tmp_path / "acestep-5Hz-lm-0.6B", tensors, config, "model.", stored)
    elif layout == "comfyui":
        path = T.write_comfy_qwen(tmp_path / "qwen_ace15.safetensors", tensors, stored)
    else:
        path = T.write_aio(tmp_path / "aio.safetensors", "2b", stored, qwens[TEXT_ENCODER][0], qwens[LM][0])
    weights = read_qwen(path, role, dtype=stored)
    assert set(weights.state_dict) == set(tensors)
    assert all(torch.equal(weights.state_dict[k], v.to(stored)) for k, v in tensors.items())
    assert weights.info.kind == role
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "tie_word_embeddings"):
        assert weights.config[name] == config[name], name


def test_text_encoder_file_is_not_an_lm(tmp_path: Path, qwens) -> None:
    file = T.write_comfy_qwen(tmp_path / "qwen_0.6b_ace15.safetensors", qwens[TEXT_ENCODER][0])
    with pytest.raises(AceStepError) as error:
        read_qwen(file, LM)
    assert "not a 5 Hz LM checkpoint" in str(error.value) and "load_text_encoder" in str(error.value)
    with pytest.raises(AceStepError, match="not a VAE checkpoint"):
        load_vae(file)


def test_load_text_encoder_from_folder_and_single_file(tmp_path: Path) -> None:
    tensors, config = T.tiny_qwen(vocab=8, seed=3)
    folder = T.write_qwen_folder(tmp_path / "Qwen3-Embedding-0.6B", tensors, config, dtype=torch.bfloat16)
    loaded = load_text_encoder(folder, dtype="bf16")
    state = loaded.encoder.model.state_dict()
    assert all(torch.equal(state[k], v.to(torch.bfloat16)) for k, v in tensors.items())
    assert loaded.encoder.dtype == torch.bfloat16
    states, mask = loaded.encoder.encode_captions(["hello world"])
    assert states.shape == (1, 3, 8) and mask.tolist() == [[True, True, True]]

    file = T.write_comfy_qwen(tmp_path / "text_encoders" / "qwen_0.6b_ace15.safetensors", tensors)
    with pytest.raises(AceStepError, match="carries no tokenizer"):
        load_text_encoder(file)
    single = load_text_encoder(file, tokenizer_folder=folder)
    assert single.info.config_source == "inferred from weights"
    assert torch.equal(single.encoder.model.embed_tokens.weight, tensors["embed_tokens.weight"])


def test_identify_all_in_one(tmp_path: Path, qwens) -> None:
    file = T.write_aio(tmp_path / "ace_step_1.5_turbo_aio.safetensors", "xl", torch.bfloat16,
                       qwens[TEXT_ENCODER][0], qwens[LM][0])
    infos = identify(file)
    assert [info.kind for info in infos] == ["dit", "vae", "text_encoder", "lm"]
    assert infos[0].dit.family == "xl" and infos[0].dit.variant == "turbo"
    assert all(info.layout == "comfyui-checkpoint" and info.stored_dtype == "bf16" for info in infos)


def test_identify_qwen_role_from_folder_name(tmp_path: Path) -> None:
    tensors, config = T.tiny_qwen(vocab=8, seed=4)
    assert identify(T.write_qwen_folder(tmp_path / "acestep-5Hz-lm-4B", tensors, config))[0].kind == LM
    assert identify(T.write_qwen_folder(tmp_path / "Qwen3-Embedding-0.6B", tensors, config))[0].kind == TEXT_ENCODER
    assert identify(T.write_qwen_folder(tmp_path / "something", tensors, config))[0].kind == "qwen"
