"""The Qwen3-Embedding text encoder that turns the DiT's prompts into conditioning tensors.

Two paths, as in the official pipeline (shared/spec/lm-text-vae.md §1.5):
- caption prompts run through the whole transformer; the batch is right-padded with `<|endoftext|>`
  and no attention mask is passed, so the causal mask alone keeps padding out of the real tokens;
  the result is `last_hidden_state` (after the final norm);
- lyrics prompts only go through the token-embedding table (the DiT has its own lyric encoder).
Each prompt is tokenized on its own (captions cut at 256 tokens, lyrics at 2048), then padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from transformers import Qwen3Config, Qwen3Model

from acestep_core.constants import LYRICS_MAX_TOKENS, TEXT_MAX_TOKENS
from acestep_core.errors import AceStepError
from acestep_core.text.prompts import TextPrompts
from acestep_core.text.tokenizer import TextTokenizer, load_tokenizer

__all__ = ["TextEncoder", "TokenBatch", "TextConditioning", "build_qwen3_config", "load_tokenizer", "pad_right"]

Device = Union[str, torch.device]


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids `[B, L]` (long) and their mask `[B, L]` (bool, False on padding)."""

    ids: torch.Tensor
    mask: torch.Tensor

    def fit(self, length: int, pad_id: int) -> "TokenBatch":
        """Pad on the right, or crop, to `length` tokens (the non-cover branch matches the main length)."""
        current = self.ids.shape[1]
        if length <= current:
            return TokenBatch(self.ids[:, :length], self.mask[:, :length])
        extra = length - current
        ids = torch.nn.functional.pad(self.ids, (0, extra), value=pad_id)
        mask = torch.nn.functional.pad(self.mask, (0, extra), value=False)
        return TokenBatch(ids, mask)


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Stack id lists into one batch, padding each on the right to the longest."""
    if not sequences:
        raise ValueError("need at least one sequence")
    length = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = True
    return TokenBatch(ids, mask)


@dataclass(frozen=True)
class TextConditioning:
    """Everything the DiT's condition encoder takes from the text side, one row per batch item.

    The non-cover pair exists only when some prompt asked for it (audio_cover_strength < 1); its
    mask and length match the main caption batch.
    """

    text_hidden_states: torch.Tensor
    text_attention_mask: torch.Tensor
    text_token_ids: torch.Tensor
    lyric_hidden_states: torch.Tensor
    lyric_attention_mask: torch.Tensor
    lyric_token_ids: torch.Tensor
    non_cover_text_hidden_states: Optional[torch.Tensor] = None
    non_cover_text_attention_mask: Optional[torch.Tensor] = None


def build_qwen3_config(config: Mapping[str, Any]) -> Qwen3Config:
    """A transformers Qwen3 config from a `config.json` dict, attention through SDPA."""
    model_type = config.get("model_type", "qwen3")
    if model_type != "qwen3":
        raise AceStepError(
            f"The text-encoder config.json says model_type {model_type!r}; expected 'qwen3' "
            "(the Qwen3-Embedding-0.6B folder of the ACE-Step checkpoints)."
        )
    qwen_config = Qwen3Config.from_dict(dict(config))
    qwen_config._attn_implementation = "sdpa"
    return qwen_config


class TextEncoder:
    """Qwen3-Embedding-0.6B with its tokenizer: prompts in, DiT conditioning tensors out."""

    def __init__(self, model: Qwen3Model, tokenizer: Any):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = TextTokenizer.wrap(tokenizer)
        vocab = self.model.embed_tokens.num_embeddings
        if self.tokenizer.vocab_size > vocab:
            raise AceStepError(
                f"The text-encoder tokenizer knows {self.tokenizer.vocab_size} tokens but the model only "
                f"{vocab}: the tokenizer files and the weights come from different models."
            )

    @classmethod
    def from_state_dict(
        cls,
        config: Mapping[str, Any],
        state_dict: Mapping[str, torch.Tensor],
        tokenizer: Any,
        dtype: torch.dtype = torch.float32,
        device: Device = "cpu",
    ) -> "TextEncoder":
        """Build the encoder from `config.json` and weights already in the official key form.

        Keys have no `model.` prefix (`embed_tokens.weight`, `layers.0.…`, `norm.weight`); the
        checkpoint loader normalises other layouts first. The network is created without random
        initialisation and takes the given tensors, cast to `dtype` on `device`.
        """
        qwen_config = build_qwen3_config(config)
        with torch.device("meta"):
            model = Qwen3Model(qwen_config)
        expected = set(model.state_dict().keys())
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise AceStepError(
                "The text-encoder weights do not fit Qwen3-Embedding: "
                f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}. "
                "Use the Qwen3-Embedding-0.6B model.safetensors of the ACE-Step checkpoints."
            )
        weights = {key: tensor.to(device=device, dtype=dtype) for key, tensor in state_dict.items()}
        try:
            model.load_state_dict(weights, strict=True, assign=True)
        except RuntimeError as error:
            raise AceStepError(
                f"The text-encoder weights do not fit the shapes in config.json: {error}"
            ) from error
        # Rotary frequencies are computed, not stored; rebuild them on the real device. Casting them to
        # the model dtype as well matches the official pipeline, which moves the whole module to its dtype.
        model.rotary_emb = type(model.rotary_emb)(config=qwen_config).to(device=device, dtype=dtype)
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def tokenize(self, prompts: Sequence[str], max_length: int) -> TokenBatch:
        """Tokenize each prompt on its own (cut at `max_length`), then right-pad the batch."""
        return pad_right([self.tokenizer.encode(p, max_length) for p in prompts], self.tokenizer.pad_id)

    def tokenize_captions(self, prompts: Sequence[str]) -> TokenBatch:
        return self.tokenize(prompts, TEXT_MAX_TOKENS)

    def tokenize_lyrics(self, prompts: Sequence[str]) -> TokenBatch:
        return self.tokenize(prompts, LYRICS_MAX_TOKENS)

    @torch.no_grad()
    def caption_states(self, ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states `[B, L, H]` of right-padded caption ids (causal mask only, no padding mask)."""
        output = self.model(input_ids=ids.to(self.device), use_cache=False)
        return output.last_hidden_state.to(self.dtype)

    @torch.no_grad()
    def lyric_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings `[B, L, H]` of lyric ids (no transformer layers)."""
        return self.model.embed_tokens(ids.to(self.device)).to(self.dtype)

    def encode_captions(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption prompts → (hidden states `[B, L, H]`, mask bool `[B, L]`)."""
        batch = self.tokenize_captions(prompts)
        return self.caption_states(batch.ids), batch.mask.to(self.device)

    def encode_lyrics(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Lyrics prompts → (embeddings `[B, L, H]`, mask bool `[B, L]`)."""
        batch = self.tokenize_lyrics(prompts)
        return self.lyric_embeddings(batch.ids), batch.mask.to(self.device)

    def encode(self, items: Sequence[TextPrompts]) -> TextConditioning:
        """All text conditioning of a batch, including the non-cover caption branch when requested."""
        captions = self.tokenize_captions([item.caption for item in items])
        lyrics = self.tokenize_lyrics([item.lyrics for item in items])
        non_cover_states = non_cover_mask = None
        wanted = [item.non_cover_caption is not None for item in items]
        if any(wanted):
            if not all(wanted):
                raise ValueError("either every batch item has a non-cover caption prompt or none")
            non_cover = self.tokenize_captions([item.non_cover_caption for item in items])
            non_cover = non_cover.fit(captions.ids.shape[1], self.tokenizer.pad_id)
            non_cover_states = self.caption_states(non_cover.ids)
            non_cover_mask = non_cover.mask.to(self.device)
        return TextConditioning(
            text_hidden_states=self.caption_states(captions.ids),
            text_attention_mask=captions.mask.to(self.device),
            text_token_ids=captions.ids.to(self.device),
            lyric_hidden_states=self.lyric_embeddings(lyrics.ids),
            lyric_attention_mask=lyrics.mask.to(self.device),
            lyric_token_ids=lyrics.ids.to(self.device),
            non_cover_text_hidden_states=non_cover_states,
            non_cover_text_attention_mask=non_cover_mask,
        )
