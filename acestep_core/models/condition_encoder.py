"""The condition encoder (`encoder.*`): text projection, lyric encoder, timbre encoder, and packing.

Its output is one sequence per song, `[lyrics][timbre][text]` with the valid rows of each part first;
the DiT cross-attends to all of it.
"""

from __future__ import annotations

import torch
from torch import nn

from acestep_core.models.config import AceStepConfig
from acestep_core.models.layers import EncoderStack


def pack_sequences(first: torch.Tensor, second: torch.Tensor, first_mask: torch.Tensor,
                   second_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate along time, then move the valid rows to the front, keeping their order.

    The masked rows follow (with their content), and the returned bool mask marks the first
    `valid count` rows, as the official packing does.
    """
    hidden = torch.cat([first, second], dim=1)
    mask = torch.cat([first_mask.to(torch.float32), second_mask.to(torch.float32)], dim=1)
    order = mask.argsort(dim=1, descending=True, stable=True)
    packed = torch.gather(hidden, 1, order.unsqueeze(-1).expand_as(hidden))
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=hidden.device)
    return packed, positions[None, :] < lengths[:, None]


class LyricEncoder(EncoderStack):
    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.num_lyric_encoder_hidden_layers)
        self.embed_tokens = nn.Linear(config.text_hidden_dim, config.hidden_size)

    def forward(self, lyric_embeddings: torch.Tensor, lyric_mask: torch.Tensor) -> torch.Tensor:
        # The official stack is sliced with the decoder's layer count; keep that bound.
        return self.run_layers(self.embed_tokens(lyric_embeddings), key_padding=lyric_mask,
                               max_layers=self.config.num_hidden_layers)


class TimbreEncoder(EncoderStack):
    """Encodes reference latents, one row per clip, into one vector per clip, regrouped per song."""

    def __init__(self, config: AceStepConfig, prepend_special_token: bool):
        super().__init__(config, config.num_timbre_encoder_hidden_layers)
        self.embed_tokens = nn.Linear(config.timbre_hidden_dim, config.hidden_size)
        self.special_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.prepend_special_token = prepend_special_token

    def forward(self, clips: torch.Tensor, clip_owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed_tokens(clips)
        if self.prepend_special_token:
            x = torch.cat([self.special_token.expand(x.shape[0], 1, -1), x], dim=1)
        pooled = self.run_layers(x, max_layers=self.config.num_hidden_layers)[:, 0, :]
        return regroup_clips(pooled, clip_owner)


def regroup_clips(per_clip: torch.Tensor, clip_owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, D] clip vectors + owning batch index [N] → [B, max clips, D] and an int64 mask [B, max clips].

    Clips keep their order within a song; empty slots are zero with mask 0.
    """
    owner = clip_owner.to(torch.long)
    songs = int(owner.max().item()) + 1
    counts = torch.bincount(owner, minlength=songs)
    slots = int(counts.max().item())
    slot_of_clip = torch.zeros_like(owner)
    for song in range(songs):
        members = (owner == song).nonzero(as_tuple=True)[0]
        slot_of_clip[members] = torch.arange(members.numel(), device=owner.device)
    grouped = per_clip.new_zeros(songs, slots, per_clip.shape[-1])
    grouped[owner, slot_of_clip] = per_clip
    mask = torch.zeros(songs, slots, dtype=torch.long, device=per_clip.device)
    mask[owner, slot_of_clip] = 1
    return grouped, mask


class ConditionEncoder(nn.Module):
    def __init__(self, config: AceStepConfig, prepend_timbre_token: bool):
        super().__init__()
        self.text_projector = nn.Linear(config.text_hidden_dim, config.hidden_size, bias=False)
        self.lyric_encoder = LyricEncoder(config)
        self.timbre_encoder = TimbreEncoder(config, prepend_timbre_token)

    def forward(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor,
                refer_audio_acoustic_hidden_states_packed: torch.Tensor,
                refer_audio_order_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed condition [B, Ll + clips + Lt, E] and its bool mask; argument names follow the official call."""
        text = self.text_projector(text_hidden_states)
        lyrics = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(refer_audio_acoustic_hidden_states_packed, refer_audio_order_mask)
        packed, packed_mask = pack_sequences(lyrics, timbre, lyric_attention_mask, timbre_mask)
        return pack_sequences(packed, text, packed_mask, text_attention_mask)
