"""One DiT sampling run from prepared inputs: conditions → noise → the step loop → latents.

This is the model side of the official `generate_audio`, built from our pieces: `prepare_condition` for
the main (and, for partial cover strength, the non-cover) condition, CFG doubling with the null
condition, seeded noise with optional retake mixing, and `sampling.sample`. The pipeline and the parity
verifier both call `run_dit`, so the code that reproduces the golden runs is the code that makes songs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from acestep_core.models.acestep import AceStepModel
from acestep_core.models.dit import CrossAttentionCache
from acestep_core.sampling import RepaintInputs, SamplerSettings, Schedule, StepInfo, draw_noise, sample
from acestep_core.sampling.noise import mix_retake_noise

Seeds = Union[int, Sequence[int]]


@dataclass
class DitInputs:
    """Everything the DiT is conditioned on for one batch (names follow the official arguments)."""

    text_hidden_states: torch.Tensor
    text_attention_mask: torch.Tensor
    lyric_hidden_states: torch.Tensor
    lyric_attention_mask: torch.Tensor
    refer_audio_acoustic_hidden_states_packed: torch.Tensor
    refer_audio_order_mask: torch.Tensor
    src_latents: torch.Tensor
    chunk_masks: torch.Tensor
    is_covers: torch.Tensor
    silence_latent: torch.Tensor
    attention_mask: Optional[torch.Tensor] = None
    precomputed_lm_hints_25Hz: Optional[torch.Tensor] = None
    non_cover_text_hidden_states: Optional[torch.Tensor] = None
    non_cover_text_attention_mask: Optional[torch.Tensor] = None


@dataclass
class Retake:
    """A variance-preserving blend of the seed's noise with a second draw (official `retake_*`)."""

    variance: float
    seeds: Seeds


Condition = tuple[torch.Tensor, torch.Tensor]


def _velocity_fn(model: AceStepModel) -> Callable:
    def velocity(x: torch.Tensor, t: torch.Tensor, condition: Condition, cache: Optional[dict]) -> torch.Tensor:
        states, context = condition
        kv = cache.setdefault("cross_attention", CrossAttentionCache()) if cache is not None else None
        return model.decoder(x, t, t, states, context, cache=kv)

    return velocity


def _condition(model: AceStepModel, inputs: DitInputs, *, non_cover: bool, guided: bool) -> Condition:
    latent_mask = inputs.attention_mask
    if latent_mask is None:
        latent_mask = torch.ones(inputs.src_latents.shape[:2], dtype=inputs.src_latents.dtype,
                                 device=inputs.src_latents.device)
    if non_cover:
        frames, batch = inputs.src_latents.shape[1], inputs.src_latents.shape[0]
        silence = inputs.silence_latent[:, :frames].to(inputs.src_latents.dtype).expand(batch, -1, -1)
        states, _, context = model.prepare_condition(
            inputs.non_cover_text_hidden_states, inputs.non_cover_text_attention_mask,
            inputs.lyric_hidden_states, inputs.lyric_attention_mask,
            inputs.refer_audio_acoustic_hidden_states_packed, inputs.refer_audio_order_mask,
            silence, latent_mask, inputs.silence_latent, silence, inputs.chunk_masks,
            torch.zeros_like(inputs.is_covers))
    else:
        states, _, context = model.prepare_condition(
            inputs.text_hidden_states, inputs.text_attention_mask,
            inputs.lyric_hidden_states, inputs.lyric_attention_mask,
            inputs.refer_audio_acoustic_hidden_states_packed, inputs.refer_audio_order_mask,
            inputs.src_latents, latent_mask, inputs.silence_latent, inputs.src_latents, inputs.chunk_masks,
            inputs.is_covers, precomputed_lm_hints_25Hz=inputs.precomputed_lm_hints_25Hz)
    if guided:
        states = torch.cat([states, model.null_condition(states)])
        context = torch.cat([context, context])
    return states, context


def run_dit(model: AceStepModel, inputs: DitInputs, schedule: Schedule, settings: SamplerSettings, seeds: Seeds,
            *, retake: Optional[Retake] = None, repaint: Optional[RepaintInputs] = None,
            sde_generator: Optional[torch.Generator] = None,
            callback: Optional[Callable[[StepInfo], None]] = None) -> torch.Tensor:
    """Final latents [B, T, C] of one sampling run.

    `seeds` is one seed for the whole batch or one per item (noise drawn as the official code does, on
    the inputs' device and dtype). `callback` sees every step and may raise to cancel.
    """
    guided = schedule.family == "base" and settings.guidance_scale > 1
    with torch.no_grad():
        condition = _condition(model, inputs, non_cover=False, guided=guided)
        non_cover = None
        if settings.audio_cover_strength < 1.0:
            if inputs.non_cover_text_hidden_states is None:
                raise ValueError("audio_cover_strength < 1 needs the non-cover text condition")
            non_cover = _condition(model, inputs, non_cover=True, guided=guided)
        batch, frames, channels = inputs.src_latents.shape
        latents = inputs.src_latents
        noise = draw_noise(batch, frames, channels, seeds, device=latents.device, dtype=latents.dtype)
        if retake is not None and retake.variance > 0:
            second = draw_noise(batch, frames, channels, retake.seeds, device=latents.device, dtype=latents.dtype)
            noise = mix_retake_noise(noise, second, retake.variance)
        return sample(_velocity_fn(model), noise, schedule, condition, settings=settings,
                      non_cover_condition=non_cover, source_latents=inputs.src_latents, repaint=repaint,
                      generator=sde_generator, callback=callback)
