"""Tiny checkpoints in every layout users have, written from the golden files, for the loader tests.

The golden DiT and VAE weights (official names) are re-saved as: an official Hugging Face folder, a sharded
folder with an index, ComfyUI's single files (DiT without prefix, VAE with Stable-Audio-Tools names) and a
ComfyUI all-in-one checkpoint. The ComfyUI VAE names are produced here from the spec's table
(lm-text-vae.md §3.4) independently of the loader's reverse mapping, so the tests compare two
implementations. Tiny Qwen3 stacks come from transformers' own Qwen3Model, so their names are the real ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"
DIT_FOLDERS = {"2b": "tiny_2b", "xl": "tiny_xl"}
TEXT_VOCAB = 151669
LM_VOCAB = 217204

Tensors = dict[str, torch.Tensor]


def golden_dit(family: str) -> tuple[Tensors, dict]:
    folder = GOLDEN / DIT_FOLDERS[family]
    return load_file(folder / "model.safetensors"), json.loads((folder / "config.json").read_text())


def golden_silence(family: str) -> torch.Tensor:
    """The golden stand-in silence latent, `[1, S, C]`."""
    return load_file(GOLDEN / DIT_FOLDERS[family] / "silence_latent.safetensors")["silence_latent"]


def golden_vae() -> tuple[Tensors, dict]:
    folder = GOLDEN / "vae_tiny"
    return load_file(folder / "diffusion_pytorch_model.safetensors"), json.loads((folder / "config.json").read_text())


def cast(tensors: Tensors, dtype: torch.dtype) -> Tensors:
    return {k: v.to(dtype).contiguous() for k, v in tensors.items()}


def prefixed(tensors: Tensors, prefix: str) -> Tensors:
    return {prefix + k: v for k, v in tensors.items()}


def _save_silence_pt(folder: Path, family: str) -> None:
    """The official `.pt` form: channels first, `[1, C, T]`."""
    torch.save(golden_silence(family).transpose(1, 2).contiguous(), folder / "silence_latent.pt")


def _write_dit_config(folder: Path, family: str, is_turbo: Optional[bool]) -> Tensors:
    """The golden config.json (with `is_turbo`, as the released configs carry it) into `folder`; returns the
    golden tensors."""
    tensors, config = golden_dit(family)
    if is_turbo is not None:
        config = {**config, "is_turbo": is_turbo}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return tensors


def write_official_dit(folder: Path, family: str = "2b", dtype: torch.dtype = torch.float32,
                       is_turbo: Optional[bool] = True, silence: str = "pt") -> Path:
    """`<folder>/{config.json, model.safetensors, silence_latent.pt|.safetensors}` as in ACE-Step/Ace-Step1.5."""
    tensors = _write_dit_config(folder, family, is_turbo)
    save_file(cast(tensors, dtype), folder / "model.safetensors", metadata={"format": "pt"})
    if silence == "pt":
        _save_silence_pt(folder, family)
    elif silence == "safetensors":
        save_file({"silence_latent": golden_silence(family)}, folder / "silence_latent.safetensors")
    return folder


def write_sharded(folder: Path, tensors: Tensors, shards: int = 3, stem: str = "model") -> Path:
    """`<stem>-0000i-of-0000n.safetensors` plus `<stem>.safetensors.index.json`, keys spread round-robin."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {key: names[i % shards] for i, key in enumerate(sorted(tensors))}
    for name in names:
        save_file({k: v for k, v in tensors.items() if weight_map[k] == name}, folder / name)
    index = folder / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2))
    return index


def write_sharded_dit(folder: Path, family: str = "2b", dtype: torch.dtype = torch.float32, shards: int = 3,
                      is_turbo: Optional[bool] = True) -> Path:
    write_sharded(folder, cast(_write_dit_config(folder, family, is_turbo), dtype), shards)
    _save_silence_pt(folder, family)
    return folder


def write_comfy_dit(file: Path, family: str = "2b", dtype: torch.dtype = torch.float32,
                    with_silence: bool = False) -> Path:
    """ComfyUI's `diffusion_models/acestep_v1.5_*.safetensors`: the official tensors, no prefix, no config."""
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(cast(golden_dit(family)[0], dtype), file)
    if with_silence:
        _save_silence_pt(file.parent, family)
    return file


