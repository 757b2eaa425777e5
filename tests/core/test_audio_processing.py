"""Resampling quality, channel layout, post-processing and the reference clip rule (acestep_core.audio)."""

import math
import random

import numpy as np
import pytest
import torch

from acestep_core.audio import (
    anti_clip, apply_fades, is_silent_input, normalize_peak, reference_clips, resample, silence_check,
    to_model_audio,
)
from acestep_core.errors import AceStepError

SR = 48000


def _tone(freq: float, sample_rate: int, seconds: float = 1.0, amp: float = 0.5, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(sample_rate * seconds), dtype=torch.float64) / sample_rate
    return (amp * torch.sin(2 * math.pi * freq * t + phase)).float()


def _level_db(signal: torch.Tensor, amp: float) -> float:
    """RMS of the middle half relative to a full sine of amplitude `amp` (edges skipped: filter start-up)."""
    x = signal.double().numpy()
    core = x[len(x) // 4: 3 * len(x) // 4]
    return 20 * math.log10(max(np.sqrt((core ** 2).mean()), 1e-30) / (amp / math.sqrt(2)))


def _peak_hz(signal: torch.Tensor, sample_rate: int) -> float:
    """Frequency of the strongest FFT bin, refined by parabolic interpolation on the log magnitude."""
    x = signal.double().numpy() * np.hanning(len(signal))
    mag = np.log(np.abs(np.fft.rfft(x, n=8 * len(x))) + 1e-30)
    k = int(np.argmax(mag))
    offset = 0.5 * (mag[k - 1] - mag[k + 1]) / (mag[k - 1] - 2 * mag[k] + mag[k + 1])
    return (k + offset) * sample_rate / (8 * len(x))


@pytest.mark.parametrize("freq, from_sr", [(1000, 44100), (15000, 44100), (5000, 22050), (997, 32000),
                                           (20000, 96000), (440, 44101)])
def test_resampled_sine_keeps_frequency_level_and_length(freq: int, from_sr: int) -> None:
    out = resample(_tone(freq, from_sr), from_sr, SR)
    assert out.shape[-1] == math.floor(from_sr * SR / from_sr + 0.5) == SR
    assert abs(_peak_hz(out, SR) - freq) < 0.5
    assert abs(_level_db(out, 0.5)) < 0.01


@pytest.mark.parametrize("length", [1000, 1001, 12345])
def test_resampled_length_is_rounded_ratio(length: int) -> None:
    out = resample(torch.zeros(2, length), 44100, SR)
    assert out.shape == (2, math.floor(length * SR / 44100 + 0.5))


@pytest.mark.parametrize("freq", [26000, 30000, 40000])
def test_downsampling_rejects_aliases(freq: int) -> None:
    """Tones above the new Nyquist (24 kHz) must vanish, not fold back into the audible band."""
    assert _level_db(resample(_tone(freq, 96000), 96000, SR), 0.5) < -100


def test_resample_keeps_layout_dtype_and_channels_apart() -> None:
    left, right = _tone(1000, 44100), _tone(3000, 44100)
    batch = torch.stack([torch.stack([left, right]), torch.stack([right, left])]).double()
    out = resample(batch, 44100, SR)
    assert out.shape == (2, 2, SR) and out.dtype == torch.float64
    assert abs(_peak_hz(out[0, 0], SR) - 1000) < 0.5 and abs(_peak_hz(out[0, 1], SR) - 3000) < 0.5
    assert torch.equal(out[0, 0], out[1, 1])
    same = torch.randn(2, 10)
    assert resample(same, SR, SR) is same


@pytest.mark.parametrize("from_sr, to_sr", [(0, SR), (SR, -1), (44100.5, SR)])
def test_resample_refuses_bad_rates(from_sr, to_sr) -> None:
    with pytest.raises(AceStepError, match="Sample rate"):
        resample(torch.zeros(1, 100), from_sr, to_sr)


def test_mono_becomes_identical_stereo_at_48k() -> None:
    mono = _tone(1000, 44100)[None]
    out = to_model_audio(mono, 44100)
    assert out.shape == (2, SR) and out.dtype == torch.float32
    assert torch.equal(out[0], out[1])
    assert abs(_peak_hz(out[0], SR) - 1000) < 0.5


def test_extra_channels_are_dropped_and_loud_audio_clamped() -> None:
    channels = torch.stack([_tone(f, SR, 0.1, amp=2.0) for f in (100, 200, 300, 400)])
    out = to_model_audio(channels.double(), SR)
    assert out.shape == (2, 4800) and out.dtype == torch.float32
    assert torch.equal(out, channels[:2].clamp(-1, 1))
    batched = to_model_audio(channels[None, :1], SR)
    assert batched.shape == (1, 2, 4800)


@pytest.mark.parametrize("waveform, match", [
    (torch.zeros(2, 0), "empty"),
    (torch.zeros(0, 10), "empty"),
    (torch.zeros(10), "expected"),
    (torch.tensor([[0.0, float("nan")]]), "NaN"),
    (torch.tensor([[0.0, float("inf")]]), "NaN"),
])
def test_bad_model_audio_names_the_input(waveform: torch.Tensor, match: str) -> None:
    with pytest.raises(AceStepError, match=f"song.wav.*{match}"):
        to_model_audio(waveform, SR, name="song.wav")


def test_normalize_peak_reaches_target_per_item_and_skips_silence() -> None:
    audio = torch.stack([0.1 * torch.randn(2, 1000), 3.0 * torch.randn(2, 1000), torch.zeros(2, 1000)])
    out = normalize_peak(audio, db=-1.0)
    peaks = out.abs().amax(dim=(1, 2))
    assert torch.allclose(peaks[:2], torch.full((2,), 10 ** (-1 / 20)), rtol=1e-6)
    assert torch.equal(out[2], audio[2])
    assert torch.allclose(out[0] / audio[0], out[0, 0, 0] / audio[0, 0, 0])  # one gain for the whole item
    assert math.isclose(normalize_peak(audio[0], db=-6.0).abs().max().item(), 10 ** (-6 / 20), rel_tol=1e-6)
    with pytest.raises(AceStepError, match="0 dB"):
        normalize_peak(audio, db=0.5)


def test_anti_clip_only_touches_items_above_full_scale() -> None:
    quiet = 0.5 * torch.rand(2, 100)
    loud = quiet.clone()
    loud[1, 7] = -4.0
    out = anti_clip(torch.stack([quiet, loud]))
    assert torch.equal(out[0], quiet)
    assert torch.allclose(out[1], loud / 4.0)


def test_silence_checks_per_item() -> None:
    audio = torch.stack([torch.zeros(2, 100), torch.full((2, 100), 5e-7), torch.full((2, 100), 5e-6),
                         torch.full((2, 100), 1e-3)])
    assert is_silent_input(audio).tolist() == [True, True, False, False]
    assert silence_check(audio).tolist() == [True, True, True, False]
    assert silence_check(audio[3]).item() is False
    spike = torch.zeros(2, 100)
    spike[0, 50] = 0.5  # RMS tiny but a real peak: not broken
    assert silence_check(spike).item() is False


def test_fades_shape_the_ends_only() -> None:
    audio = torch.ones(2, SR)
    out = apply_fades(audio, SR, fade_in_s=0.1, fade_out_s=0.2)
    assert out[:, 0].eq(0).all() and out[:, -1].eq(0).all()
    assert torch.allclose(out[0, :4800], torch.linspace(0, 1, 4800))
    assert out[:, 4800:SR - 9600].eq(1).all()
    assert torch.equal(apply_fades(audio, SR), audio)
    with pytest.raises(AceStepError, match="negative"):
        apply_fades(audio, SR, fade_in_s=-1)


def _ramp(seconds: float) -> torch.Tensor:
    """Stereo audio whose sample values encode their own index exactly (k / 2^22 is exact in float32)."""
    index = torch.arange(int(seconds * SR), dtype=torch.float32) / 2 ** 22
    return torch.stack([index, -index])


def _starts(clip: torch.Tensor, source_length: int) -> list[int]:
    """Source index of the first sample of each 10 s piece; also checks every piece is contiguous."""
    piece = 10 * SR
    starts = []
    for i in range(3):
        index = (clip[0, i * piece:(i + 1) * piece] * 2 ** 22).round().long()
        expected = (index[0] + torch.arange(piece)) % source_length
        assert torch.equal(index, expected), f"piece {i} is not a contiguous run of the source"
        starts.append(int(index[0]))
    return starts


def test_reference_clip_takes_one_piece_from_each_third() -> None:
    source = _ramp(45)
    seen = set()
    for seed in range(5):
        clip = reference_clips(source, random.Random(seed))
        assert clip.shape == (2, 1_440_000)
        assert torch.equal(clip[1], -clip[0])
        third = source.shape[1] // 3
        starts = _starts(clip, source.shape[1])
        for i, start in enumerate(starts):
            assert i * third <= start <= (i + 1) * third - 10 * SR
        seen.add(tuple(starts))
        assert torch.equal(clip, reference_clips(source, random.Random(seed)))
    assert len(seen) == 5  # offsets really are drawn from the generator


def test_short_reference_is_repeated_before_cutting() -> None:
    """12 s is repeated to 36 s, so each third is one whole copy and each piece starts ≤ 2 s into a copy."""
    source = _ramp(12)
    for seed in range(3):
        clip = reference_clips(source, random.Random(seed))
        assert clip.shape == (2, 1_440_000)
        assert all(0 <= start <= 2 * SR for start in _starts(clip, source.shape[1]))
    exactly_30 = _ramp(30)
    assert torch.equal(reference_clips(exactly_30, random.Random(0)), exactly_30)
    with pytest.raises(AceStepError, match="to_model_audio"):
        reference_clips(torch.zeros(1, 100), random.Random(0))
