"""Tiled VAE encode and decode with "overlap and discard" (lm-text-vae §3.7).

Long audio does not fit through the VAE at once, so it goes through in windows: each window is a core
plus `overlap` of context on each side (clipped at the ends of the signal); after the VAE, the context
part of the result is cut off and only the core is kept. When the overlap covers the network's receptive
field, the cores join into exactly the one-pass result, up to floating-point rounding.

Window edges sit on whole latent frames (the official code rounds them to frames; we require the sizes
to be frame multiples, which the official defaults are), and batch items go through one at a time, as
newer official code does, so peak memory depends on the window, not on the batch or the song length.
Decoded cores land in one preallocated float32 CPU buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Optional

import torch

from acestep_core.errors import AceStepError
from acestep_core.models.vae import OobleckPosterior, OobleckVAE

ENCODE_CHUNK = 30 * 48000    # samples per encode window; the official code uses 15 s on GPUs with ≤ 8 GB
ENCODE_OVERLAP = 2 * 48000   # samples of context on each side of an encode core
DECODE_CHUNK = 512           # latent frames per decode window
DECODE_OVERLAP = 64          # latent frames of context on each side of a decode core

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], Optional[bool]]


class Cancelled(AceStepError):
    """The caller's cancel check asked to stop (it returned True) in the middle of a tiled encode/decode."""


def _cores(length: int, chunk: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """`(core_start, core_end, window_start, window_end)` for each window; one window when length ≤ chunk."""
    if length <= chunk:
        return [(0, length, 0, length)]
    stride = chunk - 2 * overlap
    return [
        (start, min(start + stride, length), max(0, start - overlap), min(length, start + stride + overlap))
        for start in range(0, length, stride)
    ]


def _check_tiling(chunk: int, overlap: int, unit: int, what: str) -> None:
    if overlap < 0 or chunk <= 2 * overlap:
        raise AceStepError(
            f"{what}: chunk ({chunk}) must be larger than twice the overlap ({overlap}), and overlap ≥ 0."
        )
    if chunk % unit or overlap % unit:
        raise AceStepError(
            f"{what}: chunk ({chunk}) and overlap ({overlap}) must be whole latent frames (multiples of {unit} "
            "samples) so that window edges fall on frame boundaries."
        )


def _windows(batch: int, cores: list[tuple[int, int, int, int]], progress: Optional[ProgressFn],
             cancel: Optional[CancelFn], what: str) -> Iterator[tuple[int, tuple[int, int, int, int]]]:
    """Every (item, window) pair, checking `cancel` before and reporting `progress` after each one."""
    total = batch * len(cores)
    done = 0
    for item in range(batch):
        for window in cores:
            if cancel is not None and cancel():
                raise Cancelled(f"{what} cancelled after {done} of {total} windows.")
            yield item, window
            done += 1
            if progress is not None:
                progress(done, total)


def encode_latents(vae: OobleckVAE, waveform: torch.Tensor, sample: bool = True,
                   generator: Optional[torch.Generator] = None, chunk: int = ENCODE_CHUNK,
                   overlap: int = ENCODE_OVERLAP, progress: Optional[ProgressFn] = None,
                   cancel: Optional[CancelFn] = None) -> torch.Tensor:
    """`[B, 2, N]` 48 kHz audio → float32 latents `[B, 64, N // hop]` on the VAE's device.

    `sample=True` draws from the posterior like the official code (`mean + std·ε`); pass a seeded
    `generator` to make that repeatable (official encoding is unseeded). `sample=False` returns the mean,
    a deterministic encode. The posterior's mean and scale are assembled from the tiles first and sampled
    once over the whole song, so the noise, and hence the result, does not depend on the tiling.
    `chunk`/`overlap` are in samples (defaults 30 s / 2 s); audio no longer than `chunk` goes in one pass.
    """
    hop = vae.hop_length
    _check_tiling(chunk, overlap, hop, "VAE encode")
    if waveform.ndim != 3 or waveform.shape[-1] < hop:
        raise AceStepError(
            f"VAE encode: waveform has shape {tuple(waveform.shape)}, expected [batch, 2, samples] with at "
            f"least {hop} samples; load audio with load_audio + to_model_audio."
        )
    batch, frames = waveform.shape[0], waveform.shape[-1] // hop
    cores = _cores(frames, chunk // hop, overlap // hop)
    stats = torch.empty(batch, 2 * vae.latent_channels, frames, device=vae.device, dtype=vae.dtype)
    with torch.no_grad():
        for item, (core_start, core_end, win_start, win_end) in _windows(batch, cores, progress, cancel,
                                                                        "VAE encode"):
            # The last window also takes the samples past the last whole frame, as a one-pass encode sees them.
            sample_end = waveform.shape[-1] if win_end == frames else win_end * hop
            posterior = vae.encode(waveform[item:item + 1, :, win_start * hop:sample_end])
            keep = slice(core_start - win_start, core_end - win_start)
            stats[item, :, core_start:core_end] = torch.cat([posterior.mean, posterior.scale_raw], 1)[0, :, keep]
        posterior = OobleckPosterior(*stats.chunk(2, dim=1))
        latents = posterior.sample(generator) if sample else posterior.mode()
    return latents.float()


def decode_latents(vae: OobleckVAE, latents: torch.Tensor, chunk: int = DECODE_CHUNK, overlap: int = DECODE_OVERLAP,
                   progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None) -> torch.Tensor:
    """`[B, 64, T]` latents (VAE layout, not the DiT's `[B, T, 64]`) → float32 CPU audio `[B, 2, T · hop]`.

    `chunk`/`overlap` are in latent frames (defaults 512 / 64, stride 384 = 15.36 s); latents of at most
    `chunk` frames are decoded in one pass. The output is not clipped: apply `anti_clip` afterwards.
    """
    _check_tiling(chunk, overlap, 1, "VAE decode")
    if latents.ndim != 3 or latents.shape[1] != vae.latent_channels or latents.shape[-1] == 0:
        raise AceStepError(
            f"VAE decode: latents have shape {tuple(latents.shape)}, expected [batch, {vae.latent_channels}, "
            "frames] (channels first); transpose DiT latents [batch, frames, channels] first."
        )
    if not torch.isfinite(latents).all():
        raise AceStepError("VAE decode: the latents contain NaN or infinite values; the generation failed, "
                           "try another seed or fewer/more steps.")
    hop = vae.hop_length
    batch, frames = latents.shape[0], latents.shape[-1]
    audio = torch.empty(batch, vae.config.audio_channels, frames * hop, dtype=torch.float32)
    cores = _cores(frames, chunk, overlap)
    with torch.no_grad():
        for item, (core_start, core_end, win_start, win_end) in _windows(batch, cores, progress, cancel,
                                                                        "VAE decode"):
            decoded = vae.decode(latents[item:item + 1, :, win_start:win_end])
            keep = slice((core_start - win_start) * hop, (core_end - win_start) * hop)
            audio[item, :, core_start * hop:core_end * hop] = decoded[0, :, keep].to("cpu", torch.float32)
            del decoded
    return audio