# diffusers → ComfyUI / Stable Audio Tools names (lm-text-vae.md §3.4); {n} is the number of blocks.
_VAE_RULES = [
    (r"^(encoder|decoder)\.conv1\.(.+)$", lambda m, n: f"{m[1]}.layers.0.{m[2]}"),
    (r"^(encoder|decoder)\.snake1\.(.+)$", lambda m, n: f"{m[1]}.layers.{n + 1}.{m[2]}"),
    (r"^(encoder|decoder)\.conv2\.(.+)$", lambda m, n: f"{m[1]}.layers.{n + 2}.{m[2]}"),
    (r"^encoder\.block\.(\d+)\.res_unit(\d)\.(snake1|conv1|snake2|conv2)\.(.+)$",
     lambda m, n: f"encoder.layers.{int(m[1]) + 1}.layers.{int(m[2]) - 1}.layers.{_PART[m[3]]}.{m[4]}"),
    (r"^encoder\.block\.(\d+)\.snake1\.(.+)$", lambda m, n: f"encoder.layers.{int(m[1]) + 1}.layers.3.{m[2]}"),
    (r"^encoder\.block\.(\d+)\.conv1\.(.+)$", lambda m, n: f"encoder.layers.{int(m[1]) + 1}.layers.4.{m[2]}"),
    (r"^decoder\.block\.(\d+)\.snake1\.(.+)$", lambda m, n: f"decoder.layers.{int(m[1]) + 1}.layers.0.{m[2]}"),
    (r"^decoder\.block\.(\d+)\.conv_t1\.(.+)$", lambda m, n: f"decoder.layers.{int(m[1]) + 1}.layers.1.{m[2]}"),
    (r"^decoder\.block\.(\d+)\.res_unit(\d)\.(snake1|conv1|snake2|conv2)\.(.+)$",
     lambda m, n: f"decoder.layers.{int(m[1]) + 1}.layers.{int(m[2]) + 1}.layers.{_PART[m[3]]}.{m[4]}"),
]
_PART = {"snake1": 0, "conv1": 1, "snake2": 2, "conv2": 3}


def comfy_vae_tensors(tensors: Tensors, weight_norm: str = "weight_g", squeeze_snake: bool = True) -> Tensors:
    """The golden diffusers VAE under ComfyUI's names; `weight_norm="parametrizations"` uses
    `parametrizations.weight.original0/1`, `squeeze_snake` stores alpha/beta as `[C]`."""
    blocks = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.block."))
    out = {}
    for key, value in tensors.items():
        name = next(fn(m, blocks) for pattern, fn in _VAE_RULES if (m := re.match(pattern, key)))
        if weight_norm == "parametrizations":
            name = re.sub(r"weight_g$", "parametrizations.weight.original0", name)
            name = re.sub(r"weight_v$", "parametrizations.weight.original1", name)
        if squeeze_snake and name.endswith((".alpha", ".beta")):
            value = value.reshape(-1)
        out[name] = value
    return out


def write_official_vae(folder: Path, dtype: torch.dtype = torch.float32) -> Path:
    tensors, config = golden_vae()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(cast(tensors, dtype), folder / "diffusion_pytorch_model.safetensors")
    return folder


def write_comfy_vae(file: Path, dtype: torch.dtype = torch.float32, weight_norm: str = "weight_g",
                    squeeze_snake: bool = True) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(cast(comfy_vae_tensors(golden_vae()[0], weight_norm, squeeze_snake), dtype), file)
    return file


def tiny_qwen(vocab: int, seed: int) -> tuple[Tensors, dict]:
    """A random tiny Qwen3 stack (transformers' own key names, no prefix) and its config.json dict."""
    from transformers import Qwen3Config, Qwen3Model

    config = {
        "architectures": ["Qwen3Model"], "model_type": "qwen3", "vocab_size": vocab, "hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "attention_bias": False, "tie_word_embeddings": True,
    }
    torch.manual_seed(seed)
    model = Qwen3Model(Qwen3Config.from_dict(config))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, config


def write_tokenizer(folder: Path) -> Path:
    """A minimal tokenizer.json with `<|endoftext|>` (what our TextTokenizer requires), ids below 8."""
    vocab = {"<|endoftext|>": 0, "[UNK]": 1, "hello": 2, "world": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<|endoftext|>"])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def write_qwen_folder(folder: Path, tensors: Tensors, config: dict, prefix: str = "",
                      dtype: torch.dtype = torch.float32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(prefixed(cast(tensors, dtype), prefix), folder / "model.safetensors")
    write_tokenizer(folder)
    return folder


def write_comfy_qwen(file: Path, tensors: Tensors, dtype: torch.dtype = torch.float32) -> Path:
    """ComfyUI's `text_encoders/qwen_*_ace15.safetensors`: the official tensors under `model.`."""
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(prefixed(cast(tensors, dtype), "model."), file)
    return file


def write_aio(file: Path, family: str = "2b", dtype: torch.dtype = torch.float32,
              text_encoder: Optional[Tensors] = None, lm: Optional[Tensors] = None,
              vae_weight_norm: str = "parametrizations") -> Path:
    """A ComfyUI all-in-one checkpoint as ComfyUI saves one (supported_models_base `*_for_saving` prefixes)."""
    tensors = prefixed(golden_dit(family)[0], "model.diffusion_model.")
    tensors |= prefixed(comfy_vae_tensors(golden_vae()[0], vae_weight_norm), "vae.")
    if text_encoder is not None:
        tensors |= prefixed(text_encoder, "text_encoders.qwen3_06b.transformer.model.")
    if lm is not None:
        tensors |= prefixed(lm, "text_encoders.qwen3_2b.transformer.model.")
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(cast(tensors, dtype), file)
    return file
