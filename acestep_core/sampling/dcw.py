"""DCW, the wavelet-domain differential correction applied after every sampler step (dit.md §4.8).

After a step moves the latent to `x`, DCW pushes chosen frequency bands of `x` away from the step's
predicted clean sample `y = x_before − v·t`: a single-level 1-D DWT along time, `x_band += s·(x_band −
y_band)`, inverse DWT. The official code uses pytorch_wavelets ("zero" mode, float32); we implement the
same filter bank ourselves so nothing extra has to be installed. Haar (the default) follows the exact
per-sample formula of the spec, which reproduces the official float32 numbers bit for bit; the longer
wavelets the official UI offers run the same filter bank through conv1d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from acestep_core.errors import AceStepError

DcwMode = Literal["low", "high", "double", "pix"]
DCW_MODES: tuple[str, ...] = ("low", "high", "double", "pix")

# Analysis low-pass filters (PyWavelets `Wavelet(name).dec_lo`); the other three filters of each
# orthogonal bank follow from it by reversal and sign alternation (`_filter_bank`).
WAVELET_DEC_LO: dict[str, tuple[float, ...]] = {
    "haar": (0.7071067811865476, 0.7071067811865476),
    "db2": (-0.12940952255126037, 0.2241438680420134, 0.8365163037378079, 0.48296291314453416),
    "db4": (-0.010597401785069032, 0.0328830116668852, 0.030841381835560764, -0.18703481171909309,
            -0.027983769416859854, 0.6308807679298589, 0.7148465705529157, 0.2303778133088965),
    "sym4": (-0.07576571478927333, -0.02963552764599851, 0.49761866763201545, 0.8037387518059161,
             0.29785779560527736, -0.09921954357684722, -0.012603967262037833, 0.0322231006040427),
    "sym8": (-0.0033824159510061256, -0.0005421323317911481, 0.03169508781149298, 0.007607487324917605,
             -0.1432942383508097, -0.061273359067658524, 0.4813596512583722, 0.7771857517005235,
             0.3644418948353314, -0.05194583810770904, -0.027219029917056003, 0.049137179673607506,
             0.003808752013890615, -0.01495225833704823, -0.0003029205147213668, 0.0018899503327594609),
    "coif2": (-0.000720549445520347, -0.0018232088709110323, 0.005611434819368834, 0.02368017194684777,
              -0.05943441864643109, -0.07648859907828076, 0.4170051844232391, 0.8127236354494135,
              0.3861100668227629, -0.0673725547237256, -0.04146493678687178, 0.01638733646320364),
}


@dataclass(frozen=True)
class DcwSettings:
    """DCW options with the official defaults (on, "double", 0.05 low, 0.02 high, haar)."""

    enabled: bool = True
    mode: DcwMode = "double"
    scaler: float = 0.05
    high_scaler: float = 0.02
    wavelet: str = "haar"

    def __post_init__(self) -> None:
        if self.mode not in DCW_MODES:
            raise AceStepError(f"DCW mode '{self.mode}' is unknown: choose one of {', '.join(DCW_MODES)}.")
        if self.wavelet not in WAVELET_DEC_LO:
            raise AceStepError(
                f"DCW wavelet '{self.wavelet}' is unknown: choose one of {', '.join(WAVELET_DEC_LO)}."
            )

    @property
    def active(self) -> bool:
        """Whether DCW changes anything ("double" needs either scaler non-zero, the others `scaler`)."""
        if not self.enabled:
            return False
        if self.mode == "double":
            return self.scaler != 0.0 or self.high_scaler != 0.0
        return self.scaler != 0.0


DCW_OFF = DcwSettings(enabled=False)


def _filter_bank(wavelet: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(dec_lo, dec_hi, rec_lo, rec_hi) of an orthogonal wavelet, as PyWavelets defines them."""
    dec_lo = list(WAVELET_DEC_LO[wavelet])
    length = len(dec_lo)
    dec_hi = [(-1) ** (k + 1) * dec_lo[length - 1 - k] for k in range(length)]
    return dec_lo, dec_hi, dec_lo[::-1], dec_hi[::-1]


