"""Listing usable models under models folders in the official and the ComfyUI layouts."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from acestep_core.checkpoint_discovery import discover_models
from acestep_core.checkpoints import load_dit, load_vae
from tests.core import tiny_layouts as T


def _official_tree(root: Path) -> None:
    T.write_official_dit(root / "acestep-v15-turbo", "2b", torch.bfloat16)
    T.write_official_dit(root / "acestep-v15-sft", "2b", torch.bfloat16, is_turbo=False)
    T.write_sharded_dit(root / "acestep-v15-xl-base", "xl", torch.bfloat16, is_turbo=False)
    T.write_official_vae(root / "vae")
    te, te_config = T.tiny_qwen(vocab=8, seed=5)
    T.write_qwen_folder(root / "Qwen3-Embedding-0.6B", te, te_config)
    T.write_qwen_folder(root / "acestep-5Hz-lm-0.6B", te, te_config, prefix="model.")


def test_official_layout(tmp_path: Path) -> None:
    _official_tree(tmp_path / "checkpoints")
    entries = discover_models([tmp_path])
    by_label = {e.label: e for e in entries}
    assert sorted(by_label) == [
        "Qwen3-Embedding-0.6B (text encoder)",
        "acestep-5Hz-lm-0.6B (lm)",
        "acestep-v15-sft (2B sft)",
        "acestep-v15-turbo (2B turbo)",
        "acestep-v15-xl-base (XL base)",
        "vae (vae)",
    ]
    assert [e.kind for e in entries] == ["dit", "dit", "dit", "lm", "text_encoder", "vae"]
    assert [e.layout for e in entries] == ["official"] * 3 + ["transformers"] + ["official"] * 2
    assert all(e.error is None for e in entries)
    dit = by_label["acestep-v15-xl-base (XL base)"]
    assert dit.path == tmp_path / "checkpoints" / "acestep-v15-xl-base"
    assert load_dit(dit.path).info.dit.variant == "base"


def test_comfy_layout_with_all_in_one_and_foreign_files(tmp_path: Path) -> None:
    te, _ = T.tiny_qwen(T.TEXT_VOCAB, seed=6)
    T.write_comfy_dit(tmp_path / "diffusion_models" / "acestep_v1.5_turbo.safetensors", "2b", torch.bfloat16)
    T.write_comfy_dit(tmp_path / "diffusion_models" / "ace" / "acestep_v1.5_xl_sft_bf16.safetensors", "xl")
    T.write_comfy_vae(tmp_path / "vae" / "ace_1.5_vae.safetensors", torch.bfloat16)
    T.write_comfy_qwen(tmp_path / "text_encoders" / "qwen_0.6b_ace15.safetensors", te, torch.bfloat16)
    T.write_aio(tmp_path / "checkpoints" / "ace_step_1.5_turbo_aio.safetensors", "2b", torch.bfloat16, te)
    save_file({"input_blocks.0.0.weight": torch.zeros(2)}, tmp_path / "checkpoints" / "sd15.safetensors")
    plain_qwen, _ = T.tiny_qwen(vocab=151936, seed=7)
    T.write_comfy_qwen(tmp_path / "text_encoders" / "qwen_3_4b.safetensors", plain_qwen, torch.bfloat16)
    damaged = T.write_comfy_vae(tmp_path / "vae" / "damaged.safetensors")
    damaged.write_bytes(damaged.read_bytes()[:-100])
    (tmp_path / "vae" / "notes.txt").write_text("not a model")

    entries = discover_models([tmp_path])
    labels = [(e.kind, e.label) for e in entries]
    assert labels == [
        ("dit", "checkpoints/ace_step_1.5_turbo_aio.safetensors (2B turbo, all-in-one)"),
        ("dit", "diffusion_models/ace/acestep_v1.5_xl_sft_bf16.safetensors (XL sft)"),
        ("dit", "diffusion_models/acestep_v1.5_turbo.safetensors (2B turbo)"),
        ("text_encoder", "checkpoints/ace_step_1.5_turbo_aio.safetensors (text encoder, all-in-one)"),
        ("text_encoder", "text_encoders/qwen_0.6b_ace15.safetensors (text encoder)"),
        ("unknown", "vae/damaged.safetensors (unreadable)"),
        ("vae", "checkpoints/ace_step_1.5_turbo_aio.safetensors (vae, all-in-one)"),
        ("vae", "vae/ace_1.5_vae.safetensors (vae)"),
    ]
    damaged_entry = next(e for e in entries if e.kind == "unknown")
    assert "truncated" in damaged_entry.error
    aio_vae = next(e for e in entries if e.kind == "vae" and "aio" in e.label)
    assert load_vae(aio_vae.path).info.layout == "comfyui-checkpoint"


def test_kinds_filter_and_missing_roots(tmp_path: Path) -> None:
    _official_tree(tmp_path)
    T.write_comfy_vae(tmp_path / "vae_files" / "vae" / "ace_1.5_vae.safetensors")
    entries = discover_models([tmp_path, tmp_path / "vae_files", tmp_path / "does-not-exist"], kinds=["vae"])
    assert [e.label for e in entries] == ["vae (vae)", "vae/ace_1.5_vae.safetensors (vae)"]


def test_same_files_under_two_roots_are_listed_once(tmp_path: Path) -> None:
    T.write_official_vae(tmp_path / "models" / "vae")
    entries = discover_models([tmp_path / "models", tmp_path / "models"])
    assert len(entries) == 1
