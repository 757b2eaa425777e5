"""A tiny 5 Hz LM for the planner tests: the real Qwen3 vocabulary with the 65535 audio-code tokens, random weights.

The tokenizer is `qwen_vocab`'s real Qwen3 vocabulary (ids checked against the official tokenizer by the
prompt golden files) with `<|audio_code_N|>` added at 151669 + N by the planner's own `with_audio_codes`,
so the constrained decoder's tables come from the true token splits. The network is transformers'
Qwen3ForCausalLM at toy width with the real vocabulary size and tied embeddings, as the released LMs.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from acestep_core.planner.model import build_lm
from acestep_core.planner.tokens import LMTokenizer, TokenTables, with_audio_codes
from tests.core import qwen_vocab

LM_VOCAB = 217204


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Toy-sized ops are dominated by thread hand-offs (20× slower with 2 threads on a busy machine):
    planner test modules import this fixture to run on one thread, restoring the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TOKENIZER_VERSION = 1


@functools.lru_cache(maxsize=None)
def _tokenizer_json() -> str:
    """The serialized LM tokenizer, built once and cached on disk beside the Qwen vocabulary files."""
    cached = qwen_vocab.cache_dir() / f"acestep_lm_v{TOKENIZER_VERSION}_tokenizer.json"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    serialized = with_audio_codes(qwen_vocab.qwen_tokenizer(append_eos=False)).to_str()
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.part")
    partial.write_text(serialized, encoding="utf-8")
    partial.replace(cached)
    return serialized


def lm_tokenizer() -> LMTokenizer:
    """A fresh LM tokenizer (real Qwen3 vocabulary + audio codes)."""
    return LMTokenizer(Tokenizer.from_str(_tokenizer_json()))


@functools.lru_cache(maxsize=None)
def shared_tables() -> TokenTables:
    """Token tables built once per test session (they take a second or two)."""
    return TokenTables(lm_tokenizer())


def tiny_config(hidden: int = 16, layers: int = 2) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": LM_VOCAB, "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "num_hidden_layers": layers, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": hidden // 2, "hidden_act": "silu", "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "attention_bias": False, "tie_word_embeddings": True,
    }


def tiny_weights(seed: int = 0, hidden: int = 16, layers: int = 2) -> tuple[dict[str, torch.Tensor], dict]:
    """Random un-prefixed weights (official key names, no lm_head) and their config.json dict.

    Embeddings get a larger spread than transformers' default so the toy model's distributions are not
    flat. Every embedding also shares a direction that the tokens holding a newline point along more
    strongly, so (with the tied output layer) the toy model likes to end its lines, as a trained one does:
    captions and lyrics then end in tens of tokens instead of running to their limits.
    """
    from transformers import Qwen3Config, Qwen3Model

    config = tiny_config(hidden, layers)
    torch.manual_seed(seed)
    model = Qwen3Model(Qwen3Config.from_dict(config))
    with torch.no_grad():
        model.embed_tokens.weight.normal_(0.0, 1.0)
        direction = torch.nn.functional.normalize(torch.randn(hidden), dim=0)
        model.embed_tokens.weight += 1.5 * direction
        model.embed_tokens.weight[shared_tables().newline_ids] += 2.5 * direction
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}, config


def tiny_lm(seed: int = 0, hidden: int = 16, layers: int = 2):
    weights, config = tiny_weights(seed, hidden, layers)
    return build_lm(config, weights)


def write_lm_folder(folder: Path, seed: int = 0, prefix: str = "model.") -> Path:
    """An official-style `acestep-5Hz-lm-*` folder: config.json, model.safetensors, tokenizer.json."""
    weights, config = tiny_weights(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({prefix + key: value.contiguous() for key, value in weights.items()}, folder / "model.safetensors")
    (folder / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return folder


def write_comfy_lm(file: Path, seed: int = 0) -> Path:
    """ComfyUI's `text_encoders/qwen_*_ace15.safetensors`: the same tensors under `model.`, no tokenizer."""
    weights, _ = tiny_weights(seed)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file({"model." + key: value.contiguous() for key, value in weights.items()}, file)
    return file


def write_plain_tokenizer_folder(folder: Path) -> Path:
    """A Qwen3 tokenizer folder without audio codes (like Qwen3-Embedding's, minus the EOS post-processor)."""
    return qwen_vocab.write_tokenizer_folder(folder, append_eos=False)
