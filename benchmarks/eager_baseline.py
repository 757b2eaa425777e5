"""The plain eager baseline of `bench_networks.py`: our networks computed the textbook way.

Each function runs the same modules (same parameters, same inputs) as the production `forward`, so the
two must give the same numbers, but computes what the production code optimises in the naive way:

- attention is an explicit `softmax(q·kᵀ·scale + mask)·v` in the activation dtype, with the grouped
  key/value heads repeated for every query head and the full score matrix materialised;
- every layer rebuilds its own additive mask (all-zero where nothing is hidden) instead of one mask per
  forward, and the DiT recomputes the cross-attention keys/values on every call (no cache);
- the VAE computes its weight norm with the explicit formula `g · v / ‖v‖` on every call.

The benchmark measures how much the production choices (SDPA, masks once, cross-attention cache) buy
against this, in the same run; the agreement check keeps this file honest as the networks evolve.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from acestep_core.models.condition_encoder import ConditionEncoder, pack_sequences, regroup_clips
from acestep_core.models.dit import AceStepDiT, DiTLayer
from acestep_core.models.layers import Attention, EncoderStack, apply_rotary, rotary_tables
from acestep_core.models.vae import OobleckResidualUnit, OobleckVAE


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, kv_heads, L, d] → [B, kv_heads·groups, L, d], each kv head copied for its query heads."""
    if groups == 1:
        return x
    batch, heads, length, dim = x.shape
    return x[:, :, None].expand(batch, heads, groups, length, dim).reshape(batch, heads * groups, length, dim)