def _haar_coefficient(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(WAVELET_DEC_LO["haar"][0], dtype=torch.float32, device=x.device)


def dwt1d(x: torch.Tensor, wavelet: str = "haar") -> tuple[torch.Tensor, torch.Tensor]:
    """Single-level "zero"-mode DWT of float32 `[B, C, T]` along T → (low band, detail band)."""
    if wavelet == "haar":
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1))
        c = _haar_coefficient(x)
        a, b = x[..., 0::2], x[..., 1::2]
        return c * a + c * b, c * a - c * b
    dec_lo, dec_hi, _, _ = _filter_bank(wavelet)
    length, frames, channels = len(dec_lo), x.shape[-1], x.shape[1]
    out_len = (frames + length - 1) // 2
    pad = 2 * (out_len - 1) - frames + length
    if pad % 2:
        x = F.pad(x, (0, 1))
    # Correlation with the reversed filters; low and detail outputs interleaved per channel.
    taps = torch.tensor([dec_lo[::-1], dec_hi[::-1]], dtype=torch.float32, device=x.device)
    weight = taps.repeat(channels, 1).unsqueeze(1)
    both = F.conv1d(x, weight, stride=2, padding=pad // 2, groups=channels)
    return both[:, 0::2], both[:, 1::2]


def idwt1d(low: torch.Tensor, detail: torch.Tensor, wavelet: str = "haar") -> torch.Tensor:
    """Inverse of `dwt1d`; the result has an even length (crop an odd input's extra frame yourself)."""
    if wavelet == "haar":
        c = _haar_coefficient(low)
        even, odd = c * low + c * detail, c * low - c * detail
        return torch.stack((even, odd), dim=-1).flatten(-2)
    _, _, rec_lo, rec_hi = _filter_bank(wavelet)
    length, channels = len(rec_lo), low.shape[1]
    g_lo = torch.tensor(rec_lo, dtype=torch.float32, device=low.device).repeat(channels, 1).unsqueeze(1)
    g_hi = torch.tensor(rec_hi, dtype=torch.float32, device=low.device).repeat(channels, 1).unsqueeze(1)
    return (F.conv_transpose1d(low, g_lo, stride=2, padding=length - 2, groups=channels)
            + F.conv_transpose1d(detail, g_hi, stride=2, padding=length - 2, groups=channels))


def _correct_bands(
    x: torch.Tensor, y: torch.Tensor, low_factor: float, detail_factor: float, wavelet: str
) -> torch.Tensor:
    """Move the bands of `x` ([B, T, C]) away from those of `y`; a band whose factor is 0 is kept."""
    frames = x.shape[1]
    x_low, x_detail = dwt1d(x.to(torch.float32).transpose(1, 2), wavelet)
    y_low, y_detail = dwt1d(y.to(torch.float32).transpose(1, 2), wavelet)
    if low_factor != 0.0:
        x_low = x_low + low_factor * (x_low - y_low)
    if detail_factor != 0.0:
        x_detail = x_detail + detail_factor * (x_detail - y_detail)
    out = idwt1d(x_low, x_detail, wavelet)[:, :, :frames]
    return out.transpose(1, 2).contiguous().to(x.dtype)


def dcw_correct(x: torch.Tensor, denoised: torch.Tensor, t: float, settings: DcwSettings) -> torch.Tensor:
    """Apply DCW to the stepped latent `x` [B, T, C] given `denoised` and the step's start time `t`.

    Factors: low band `t·scaler`, detail band `(1−t)·scaler` ("high") or `(1−t)·high_scaler`
    ("double"), "pix" `scaler` directly on the latent. Even a zero correction goes through the float32
    transform round trip (it moves last bits, and the official output has them).
    """
    if not settings.active:
        return x
    t = float(t)
    if settings.mode == "pix":
        return x + settings.scaler * (x - denoised)
    if settings.mode == "low":
        low, detail = t * settings.scaler, 0.0
    elif settings.mode == "high":
        low, detail = 0.0, (1.0 - t) * settings.scaler
    else:
        low, detail = t * settings.scaler, (1.0 - t) * settings.high_scaler
    if low == 0.0 and detail == 0.0:
        return x
    return _correct_bands(x, denoised, low, detail, settings.wavelet)
