"""A complete tiny model set in the official Hugging Face layout, for pipeline and CLI tests.

`<root>/acestep-v15-turbo/`, `acestep-v15-base/`, `acestep-v15-sft/` (the golden tiny 2B DiT with the
variant set in config.json), `acestep-v15-xl-turbo/` (the golden tiny XL DiT), `vae/` (the golden tiny
VAE) and `Qwen3-Embedding-0.6B/` (a random tiny Qwen3 whose width matches the DiT's text input, with
the real Qwen tokenizer from `qwen_vocab`). The folder names are the official ones, so
`load_models(root, dit=<name>)` finds them exactly as it finds downloaded models. Their config.json
names lyric-alignment heads the tiny DiTs have (`ALIGNMENT_HEADS`; the 2B default heads do not exist in
them), as the XL configs carry their own, so LRC and scores work on them with the default settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3Model

from tests.core import qwen_vocab
from tests.core.tiny_layouts import golden_dit, write_official_dit, write_official_vae

DITS = {
    "acestep-v15-turbo": ("2b", True),
    "acestep-v15-base": ("2b", False),
    "acestep-v15-sft": ("2b", False),
    "acestep-v15-xl-turbo": ("xl", True),
}
TEXT_ENCODER = "Qwen3-Embedding-0.6B"
VAE = "vae"
ALIGNMENT_HEADS = {"0": [3], "1": [0, 2]}


def tiny_text_encoder_config(hidden_size: int) -> dict:
    """A two-layer Qwen3 config with the real vocabulary and the width the tiny DiT expects."""
    return {
        "architectures": ["Qwen3Model"], "model_type": "qwen3", "vocab_size": qwen_vocab.VOCAB_SIZE,
        "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": hidden_size // 4, "hidden_act": "silu",
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000, "attention_bias": False,
        "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": None,
        "bos_token_id": 151643, "eos_token_id": 151643,
    }


def write_text_encoder(folder: Path, hidden_size: int, seed: int = 0) -> Path:
    """`config.json`, `model.safetensors` (random, norms randomised too) and the real tokenizer files."""
    config = tiny_text_encoder_config(hidden_size)
    torch.manual_seed(seed)
    model = Qwen3Model(Qwen3Config.from_dict(config))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    qwen_vocab.write_tokenizer_folder(folder, append_eos=True)
    return folder


def write_tiny_models(root: Path) -> Path:
    """Write every tiny model into `root` (official folder names) and return `root`."""
    for name, (family, turbo) in DITS.items():
        folder = write_official_dit(root / name, family, is_turbo=turbo)
        config = json.loads((folder / "config.json").read_text())
        config["model_version"] = name.removeprefix("acestep-v15-")
        config["lyric_alignment_layers_config"] = ALIGNMENT_HEADS
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_official_vae(root / VAE)
    text_width = golden_dit("2b")[1]["text_hidden_dim"]
    if golden_dit("xl")[1]["text_hidden_dim"] != text_width:
        raise RuntimeError("the golden 2B and XL DiTs expect different text widths; one text encoder cannot serve both")
    write_text_encoder(root / TEXT_ENCODER, text_width)
    return root
