"""Loading the 5 Hz LM in every size and key form: `acestep-5Hz-lm-0.6B`, `-1.7B`, `-4B` (official folders,
with and without the `model.` prefix) and ComfyUI's `qwen_*_ace15` files (single file with no config or
tokenizer, or inside an all-in-one checkpoint), each against transformers' own Qwen3 model on the same
weights. The real sizes are checked on the meta device against the spec's table and file sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3Model

from acestep_core.checkpoint_identify import infer_qwen_config
from acestep_core.checkpoint_keys import LM
from acestep_core.checkpoints import read_qwen
from acestep_core.planner import PlanRequest, PlannerSettings, build_lm, load_planner, plan_song
from tests.core import qwen_vocab
from tests.core.tiny_lm import LM_VOCAB, single_thread  # noqa: F401 (fixture)

# Scaled-down shapes that keep each real model's ratios: query width (heads × head_dim) to hidden width
# (2, 1 and 1.6) and query to key/value heads (2, 2 and 4); real sizes in REAL below.
SHAPES = {
    "0.6B": {"hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
             "intermediate_size": 48, "num_hidden_layers": 2},
    "1.7B": {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
             "intermediate_size": 96, "num_hidden_layers": 2},
    "4B": {"hidden_size": 20, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 4,
           "intermediate_size": 76, "num_hidden_layers": 3},
}
# lm-text-vae.md §2.1: layers, hidden, MLP, heads q/kv, head_dim, and the bf16 file size where known.
REAL = {
    "0.6B": ({"num_hidden_layers": 28, "hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
              "num_key_value_heads": 8, "head_dim": 128}, 1_325_804_024),
    "1.7B": ({"num_hidden_layers": 28, "hidden_size": 2048, "intermediate_size": 6144, "num_attention_heads": 16,
              "num_key_value_heads": 8, "head_dim": 128}, 3_708_521_528),
    "4B": ({"num_hidden_layers": 36, "hidden_size": 2560, "intermediate_size": 9728, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128}, None),
}
HEADER_BYTES_MAX = 64 * 1024


def config(size: str) -> dict:
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": LM_VOCAB,
            "hidden_act": "silu", "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "attention_bias": False, "tie_word_embeddings": True, **SHAPES[size]}


def weights(size: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = Qwen3Model(Qwen3Config.from_dict(config(size)))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def write(layout: str, size: str, root: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """The LM as the official release or ComfyUI ships it."""
    if layout in ("official", "official-prefixed"):
        folder = root / f"acestep-5Hz-lm-{size}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config(size)))
        if layout == "official":  # the 1.7B in Ace-Step1.5: no prefix, {"format": "pt"}
            save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        else:  # the separate 0.6B repo: `model.` prefix, no metadata
            save_file({"model." + k: v for k, v in tensors.items()}, folder / "model.safetensors")
        return folder
    name = {"0.6B": "0.6b", "1.7B": "1.7b", "4B": "4b"}[size]
    if layout == "comfyui":
        file = root / "text_encoders" / f"qwen_{name}_ace15.safetensors"
        file.parent.mkdir(parents=True)
        save_file({"model." + k: v for k, v in tensors.items()}, file)
        return file
    sub = {"1.7B": "qwen3_2b", "4B": "qwen3_4b"}[size]
    text_encoder = weights("0.6B", seed=9)  # beside it, as ComfyUI saves it: chosen by its name, not its size
    file = root / "checkpoints" / "ace_step_1.5_all_in_one.safetensors"
    file.parent.mkdir(parents=True)
    save_file({f"text_encoders.{sub}.transformer.model.{k}": v for k, v in tensors.items()}
              | {f"text_encoders.qwen3_06b.transformer.model.{k}": v for k, v in text_encoder.items()}, file)
    return file


@pytest.mark.parametrize("layout, size", [
    ("official-prefixed", "0.6B"), ("official", "1.7B"), ("official", "4B"), ("comfyui", "1.7B"), ("comfyui", "4B"),
    ("all-in-one", "1.7B"), ("all-in-one", "4B"),
])
def test_every_size_and_key_form_computes_like_transformers(tmp_path: Path, layout: str, size: str) -> None:
    tensors = weights(size)
    read = read_qwen(write(layout, size, tmp_path, tensors), LM)
    model = build_lm(read.config, read.state_dict)
    for name, value in SHAPES[size].items():
        assert getattr(model.config, name) == value, name
    assert model.lm_head.weight is model.model.embed_tokens.weight
    reference = Qwen3Model(Qwen3Config.from_dict(config(size))).eval()
    reference.load_state_dict(tensors)
    ids = torch.tensor([[151644, 872, 198, 151669, 151669 + 63999, 151668, 271]])
    with torch.inference_mode():
        ours = model(input_ids=ids).logits
        expected = reference(input_ids=ids).last_hidden_state @ tensors["embed_tokens.weight"].T
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", REAL)
def test_real_sizes_are_inferred_from_the_weights_and_tied(size: str) -> None:
    """The shapes of each released LM (meta tensors, nothing allocated) give its table row and, tied, its file size."""
    values, file_bytes = REAL[size]
    with torch.device("meta"):
        shapes = Qwen3Model(Qwen3Config(vocab_size=LM_VOCAB, **values)).state_dict()
    inferred = infer_qwen_config({k: tuple(v.shape) for k, v in shapes.items()}, LM, size)
    assert {k: inferred[k] for k in values} == values and inferred["tie_word_embeddings"] is True
    model = build_lm(inferred, shapes, dtype=torch.bfloat16, device="meta")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    parameters = sum(p.numel() for p in model.parameters())
    if file_bytes is not None:
        assert 0 < file_bytes - 2 * parameters < HEADER_BYTES_MAX


def test_comfy_file_with_the_text_encoders_tokenizer(tmp_path: Path) -> None:
    """A single-file 4B-shaped LM (config inferred) with the Qwen3-Embedding tokenizer folder, whose post-processor
    appends `<|endoftext|>`: the planner adds nothing to prompts and writes exactly the requested codes."""
    file = write("comfyui", "4B", tmp_path, weights("4B", seed=3))
    tokenizer = qwen_vocab.write_tokenizer_folder(tmp_path / "Qwen3-Embedding-0.6B", append_eos=True)
    lm = load_planner(file, tokenizer_folder=tokenizer)
    prompt = "<|im_start|>user\nhi"
    with_post_processor = lm.tokenizer.backend.encode(prompt, add_special_tokens=True).ids
    assert with_post_processor[-1] == 151643 and list(lm.encode(prompt)) == with_post_processor[:-1]
    assert lm.model.config.num_attention_heads == 8 and lm.model.config.head_dim == 4
    item = plan_song(lm, PlanRequest(caption="calm piano", duration=10, use_cot_caption=False, seeds=[1]),
                     PlannerSettings(max_duration=12, max_text_tokens=80)).items[0]
    assert len(item.codes) == 50 and all(0 <= code < 64000 for code in item.codes)
