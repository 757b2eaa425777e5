"""Understand mode's input: source audio as the 5 Hz audio codes the LM reads.

The LM never hears audio; it reads the codes the DiT's audio tokenizer makes from VAE latents (five 25 Hz
frames per code, the last window padded with silence-latent frames; lm-text-vae.md §2.8). `latent_codes`
takes a LATENT as the Source Audio Encode stage gives it (`[B, C, T]` at 25 Hz; `audio.encode_latents`
makes one from a waveform, sampling the posterior as the official "convert to codes" does). The codes then
go to `plan_understand`, which turns them into metadata, caption and lyrics.
"""

from __future__ import annotations

from typing import Any

import torch

from acestep_core.errors import AceStepError


def latent_codes(dit: Any, latents: torch.Tensor, silence_latent: torch.Tensor, item: int = 0) -> tuple[int, ...]:
    """The codes of one item of a `[B, C, T]` latent, through `dit.tokenize` (`AceStepModel`)."""
    channels = dit.config.audio_acoustic_hidden_dim
    if latents.ndim != 3 or latents.shape[1] != channels:
        raise AceStepError(f"The source latent has shape {list(latents.shape)}; the DiT's audio tokenizer reads "
                           f"[batch, {channels}, frames]. Encode the audio with the VAE that belongs to this DiT.")
    if not 0 <= item < latents.shape[0]:
        raise AceStepError(f"The source latent holds {latents.shape[0]} item(s); item {item} does not exist.")
    parameter = next(dit.parameters())
    frames = latents[item:item + 1].transpose(1, 2).to(device=parameter.device, dtype=parameter.dtype)
    mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    with torch.no_grad():
        _, codes, _ = dit.tokenize(frames, silence_latent.to(frames), mask)
    return tuple(int(code) for code in codes.flatten().tolist())

