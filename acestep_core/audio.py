"""Audio in the shape the model needs, and the clean-up after decoding (lm-text-vae §3.6, §3.8; tasks §7, §9).

Everything here is a pure function over torch tensors laid out `[channels, samples]` or
`[batch, channels, samples]`. File reading/writing lives in `acestep_core.audio_io`, tiled VAE
encode/decode in `acestep_core.vae_tiling`; both are re-exported here so callers have one import.

Resampling uses soxr (libsoxr's high-quality mode) instead of torchaudio, whose wheels only load against
matching torch builds. The official code resamples with torchaudio's default windowed sinc, so resampled
sources differ from the official ones by the two filters' (tiny) passband difference; 48 kHz input is
untouched either way.
"""

from __future__ import annotations

import math
import random

import numpy as np
import soxr
import torch

from acestep_core.audio_io import load_audio, save_audio, unique_path
from acestep_core.constants import AUDIO_CHANNELS, SAMPLE_RATE
from acestep_core.errors import AceStepError
from acestep_core.vae_tiling import Cancelled, decode_latents, encode_latents

__all__ = [
    "Cancelled", "anti_clip", "apply_fades", "decode_latents", "encode_latents", "is_silent_input", "load_audio",
    "normalize_peak", "reference_clips", "resample", "save_audio", "silence_check", "to_model_audio",
    "unique_path",
]

INPUT_SILENCE_THRESHOLD = 1e-6   # input whose every |x| is below this is not encoded (silence latents instead)
OUTPUT_SILENCE_THRESHOLD = 1e-5  # decoded audio with RMS and peak at or below this is treated as broken
NORMALIZE_FLOOR = 1e-6           # peaks below this are left alone by normalize_peak
REFERENCE_SECONDS = 30
REFERENCE_PIECE_SECONDS = 10


