"""The whole DiT checkpoint: decoder, condition encoder, tokenizer, detokenizer and the null condition.

`AceStepModel(config).state_dict()` has exactly the keys of an official `model.safetensors`, so those
files load with `strict=True`. The methods are the pieces a sampler needs, nothing more.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from acestep_core.models.audio_tokenizer import AudioTokenDetokenizer, AudioTokenizer
from acestep_core.models.condition_encoder import ConditionEncoder
from acestep_core.models.config import AceStepConfig
from acestep_core.models.dit import AceStepDiT


class AceStepModel(nn.Module):
    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.config = config
        encoder_config = config.encoder_view()
        self.decoder = AceStepDiT(config)
        # The XL classes prepend the timbre special token; the 2B classes leave it unused.
        self.encoder = ConditionEncoder(encoder_config, prepend_timbre_token=config.is_xl)
        self.tokenizer = AudioTokenizer(encoder_config)
        self.detokenizer = AudioTokenDetokenizer(encoder_config)
        self.null_condition_emb = nn.Parameter(torch.zeros(1, 1, encoder_config.hidden_size))

    def tokenize(self, latents: torch.Tensor, silence_latent: torch.Tensor,
                 attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents [B, T, C] → (quantized [B, T5, E], codes [B, T5, 1] int32, 5 Hz mask [B, T5]).

        T is padded to a whole number of windows with the first frames of `silence_latent` [1, S, C].
        """
        window = self.config.pool_window_size
        remainder = latents.shape[1] % window
        if remainder:
            pad = window - remainder
            filler = silence_latent[:1, :pad].to(latents.dtype).repeat(latents.shape[0], 1, 1)
            latents = torch.cat([latents, filler], dim=1)
            attention_mask = F.pad(attention_mask, (0, pad), value=0)
        windows = latents.unflatten(1, (-1, window))
        stride = math.ceil(attention_mask.shape[1] / windows.shape[1])
        pooled_mask = F.max_pool1d(attention_mask.to(latents.dtype).unsqueeze(1), kernel_size=stride,
                                   stride=stride, ceil_mode=True).squeeze(1)
        quantized, codes = self.tokenizer(windows)
        return quantized, codes, pooled_mask

    def detokenize(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.detokenizer(quantized)

    def codes_to_hints(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio codes [B, T5] or [B, T5, 1] → 25 Hz hints [B, 5·T5, C]."""
        return self.detokenize(self.tokenizer.quantizer.codes_to_vectors(codes))

    def prepare_condition(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                          lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor,
                          refer_audio_acoustic_hidden_states_packed: torch.Tensor,
                          refer_audio_order_mask: torch.Tensor, hidden_states: torch.Tensor,
                          attention_mask: torch.Tensor, silence_latent: torch.Tensor,
                          src_latents: torch.Tensor, chunk_masks: torch.Tensor, is_covers: torch.Tensor,
                          precomputed_lm_hints_25Hz: Optional[torch.Tensor] = None,
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(condition [B, Lc, E], condition mask, context latents [B, T, 2C]) as the DiT consumes them.

        Cover items take the tokenized-and-detokenized source (or the given hints) as their context
        source; the others take `src_latents`. Argument names follow the official call.
        """
        condition, condition_mask = self.encoder(
            text_hidden_states, text_attention_mask, lyric_hidden_states, lyric_attention_mask,
            refer_audio_acoustic_hidden_states_packed, refer_audio_order_mask)
        frames = src_latents.shape[1]
        if precomputed_lm_hints_25Hz is not None:
            hints = precomputed_lm_hints_25Hz[:, :frames]
        else:
            quantized, _, _ = self.tokenize(hidden_states, silence_latent, attention_mask)
            hints = self.detokenize(quantized)[:, :frames]
        source = torch.where(is_covers[:, None, None] > 0, hints, src_latents)
        context = torch.cat([source, chunk_masks.to(hidden_states.dtype)], dim=-1)
        return condition, condition_mask, context

    def null_condition(self, like: torch.Tensor) -> torch.Tensor:
        """The unconditional sequence for classifier-free guidance, shaped like a packed condition."""
        return self.null_condition_emb.to(like.dtype).expand_as(like)
