"""The Qwen3 text encoder on a tiny random model with the real vocabulary and tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3Model

from acestep_core.constants import LYRICS_MAX_TOKENS, TEXT_MAX_TOKENS
from acestep_core.errors import AceStepError
from acestep_core.text import prompts as P
from acestep_core.text.encoder import TextEncoder, TokenBatch, pad_right
from acestep_core.text.tokenizer import TextTokenizer, load_tokenizer
from tests.conftest import GOLDEN
from tests.core import qwen_vocab

TINY_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": qwen_vocab.VOCAB_SIZE,
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "hidden_act": "silu", "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000, "rope_scaling": None, "attention_bias": False,
    "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": None, "torch_dtype": "bfloat16",
    "bos_token_id": 151643, "eos_token_id": 151643,
}
GOLDEN_CASES = json.loads((GOLDEN / "prompts" / "dit_text_prompts.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(qwen_vocab.qwen_tokenizer(append_eos=True))


@pytest.fixture(scope="module")
def reference() -> Qwen3Model:
    """A random tiny Qwen3 (norm weights randomised too, so no layer is an identity)."""
    torch.manual_seed(0)
    model = Qwen3Model(Qwen3Config.from_dict(TINY_CONFIG)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def encoder(reference: Qwen3Model, tokenizer: TextTokenizer) -> TextEncoder:
    state = {key: value.clone() for key, value in reference.state_dict().items()}
    return TextEncoder.from_state_dict(TINY_CONFIG, state, tokenizer)


def long_caption_prompt() -> str:
    return P.caption_prompt(P.TEXT2MUSIC_INSTRUCTION, "slow building post-rock crescendo, " * 60,
                            P.metas_block(80, "4", "G major", 300))


def caption_prompts() -> list[str]:
    short = P.caption_prompt(P.COVER_INSTRUCTION, "lo-fi", P.metas_block(None, "", "", None))
    medium = P.caption_prompt(P.TEXT2MUSIC_INSTRUCTION, "Upbeat synth-pop with punchy drums and a bright vocal",
                              P.metas_block(120, "4", "C major", 180.7))
    return [medium, short, long_caption_prompt()]


def test_caption_states_equal_each_item_run_alone(encoder: TextEncoder, reference: Qwen3Model,
                                                  tokenizer: TextTokenizer) -> None:
    prompts = caption_prompts()
    hidden, mask = encoder.encode_captions(prompts)
    lengths = [len(tokenizer.encode(p, TEXT_MAX_TOKENS)) for p in prompts]
    assert lengths[2] == TEXT_MAX_TOKENS and lengths[1] < lengths[0] < TEXT_MAX_TOKENS
    assert hidden.shape == (3, TEXT_MAX_TOKENS, 32) and hidden.dtype == torch.float32
    assert mask.dtype == torch.bool
    ids = encoder.tokenize_captions(prompts).ids
    for row, length in enumerate(lengths):
        assert mask[row].tolist() == [True] * length + [False] * (TEXT_MAX_TOKENS - length)
        assert ids[row, length:].eq(tokenizer.pad_id).all() and ids[row, length - 1] == tokenizer.eos_id
        with torch.no_grad():
            alone = reference(input_ids=ids[row : row + 1, :length]).last_hidden_state[0]
        torch.testing.assert_close(hidden[row, :length], alone, rtol=1e-5, atol=1e-5)
    # Padding positions still go through the model (causal, unmasked), so they are not zero.
    assert hidden[1, lengths[1]:].abs().sum() > 0


def test_lyric_embeddings_are_embedding_rows(encoder: TextEncoder, reference: Qwen3Model,
                                             tokenizer: TextTokenizer) -> None:
    prompts = [P.lyrics_prompt("[Verse]\nhello world", "en"), P.lyrics_prompt("[Instrumental]", "unknown"),
               P.lyrics_prompt("\n".join(["[Chorus]"] + ["oh oh oh, light up the sky"] * 300), "en")]
    embeddings, mask = encoder.encode_lyrics(prompts)
    ids = encoder.tokenize_lyrics(prompts).ids
    lengths = [len(tokenizer.encode(p, LYRICS_MAX_TOKENS)) for p in prompts]
    assert lengths[2] == LYRICS_MAX_TOKENS and embeddings.shape == (3, LYRICS_MAX_TOKENS, 32)
    table = reference.embed_tokens.weight.detach()
    assert torch.equal(embeddings, table[ids])
    for row, length in enumerate(lengths):
        assert mask[row].sum() == length and mask[row, :length].all()
        assert ids[row, length - 1] == tokenizer.eos_id


def test_encode_batch_with_non_cover_branch(encoder: TextEncoder) -> None:
    request = P.TextRequest(task="complete", caption="Add synth pads", track_classes=("synth",),
                            audio_cover_strength=0.5, batch_size=2, source_samples=960000)
    items = P.build_prompts(request).items
    out = encoder.encode(items)
    main = encoder.tokenize_captions([i.caption for i in items])
    non_cover = encoder.tokenize_captions([i.non_cover_caption for i in items])
    assert non_cover.ids.shape[1] > main.ids.shape[1]  # the text2music prompt is longer: it is cropped
    fitted = non_cover.fit(main.ids.shape[1], encoder.tokenizer.pad_id)
    assert out.non_cover_text_hidden_states.shape == out.text_hidden_states.shape
    assert torch.equal(out.non_cover_text_attention_mask, fitted.mask)
    torch.testing.assert_close(out.non_cover_text_hidden_states, encoder.caption_states(fitted.ids))
    assert torch.equal(out.text_token_ids, main.ids)
    lyrics = encoder.tokenize_lyrics([i.lyrics for i in items])
    assert torch.equal(out.lyric_token_ids, lyrics.ids) and torch.equal(out.lyric_attention_mask, lyrics.mask)
    plain = encoder.encode(P.build_prompts(P.TextRequest(caption="x")).items)
    assert plain.non_cover_text_hidden_states is None and plain.non_cover_text_attention_mask is None


def test_token_batch_fit_pads_and_crops() -> None:
    batch = pad_right([[5, 6, 7], [8]], pad_id=99)
    assert batch.ids.tolist() == [[5, 6, 7], [8, 99, 99]]
    grown = batch.fit(5, pad_id=99)
    assert grown.ids.tolist() == [[5, 6, 7, 99, 99], [8, 99, 99, 99, 99]]
    assert grown.mask.tolist() == [[True] * 3 + [False] * 2, [True] + [False] * 4]
    cropped = batch.fit(2, pad_id=99)
    assert isinstance(cropped, TokenBatch) and cropped.ids.tolist() == [[5, 6], [8, 99]]


def test_dtype_and_weights_are_taken_not_initialised(reference: Qwen3Model, tokenizer: TextTokenizer) -> None:
    state = reference.state_dict()
    encoder = TextEncoder.from_state_dict(TINY_CONFIG, state, tokenizer, dtype=torch.bfloat16)
    assert encoder.dtype == torch.bfloat16 and encoder.device == torch.device("cpu")
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(value, state[key].to(torch.bfloat16)), key
    hidden, _ = encoder.encode_captions(caption_prompts()[:2])
    assert hidden.dtype == torch.bfloat16 and torch.isfinite(hidden).all()


def test_bad_weights_and_config_raise_user_errors(reference: Qwen3Model, tokenizer: TextTokenizer) -> None:
    state = reference.state_dict()
    prefixed = {f"model.{key}": value for key, value in state.items()}
    with pytest.raises(AceStepError, match="missing"):
        TextEncoder.from_state_dict(TINY_CONFIG, prefixed, tokenizer)
    with pytest.raises(AceStepError, match="model_type"):
        TextEncoder.from_state_dict({**TINY_CONFIG, "model_type": "llama"}, state, tokenizer)
    with pytest.raises(AceStepError, match="shapes"):
        TextEncoder.from_state_dict({**TINY_CONFIG, "intermediate_size": 48}, state, tokenizer)
    with pytest.raises(AceStepError, match="tokenizer"):
        small = {**state, "embed_tokens.weight": state["embed_tokens.weight"][:1000]}
        TextEncoder.from_state_dict({**TINY_CONFIG, "vocab_size": 1000}, small, tokenizer)


def golden_prompts() -> list[str]:
    keys = ("caption_prompt", "lyrics_prompt")
    return [item[key] for case in GOLDEN_CASES for item in case["items"] for key in keys]


def test_load_tokenizer_from_tokenizer_json(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    loaded = load_tokenizer(qwen_vocab.write_tokenizer_folder(tmp_path / "Qwen3-Embedding-0.6B"))
    for prompt in golden_prompts():
        assert loaded.encode(prompt, TEXT_MAX_TOKENS) == tokenizer.encode(prompt, TEXT_MAX_TOKENS)


def test_load_tokenizer_from_vocab_and_merges(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    loaded = load_tokenizer(qwen_vocab.write_vocab_merges_folder(tmp_path / "qwen_tokenizer"))
    assert loaded.vocab_size == qwen_vocab.VOCAB_SIZE
    for prompt in golden_prompts():
        assert loaded.encode(prompt, LYRICS_MAX_TOKENS) == tokenizer.encode(prompt, LYRICS_MAX_TOKENS)


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(AceStepError, match="not found"):
        load_tokenizer(tmp_path / "absent")
    with pytest.raises(AceStepError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(AceStepError, match="Cannot read"):
        load_tokenizer(tmp_path)


def test_transformers_tokenizer_is_accepted(reference: Qwen3Model, tokenizer: TextTokenizer) -> None:
    wrapped = TextTokenizer.wrap(qwen_vocab.transformers_tokenizer(append_eos=True))
    for prompt in golden_prompts()[:6]:
        assert wrapped.encode(prompt, TEXT_MAX_TOKENS) == tokenizer.encode(prompt, TEXT_MAX_TOKENS)
    with pytest.raises(TypeError):
        TextTokenizer.wrap(object())