def resample(waveform: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Resample along the last axis with soxr's high-quality (linear-phase) filter.

    Any leading axes are treated as channels. The output has `round(N · to_sr / from_sr)` samples and keeps
    the input's device and dtype (the work itself runs on the CPU in float32). Same rates: returned as is.
    """
    for name, rate in (("from_sr", from_sr), ("to_sr", to_sr)):
        if int(rate) != rate or rate <= 0:
            raise AceStepError(f"Sample rate {name}={rate} is invalid; it must be a positive whole number of Hz.")
    if from_sr == to_sr:
        return waveform
    if waveform.shape[-1] == 0:
        raise AceStepError("Cannot resample audio with no samples; give audio at least one sample long.")
    lead, length = waveform.shape[:-1], waveform.shape[-1]
    frames = waveform.detach().reshape(-1, length).to("cpu", torch.float32).T.contiguous().numpy()
    out = soxr.resample(frames, int(from_sr), int(to_sr), quality="HQ")
    result = torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*lead, out.shape[0])
    return result.to(device=waveform.device, dtype=waveform.dtype)


def to_model_audio(waveform: torch.Tensor, sample_rate: int, name: str = "audio") -> torch.Tensor:
    """`[C, N]` or `[B, C, N]` at any rate → stereo float32 at 48 kHz, clamped to [-1, 1] (lm-text-vae §3.6).

    Mono is duplicated, only the first two of more channels are kept, and nothing is normalised, as in the
    official preprocessing. `name` (a file name or "reference audio") appears in error messages.
    """
    if waveform.ndim not in (2, 3):
        raise AceStepError(
            f"{name}: audio has shape {tuple(waveform.shape)}, expected [channels, samples] or "
            "[batch, channels, samples]."
        )
    channels, length = waveform.shape[-2], waveform.shape[-1]
    if channels == 0 or length == 0:
        raise AceStepError(f"{name}: audio is empty (shape {tuple(waveform.shape)}); give audio with samples.")
    audio = waveform.to(torch.float32)
    if not torch.isfinite(audio).all():
        raise AceStepError(f"{name}: audio contains NaN or infinite samples; re-export it from its source.")
    if channels == 1:
        audio = audio.repeat_interleave(AUDIO_CHANNELS, dim=-2)
    elif channels > AUDIO_CHANNELS:
        audio = audio[..., :AUDIO_CHANNELS, :]
    audio = resample(audio, sample_rate, SAMPLE_RATE)
    return audio.clamp(-1.0, 1.0)


def _peaks(waveform: torch.Tensor) -> torch.Tensor:
    """Per-item peak |x| over channels and time, shaped to broadcast back (`[..., 1, 1]`)."""
    if waveform.ndim < 2:
        raise AceStepError(f"Audio has shape {tuple(waveform.shape)}, expected [..., channels, samples].")
    return waveform.abs().amax(dim=(-2, -1), keepdim=True)


def is_silent_input(waveform: torch.Tensor) -> torch.Tensor:
    """True per item (over the last two axes) when every |sample| < 1e-6: the official rule for source and
    reference audio that is not worth encoding."""
    return _peaks(waveform)[..., 0, 0] < INPUT_SILENCE_THRESHOLD


def silence_check(waveform: torch.Tensor, rms_threshold: float = OUTPUT_SILENCE_THRESHOLD,
                  peak_threshold: float = OUTPUT_SILENCE_THRESHOLD) -> torch.Tensor:
    """True per item when decoded audio is effectively silent (RMS ≤ 1e-5 and peak ≤ 1e-5): a broken
    generation that the official pipeline does not save."""
    peak = _peaks(waveform)[..., 0, 0]
    rms = waveform.float().pow(2).mean(dim=(-2, -1)).sqrt()
    return (rms <= rms_threshold) & (peak <= peak_threshold)


def anti_clip(waveform: torch.Tensor) -> torch.Tensor:
    """Divide each item by `max(peak, 1)`: loud items come back to a peak of 1, quiet ones are unchanged."""
    return waveform / _peaks(waveform).clamp(min=1.0)


def normalize_peak(waveform: torch.Tensor, db: float = -1.0) -> torch.Tensor:
    """Scale each item so its peak sits at `db` dBFS (newer official default −1 dB), quiet items included.

    Items whose peak is below 1e-6 are left alone (nothing to scale). `db` must be ≤ 0.
    """
    if db > 0:
        raise AceStepError(f"Normalization level {db} dBFS would clip; choose a level of 0 dB or below.")
    peak = _peaks(waveform)
    gain = torch.where(peak < NORMALIZE_FLOOR, torch.ones_like(peak), 10 ** (db / 20) / peak)
    return waveform * gain


def apply_fades(waveform: torch.Tensor, sample_rate: int, fade_in_s: float = 0.0,
                fade_out_s: float = 0.0) -> torch.Tensor:
    """Linear fade-in over the first `fade_in_s` seconds and fade-out over the last `fade_out_s` (tasks §9.7)."""
    if fade_in_s < 0 or fade_out_s < 0:
        raise AceStepError(f"Fade lengths must not be negative (fade in {fade_in_s} s, fade out {fade_out_s} s).")
    length = waveform.shape[-1]
    fade_in = min(round(fade_in_s * sample_rate), length)
    fade_out = min(round(fade_out_s * sample_rate), length)
    envelope = torch.ones(length, dtype=waveform.dtype, device=waveform.device)
    if fade_in:
        envelope[:fade_in] *= torch.linspace(0, 1, fade_in, dtype=waveform.dtype, device=waveform.device)
    if fade_out:
        envelope[length - fade_out:] *= torch.linspace(1, 0, fade_out, dtype=waveform.dtype, device=waveform.device)
    return waveform * envelope


def reference_clips(waveform: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """The 30 s timbre clip: `[2, N]` model audio → `[2, 1_440_000]` (lm-text-vae §3.6 step 6, tasks §7).

    Audio shorter than 30 s is repeated whole until it is at least 30 s long; the length is split into
    thirds and one 10 s piece is taken at a random offset inside each third. Offsets come from `rng`
    (seed it from the user's seed), drawn like the official `random.randint` calls, so `random.Random(s)`
    picks the pieces the official code picks after `random.seed(s)`. Check `is_silent_input` first: a
    silent reference should be dropped, not clipped.
    """
    if waveform.ndim != 2 or waveform.shape[0] != AUDIO_CHANNELS or waveform.shape[1] == 0:
        raise AceStepError(
            f"Reference audio has shape {tuple(waveform.shape)}, expected [2, samples]; "
            "pass it through to_model_audio first."
        )
    target = REFERENCE_SECONDS * SAMPLE_RATE
    piece = REFERENCE_PIECE_SECONDS * SAMPLE_RATE
    if waveform.shape[1] < target:
        waveform = waveform.repeat(1, math.ceil(target / waveform.shape[1]))
    total = waveform.shape[1]
    third = total // 3
    starts = (
        rng.randint(0, max(0, third - piece)),
        third + rng.randint(0, max(0, third - piece)),
        2 * third + rng.randint(0, max(0, total - 2 * third - piece)),
    )
    return torch.cat([waveform[:, start:start + piece] for start in starts], dim=-1)