def eager_mask(length: int, window: Optional[int], dtype: torch.dtype, device: torch.device,
               key_padding: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Additive mask [B or 1, 1, L, L] (0 keep, dtype-min drop), always materialised, even when all zero."""
    idx = torch.arange(length, device=device)
    if window is None:
        keep = torch.ones(length, length, dtype=torch.bool, device=device)
    else:
        keep = (idx[:, None] - idx[None, :]).abs() <= window
    keep = keep[None, None]
    if key_padding is not None:
        keep = keep & key_padding.to(torch.bool)[:, None, None, :]
    return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)


def eager_attention(attn: Attention, x: torch.Tensor, mask: Optional[torch.Tensor],
                    rotary: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                    source: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Self-attention over `x` (rotated by `rotary`), or cross-attention over `source` with its
    keys/values projected here, on every call."""
    query = attn.q_norm(attn._heads(attn.q_proj(x))).transpose(1, 2)
    keys, values = attn.project_kv(x if source is None else source)
    if source is None and rotary is not None:
        cos, sin = rotary
        query, keys = apply_rotary(query, cos, sin), apply_rotary(keys, cos, sin)
    groups = attn.num_heads // attn.num_kv_heads
    keys, values = repeat_kv(keys, groups), repeat_kv(values, groups)
    scores = torch.matmul(query, keys.transpose(-1, -2)) * attn.head_dim ** -0.5
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    out = torch.matmul(weights, values).transpose(1, 2).reshape(*x.shape[:-1], -1)
    return attn.o_proj(out)


def _dit_layer(layer: DiTLayer, x: torch.Tensor, modulation: torch.Tensor, window: Optional[int],
               rotary: tuple[torch.Tensor, torch.Tensor], condition: torch.Tensor) -> torch.Tensor:
    shift, scale, gate, c_shift, c_scale, c_gate = (layer.scale_shift_table + modulation).chunk(6, dim=1)
    mask = eager_mask(x.shape[1], window, x.dtype, x.device)
    normed = (layer.self_attn_norm(x) * (1 + scale) + shift).type_as(x)
    x = (x + eager_attention(layer.self_attn, normed, mask, rotary=rotary) * gate).type_as(x)
    x = x + eager_attention(layer.cross_attn, layer.cross_attn_norm(x).type_as(x), None, source=condition)
    normed = (layer.mlp_norm(x) * (1 + c_scale) + c_shift).type_as(x)
    return (x + layer.mlp(normed) * c_gate).type_as(x)


def eager_dit_forward(dit: AceStepDiT, hidden_states: torch.Tensor, timestep: torch.Tensor,
                      timestep_r: torch.Tensor, encoder_hidden_states: torch.Tensor,
                      context_latents: torch.Tensor) -> torch.Tensor:
    """What `AceStepDiT.forward` computes, the plain way (see the module docstring)."""
    config = dit.config
    temb_t, mod_t = dit.time_embed(timestep)
    temb_r, mod_r = dit.time_embed_r(timestep - timestep_r)
    temb, modulation = temb_t + temb_r, mod_t + mod_r
    x = torch.cat([context_latents, hidden_states], dim=-1)
    frames = x.shape[1]
    if frames % config.patch_size:
        x = F.pad(x, (0, 0, 0, config.patch_size - frames % config.patch_size))
    x = dit.proj_in(x)
    condition = dit.condition_embedder(encoder_hidden_states)
    rotary = rotary_tables(x.shape[1], config.head_dim, config.rope_theta, x.dtype, x.device)
    for index, layer in enumerate(dit.layers):
        x = _dit_layer(layer, x, modulation, config.window_for_layer(index), rotary, condition)
    shift, scale = (dit.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    x = (dit.norm_out(x) * (1 + scale) + shift).type_as(x)
    return dit.proj_out(x)[:, :frames]


def _encoder_stack(stack: EncoderStack, x: torch.Tensor, key_padding: Optional[torch.Tensor]) -> torch.Tensor:
    config = stack.config
    rotary = rotary_tables(x.shape[1], config.head_dim, config.rope_theta, x.dtype, x.device)
    # The official stacks are sliced with the decoder's layer count, as the production forward does.
    for index, layer in enumerate(stack.layers[:config.num_hidden_layers]):
        mask = eager_mask(x.shape[1], config.window_for_layer(index), x.dtype, x.device, key_padding)
        x = x + eager_attention(layer.self_attn, layer.input_layernorm(x), mask, rotary=rotary)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return stack.norm(x)


def eager_condition_encoder(encoder: ConditionEncoder, text_hidden_states: torch.Tensor,
                            text_attention_mask: torch.Tensor, lyric_hidden_states: torch.Tensor,
                            lyric_attention_mask: torch.Tensor, refer_latents: torch.Tensor,
                            refer_order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `ConditionEncoder.forward` computes, the plain way; packing reuses the production helpers."""
    text = encoder.text_projector(text_hidden_states)
    lyric_stack = encoder.lyric_encoder
    lyrics = _encoder_stack(lyric_stack, lyric_stack.embed_tokens(lyric_hidden_states), lyric_attention_mask)
    timbre_stack = encoder.timbre_encoder
    clips = timbre_stack.embed_tokens(refer_latents)
    if timbre_stack.prepend_special_token:
        clips = torch.cat([timbre_stack.special_token.expand(clips.shape[0], 1, -1), clips], dim=1)
    timbre, timbre_mask = regroup_clips(_encoder_stack(timbre_stack, clips, None)[:, 0, :], refer_order)
    packed, packed_mask = pack_sequences(lyrics, timbre, lyric_attention_mask, timbre_mask)
    return pack_sequences(packed, text, packed_mask, text_attention_mask)


def _explicit_weight(conv: nn.Module) -> torch.Tensor:
    norm = conv.weight_v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    return conv.weight_v * (conv.weight_g / norm)


def _conv(conv: nn.Module, x: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    if transposed:
        return F.conv_transpose1d(x, _explicit_weight(conv), conv.bias, conv.stride, conv.padding)
    return F.conv1d(x, _explicit_weight(conv), conv.bias, conv.stride, conv.padding, conv.dilation)


def _residual(unit: OobleckResidualUnit, x: torch.Tensor) -> torch.Tensor:
    h = _conv(unit.conv2, unit.snake2(_conv(unit.conv1, unit.snake1(x))))
    crop = (x.shape[-1] - h.shape[-1]) // 2
    if crop > 0:
        x = x[..., crop:-crop]
    return x + h


def eager_vae_decode(vae: OobleckVAE, latent: torch.Tensor) -> torch.Tensor:
    """What `OobleckVAE.decode` computes, with the weight norm written out on every call."""
    decoder = vae.decoder
    x = _conv(decoder.conv1, latent.to(device=vae.device, dtype=vae.dtype))
    for block in decoder.block:
        x = _conv(block.conv_t1, block.snake1(x), transposed=True)
        for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
            x = _residual(unit, x)
    return _conv(decoder.conv2, decoder.snake1(x))
