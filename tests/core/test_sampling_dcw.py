"""DCW against the official recordings and the closed forms of dit.md §4.8."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_core.errors import AceStepError
from acestep_core.sampling import DcwSettings, dcw_correct
from acestep_core.sampling.dcw import WAVELET_DEC_LO, _filter_bank, dwt1d, idwt1d

DCW_RUN = "tiny_2b/generate_turbo_shift3_8steps_dcw_default.safetensors"


def test_official_dcw_calls_bit_exact(golden_dir: Path) -> None:
    g = load_file(str(golden_dir / DCW_RUN))
    for i in range(8):
        out = dcw_correct(g[f"dcw{i}.x_next_in"], g[f"dcw{i}.denoised"], float(g[f"dcw{i}.t_curr"]), DcwSettings())
        assert torch.equal(out, g[f"dcw{i}.x_next_out"]), f"dcw{i}"


def closed_form(x: torch.Tensor, y: torch.Tensor, s_low: float, s_high: float) -> torch.Tensor:
    """x + (s_low·m ± s_high·h) on even/odd frames, m and h the pair mean and half-difference of x − y."""
    d = (x - y).double()
    if d.shape[1] % 2:
        d = torch.cat([d, torch.zeros_like(d[:, :1])], dim=1)
    m = (d[:, 0::2] + d[:, 1::2]) / 2
    h = (d[:, 0::2] - d[:, 1::2]) / 2
    correction = torch.stack((s_low * m + s_high * h, s_low * m - s_high * h), dim=2).flatten(1, 2)
    return x.double() + correction[:, : x.shape[1]]


@pytest.mark.parametrize("frames", [10, 11])
@pytest.mark.parametrize(("mode", "t"), [("double", 0.7), ("double", 1.0), ("low", 0.4), ("high", 0.4)])
def test_haar_modes_follow_the_closed_form(frames: int, mode: str, t: float) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, frames, 3), torch.randn(2, frames, 3)
    settings = DcwSettings(mode=mode, scaler=0.05, high_scaler=0.02)
    s_low = {"double": t * 0.05, "low": t * 0.05, "high": 0.0}[mode]
    s_high = {"double": (1 - t) * 0.02, "low": 0.0, "high": (1 - t) * 0.05}[mode]
    out = dcw_correct(x, y, t, settings)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out.double(), closed_form(x, y, s_low, s_high), atol=1e-6)


def test_pix_mode_and_inactive_settings() -> None:
    x, y = torch.randn(1, 6, 2), torch.randn(1, 6, 2)
    assert torch.equal(dcw_correct(x, y, 0.5, DcwSettings(mode="pix", scaler=0.1)), x + 0.1 * (x - y))
    assert dcw_correct(x, y, 0.5, DcwSettings(enabled=False)) is x
    assert dcw_correct(x, y, 0.5, DcwSettings(mode="low", scaler=0.0, high_scaler=0.5)) is x
    assert DcwSettings(mode="double", scaler=0.0, high_scaler=0.02).active


def test_zero_correction_still_round_trips_in_float32() -> None:
    # the last turbo step: x equals denoised, so only the transform's rounding remains
    x = torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(5))
    out = dcw_correct(x, x, 0.3, DcwSettings())
    assert torch.allclose(out, x, atol=1e-6) and not torch.equal(out, x)
    half = x.to(torch.bfloat16)
    assert dcw_correct(half, half, 0.3, DcwSettings()).dtype == torch.bfloat16


@pytest.mark.parametrize("wavelet", sorted(WAVELET_DEC_LO))
def test_filter_banks_are_orthonormal(wavelet: str) -> None:
    dec_lo, dec_hi, rec_lo, rec_hi = (torch.tensor(f, dtype=torch.float64) for f in _filter_bank(wavelet))
    assert math.isclose(float(dec_lo.sum()), math.sqrt(2), abs_tol=1e-12)
    assert math.isclose(float((dec_lo ** 2).sum()), 1.0, abs_tol=1e-12)
    assert abs(float((dec_lo * dec_hi).sum())) < 1e-12
    for shift in range(2, len(dec_lo), 2):  # orthogonal to its even shifts
        assert abs(float((dec_lo[shift:] * dec_lo[:-shift]).sum())) < 1e-10
    assert torch.equal(rec_lo, dec_lo.flip(0)) and torch.equal(rec_hi, dec_hi.flip(0))


@pytest.mark.parametrize("wavelet", sorted(WAVELET_DEC_LO))
@pytest.mark.parametrize("frames", [7, 20, 33])
def test_every_wavelet_reconstructs_and_corrects_nothing_when_x_equals_y(wavelet: str, frames: int) -> None:
    x = torch.randn(2, 4, frames)
    low, detail = dwt1d(x, wavelet)
    assert low.shape == detail.shape
    assert torch.allclose(idwt1d(low, detail, wavelet)[..., :frames], x, atol=1e-5)
    latent = x.transpose(1, 2)
    out = dcw_correct(latent, latent, 0.5, DcwSettings(wavelet=wavelet))
    assert torch.allclose(out, latent, atol=1e-5)


@pytest.mark.parametrize("wavelet", ["db2", "db4", "sym8"])
def test_low_correction_of_a_constant_offset_scales_it(wavelet: str) -> None:
    # y = x − 1 everywhere: away from the edges the low band carries the whole offset, so mode "low"
    # adds s·1 to every interior frame
    x = torch.randn(1, 40, 2)
    out = dcw_correct(x, x - 1.0, 0.5, DcwSettings(mode="low", scaler=0.2, wavelet=wavelet))
    edge = len(WAVELET_DEC_LO[wavelet])
    assert torch.allclose(out[:, edge:-edge], x[:, edge:-edge] + 0.1, atol=1e-5)


def test_matches_pytorch_wavelets_when_installed() -> None:
    wavelets = pytest.importorskip("pytorch_wavelets")
    x = torch.randn(2, 3, 21)
    for name in WAVELET_DEC_LO:
        low, highs = wavelets.DWT1DForward(J=1, mode="zero", wave=name)(x)
        ours_low, ours_detail = dwt1d(x, name)
        assert torch.allclose(ours_low, low, atol=1e-6) and torch.allclose(ours_detail, highs[0], atol=1e-6)
        back = wavelets.DWT1DInverse(mode="zero", wave=name)((low, highs))
        assert torch.allclose(idwt1d(low, highs[0], name), back, atol=1e-6)


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(AceStepError, match="mode"):
        DcwSettings(mode="mid")
    with pytest.raises(AceStepError, match="wavelet"):
        DcwSettings(wavelet="db3")
