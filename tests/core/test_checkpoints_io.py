"""Reading safetensors files, shards and the silence latent, and the errors for damaged inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from acestep_core.checkpoint_io import open_checkpoint, read_silence_latent, read_tensors, resolve_dtype
from acestep_core.checkpoints import load_dit, load_vae, locate
from acestep_core.errors import AceStepError
from tests.core import tiny_layouts as T


def test_single_file_header_and_tensors(tmp_path: Path) -> None:
    file = T.write_comfy_dit(tmp_path / "dit.safetensors", "2b", torch.bfloat16)
    files = open_checkpoint(file)
    source, _ = T.golden_dit("2b")
    assert set(files.tensors) == set(source)
    assert files.stored_dtypes == {"BF16"}
    key = "decoder.layers.1.mlp.gate_proj.weight"
    assert files.tensors[key].shape == tuple(source[key].shape)
    read = read_tensors({key: files.tensors[key]}, torch.float16, "cpu")[key]
    assert read.dtype == torch.float16
    assert torch.equal(read, source[key].to(torch.bfloat16).to(torch.float16))


def test_sharded_checkpoint_reads_every_shard(tmp_path: Path) -> None:
    source, _ = T.golden_dit("xl")
    index = T.write_sharded(tmp_path, source, shards=4)
    files = open_checkpoint(index)
    assert len(files.files) == 4
    assert set(files.tensors) == set(source)
    tensors = read_tensors(files.tensors, torch.float32, "cpu")
    assert all(torch.equal(tensors[k], source[k]) for k in source)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AceStepError, match="not found"):
        open_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(AceStepError, match="not found"):
        load_dit(tmp_path / "nothing")


@pytest.mark.parametrize("cut", [4, 100, 5000])
def test_truncated_file_names_file_and_fix(tmp_path: Path, cut: int) -> None:
    file = T.write_comfy_dit(tmp_path / "cut.safetensors")
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - cut] if cut > 8 else data[:cut])
    with pytest.raises(AceStepError) as error:
        load_dit(file, require_silence_latent=False)
    message = str(error.value)
    assert str(file) in message
    assert "truncated" in message and "download it again" in message


def test_corrupt_header_and_trailing_bytes(tmp_path: Path) -> None:
    file = tmp_path / "garbage.safetensors"
    file.write_bytes((20).to_bytes(8, "little") + b"{not json at all!!!}" + b"\0" * 64)
    with pytest.raises(AceStepError, match="corrupt safetensors header"):
        open_checkpoint(file)
    good = T.write_comfy_dit(tmp_path / "padded.safetensors")
    good.write_bytes(good.read_bytes() + b"\0" * 16)
    with pytest.raises(AceStepError, match="16 bytes after the last tensor"):
        open_checkpoint(good)


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "model.ckpt"
    file.write_bytes(b"\0")
    with pytest.raises(AceStepError, match="only .safetensors"):
        open_checkpoint(file)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    folder = T.write_sharded_dit(tmp_path / "acestep-v15-xl-turbo", "xl", shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(AceStepError) as error:
        load_dit(folder)
    assert "1 of 3 shards are missing" in str(error.value)
    assert "model-00002-of-00003.safetensors" in str(error.value)


def test_index_listing_a_tensor_its_shard_lacks(tmp_path: Path) -> None:
    index = T.write_sharded(tmp_path, T.golden_dit("2b")[0], shards=2)
    data = json.loads(index.read_text())
    data["weight_map"]["decoder.extra.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(AceStepError, match="decoder.extra.weight"):
        open_checkpoint(index)


def test_shard_file_given_directly_resolves_to_its_index(tmp_path: Path) -> None:
    folder = T.write_sharded_dit(tmp_path / "acestep-v15-turbo", "2b", shards=2)
    located = locate(folder / "model-00002-of-00002.safetensors")
    assert located.weights == folder / "model.safetensors.index.json"
    assert located.folder == folder


def test_folder_without_weights_suggests_model_folders(tmp_path: Path) -> None:
    T.write_official_dit(tmp_path / "acestep-v15-turbo")
    T.write_official_vae(tmp_path / "vae")
    with pytest.raises(AceStepError) as error:
        load_vae(tmp_path)
    assert "acestep-v15-turbo, vae" in str(error.value)


def test_silence_latent_pt_is_transposed(tmp_path: Path) -> None:
    silence = T.golden_silence("2b")
    torch.save(silence.transpose(1, 2).contiguous(), tmp_path / "silence_latent.pt")
    loaded = read_silence_latent(tmp_path / "silence_latent.pt", channels=silence.shape[2])
    assert loaded.shape == silence.shape
    assert torch.equal(loaded, silence)


def test_silence_latent_safetensors_is_kept(tmp_path: Path) -> None:
    silence = T.golden_silence("xl")
    save_file({"silence_latent": silence}, tmp_path / "silence_latent.safetensors")
    assert torch.equal(read_silence_latent(tmp_path / "silence_latent.safetensors"), silence)


def test_silence_latent_orientation_follows_channels(tmp_path: Path) -> None:
    silence = T.golden_silence("2b")
    torch.save(silence.clone(), tmp_path / "time_first.pt")
    assert torch.equal(read_silence_latent(tmp_path / "time_first.pt", channels=silence.shape[2]), silence)
    with pytest.raises(AceStepError, match="uses 5 latent channels"):
        read_silence_latent(tmp_path / "time_first.pt", channels=5)


def test_silence_latent_pt_is_loaded_safely(tmp_path: Path) -> None:
    bad = tmp_path / "silence_latent.pt"
    torch.save({"silence_latent": torch.zeros(1, 2, 3), "code": print}, bad)
    with pytest.raises(AceStepError, match="could not read the silence latent"):
        read_silence_latent(bad)


def test_resolve_dtype() -> None:
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("float16") is torch.float16
    assert resolve_dtype(torch.float32) is torch.float32
    assert resolve_dtype(None) is torch.float32
    with pytest.raises(AceStepError, match="fp32, bf16 or fp16"):
        resolve_dtype("int8")
