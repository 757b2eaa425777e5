"""Repaint seam handling outside the sampler: the mode presets and the waveform splice (tasks.md §5).

A repaint (or partial lego) regenerates one region; three mechanisms keep the rest of the song equal to
the source: step injection and a latent crossfade inside the sampler (`sampling.repaint`, configured
from `RepaintSeams`), and, after decoding, a splice that pastes the source waveform back outside the
region with a short crossfade. The mode decides how hard each one pulls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acestep_core.constants import SAMPLE_RATE
from acestep_core.errors import AceStepError

CONSERVATIVE_FRAMES = 25
CONSERVATIVE_SECONDS = 0.05


@dataclass(frozen=True)
class RepaintSeams:
    """How a repaint joins the source: injection ratio, latent crossfade frames, waveform crossfade samples.

    `splice` is False only in aggressive mode; balanced with strength 1 still splices, with a hard cut.
    """

    mode: str
    injection_ratio: float
    latent_crossfade_frames: int
    wav_crossfade_samples: int
    splice: bool


def repaint_seams(mode: str, strength: float) -> RepaintSeams:
    """The official presets (§5.1): conservative keeps the most source, aggressive lets the DiT decide.

    Balanced scales with `strength` s ∈ [0, 1]: ratio 1 − s, `round(25·(1 − s))` frames (Python round),
    `int(0.05·(1 − s)·48000)` samples.
    """
    s = min(max(float(strength), 0.0), 1.0)
    if mode == "conservative":
        return RepaintSeams(mode, 1.0, CONSERVATIVE_FRAMES, int(CONSERVATIVE_SECONDS * SAMPLE_RATE), True)
    if mode == "balanced":
        return RepaintSeams(mode, 1.0 - s, round(CONSERVATIVE_FRAMES * (1.0 - s)),
                            int(CONSERVATIVE_SECONDS * (1.0 - s) * SAMPLE_RATE), True)
    if mode == "aggressive":
        return RepaintSeams(mode, 0.0, 0, 0, False)
    raise AceStepError(f"Repaint mode '{mode}' is unknown; choose conservative, balanced or aggressive.")


def splice_mask(length: int, start: int, end: int, crossfade: int) -> torch.Tensor:
    """Float32 `[length]`: 1 on `[start, end)`, 0 elsewhere, linear ramps of `crossfade` samples outside it.

    Ramp values are the inner points of `linspace(0, 1, n + 2)` (and its reverse), clipped at the ends.
    """
    mask = torch.zeros(length, dtype=torch.float32)
    mask[start:end] = 1.0
    if crossfade > 0:
        low = max(start - crossfade, 0)
        if start > low:
            mask[low:start] = torch.linspace(0, 1, start - low + 2)[1:-1]
        high = min(end + crossfade, length)
        if high > end:
            mask[end:high] = torch.linspace(1, 0, high - end + 2)[1:-1]
    return mask


def splice_waveform(generated: torch.Tensor, source: torch.Tensor, start_s: float, end_s: float,
                    crossfade_samples: int) -> torch.Tensor:
    """Paste the source back outside the repainted region: `m·generated + (1 − m)·source` (§5.4).

    `generated` [B, 2, N] (after anti-clip), `source` [2, M] the padded, resampled, clamped source; the
    region is given in seconds on the padded timeline. Samples past `min(N, M)` stay as generated.
    A region that covers everything returns `generated` unchanged.
    """
    min_len = min(generated.shape[-1], source.shape[-1])
    start = min(max(int(start_s * SAMPLE_RATE), 0), min_len)
    end = min(max(int(end_s * SAMPLE_RATE), start), min_len)
    if start == 0 and end >= min_len:
        return generated
    mask = splice_mask(min_len, start, end, crossfade_samples).to(generated.device)
    out = generated.clone()
    kept = source[..., :min_len].to(device=generated.device, dtype=generated.dtype)
    out[..., :min_len] = mask * generated[..., :min_len] + (1.0 - mask) * kept
    return out
