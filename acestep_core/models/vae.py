"""The Oobleck VAE (Stable Audio's audio autoencoder) that ACE-Step 1.5 uses between waveforms and latents.

Module and parameter names follow the official diffusers `AutoencoderOobleck` checkpoint exactly
(`encoder.block.0.res_unit1.conv1.weight_g`, `decoder.block.2.conv_t1.weight_v`, `encoder.snake1.alpha`, ...),
so `vae/diffusion_pytorch_model.safetensors` loads with `load_state_dict(strict=True)` and no renaming.
Other layouts (ComfyUI's repackaged file) are renamed in `checkpoints.py`, not here.

Weight norm is kept as the stored pair `weight_g`/`weight_v` and applied on every call, because that is how
the checkpoint stores it and it keeps float32 results equal to `torch.nn.utils.weight_norm`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from math import prod
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from acestep_core.constants import AUDIO_CHANNELS, LATENT_CHANNELS, SAMPLE_RATE
from acestep_core.errors import AceStepError

RESIDUAL_KERNEL = 7
RESIDUAL_DILATIONS = (1, 3, 9)
IO_KERNEL = 7
ENCODER_OUT_KERNEL = 3
SNAKE_EPS = 1e-9
POSTERIOR_STD_FLOOR = 1e-4


@dataclass
class OobleckConfig:
    """Hyper-parameters with the field names of the diffusers `config.json`; defaults are ACE-Step 1.5's VAE."""

    audio_channels: int = AUDIO_CHANNELS
    channel_multiples: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    decoder_channels: int = 128
    decoder_input_channels: int = LATENT_CHANNELS
    downsampling_ratios: list[int] = field(default_factory=lambda: [2, 4, 4, 6, 10])
    encoder_hidden_size: int = 2 * LATENT_CHANNELS
    sampling_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        self.channel_multiples = list(self.channel_multiples)
        self.downsampling_ratios = list(self.downsampling_ratios)
        if len(self.channel_multiples) != len(self.downsampling_ratios):
            raise AceStepError(
                f"VAE config.json: channel_multiples has {len(self.channel_multiples)} entries but "
                f"downsampling_ratios has {len(self.downsampling_ratios)}; they must match. "
                "Use the config.json shipped with the VAE weights."
            )
        if self.encoder_hidden_size != 2 * self.decoder_input_channels:
            raise AceStepError(
                f"VAE config.json: encoder_hidden_size ({self.encoder_hidden_size}) must be twice "
                f"decoder_input_channels ({self.decoder_input_channels}), the encoder emits mean and scale. "
                "Use the config.json shipped with the VAE weights."
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "OobleckConfig":
        """Build from a `config.json` dict; keys the network does not use (`_class_name`, ...) are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame (1920 for ACE-Step: 2·4·4·6·10)."""
        return prod(self.downsampling_ratios)


class _WeightNormConv(nn.Module):
    """Shared storage of a weight-normalised convolution: `weight = g · v / ‖v‖`, norm over all axes but 0."""

    def __init__(self, v_shape: tuple[int, int, int], out_channels: int, bias: bool, stride: int,
                 padding: int, dilation: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.weight_g = nn.Parameter(torch.empty(v_shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(v_shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh weights (only used without a checkpoint): unit-norm rows, zero bias."""
        nn.init.kaiming_uniform_(self.weight_v, a=5 ** 0.5)
        with torch.no_grad():
            self.weight_g.copy_(torch.linalg.vector_norm(self.weight_v, dim=(1, 2), keepdim=True))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def weight(self) -> torch.Tensor:
        """The effective kernel, through the same ATen weight-norm op that the official VAE's
        `torch.nn.utils.weight_norm` calls, so the kernel is bit-identical to the official one.

        Our own formula differed by 1 ulp, which the ill-conditioned encoder amplified to 3e-6 relative.
        """
        return torch._weight_norm(self.weight_v, self.weight_g, 0)


class WNConv1d(_WeightNormConv):
    """Conv1d with weight norm; `weight_v` is `[out, in, kernel]`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True) -> None:
        super().__init__((out_channels, in_channels, kernel_size), out_channels, bias, stride, padding, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(_WeightNormConv):
    """ConvTranspose1d with weight norm; `weight_v` is `[in, out, kernel]`, so the norm runs per input channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__((in_channels, out_channels, kernel_size), out_channels, True, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding)


class Snake1d(nn.Module):
    """Periodic activation `x + sin²(a·x) / b` per channel; `alpha`, `beta` hold log(a), log(b)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha)
        beta = torch.exp(self.beta)
        return x + (beta + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)


class OobleckResidualUnit(nn.Module):
    """Snake → dilated conv k7 → Snake → conv k1, added to the input; lengths are preserved."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        pad = (RESIDUAL_KERNEL - 1) * dilation // 2
        self.snake1 = Snake1d(channels)
        self.conv1 = WNConv1d(channels, channels, RESIDUAL_KERNEL, padding=pad, dilation=dilation)
        self.snake2 = Snake1d(channels)
        self.conv2 = WNConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.snake2(self.conv1(self.snake1(x))))
        crop = (x.shape[-1] - h.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + h


def _residual_units(channels: int) -> dict[str, OobleckResidualUnit]:
    return {f"res_unit{i + 1}": OobleckResidualUnit(channels, d) for i, d in enumerate(RESIDUAL_DILATIONS)}


class OobleckEncoderBlock(nn.Module):
    """Three residual units, Snake, then a strided conv that divides the length by `stride`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        for name, unit in _residual_units(in_channels).items():
            self.add_module(name, unit)
        self.snake1 = Snake1d(in_channels)
        self.conv1 = WNConv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=-(-stride // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x))


class OobleckDecoderBlock(nn.Module):
    """Snake, a transposed conv that multiplies the length by `stride`, then three residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.snake1 = Snake1d(in_channels)
        self.conv_t1 = WNConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride,
                                         padding=-(-stride // 2))
        for name, unit in _residual_units(out_channels).items():
            self.add_module(name, unit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


class OobleckEncoder(nn.Module):
    """Waveform `[B, audio_channels, L]` → `[B, encoder_hidden_size, L // hop]` (mean and raw scale)."""

    def __init__(self, config: OobleckConfig) -> None:
        super().__init__()
        width = config.encoder_hidden_size
        mults = [1, *config.channel_multiples]
        self.conv1 = WNConv1d(config.audio_channels, width, IO_KERNEL, padding=IO_KERNEL // 2)
        self.block = nn.ModuleList(
            OobleckEncoderBlock(width * mults[i], width * mults[i + 1], stride)
            for i, stride in enumerate(config.downsampling_ratios)
        )
        self.snake1 = Snake1d(width * mults[-1])
        self.conv2 = WNConv1d(width * mults[-1], width, ENCODER_OUT_KERNEL, padding=ENCODER_OUT_KERNEL // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class OobleckDecoder(nn.Module):
    """Latent `[B, decoder_input_channels, T]` → waveform `[B, audio_channels, T · hop]` (not clipped)."""

    def __init__(self, config: OobleckConfig) -> None:
        super().__init__()
        width = config.decoder_channels
        mults = [1, *config.channel_multiples]
        depth = len(config.downsampling_ratios)
        self.conv1 = WNConv1d(config.decoder_input_channels, width * mults[-1], IO_KERNEL, padding=IO_KERNEL // 2)
        self.block = nn.ModuleList(
            OobleckDecoderBlock(width * mults[depth - i], width * mults[depth - i - 1], stride)
            for i, stride in enumerate(reversed(config.downsampling_ratios))
        )
        self.snake1 = Snake1d(width)
        self.conv2 = WNConv1d(width, config.audio_channels, IO_KERNEL, padding=IO_KERNEL // 2, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1(z)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


@dataclass
class OobleckPosterior:
    """The diagonal Gaussian the encoder predicts: `std = softplus(scale_raw) + 1e-4`.

    The official pipeline encodes with `sample()`, not the mean; pass a seeded generator for reproducibility.
    """

    mean: torch.Tensor
    scale_raw: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return F.softplus(self.scale_raw) + POSTERIOR_STD_FLOOR

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`mean + std · ε`; ε is drawn on the generator's device (as diffusers does) and moved to the mean's."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)


class OobleckVAE(nn.Module):
    """ACE-Step's audio VAE: 48 kHz stereo ↔ 25 Hz latents `[B, 64, T]`, keys as in the diffusers checkpoint."""

    def __init__(self, config: Optional[OobleckConfig] = None) -> None:
        super().__init__()
        self.config = config or OobleckConfig()
        self.encoder = OobleckEncoder(self.config)
        self.decoder = OobleckDecoder(self.config)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def latent_channels(self) -> int:
        return self.config.decoder_input_channels

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv2.weight_v.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.conv2.weight_v.device

    def encode(self, waveform: torch.Tensor) -> OobleckPosterior:
        """`[B, audio_channels, L]` → posterior over `[B, latent_channels, L // hop]` (the tail past the
        last full hop is dropped). The input is moved to the VAE's device and dtype."""
        if waveform.ndim != 3 or waveform.shape[1] != self.config.audio_channels:
            raise AceStepError(
                f"VAE encode: waveform has shape {tuple(waveform.shape)}, expected "
                f"[batch, {self.config.audio_channels}, samples]; convert the audio to stereo first."
            )
        if waveform.shape[-1] < self.hop_length:
            raise AceStepError(
                f"VAE encode: waveform has {waveform.shape[-1]} samples, fewer than one latent frame "
                f"({self.hop_length} samples); give at least {self.hop_length / self.sampling_rate:.2f} s of audio."
            )
        h = self.encoder(waveform.to(device=self.device, dtype=self.dtype))
        mean, scale_raw = h.chunk(2, dim=1)
        return OobleckPosterior(mean, scale_raw)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """`[B, latent_channels, T]` → `[B, audio_channels, T · hop]` in the VAE's dtype, not clipped.
        The input is moved to the VAE's device and dtype."""
        if latent.ndim != 3 or latent.shape[1] != self.latent_channels or latent.shape[-1] < 1:
            raise AceStepError(
                f"VAE decode: latent has shape {tuple(latent.shape)}, expected [batch, {self.latent_channels}, "
                "frames>0] (channels first); make sure the latent comes from an ACE-Step 1.5 model."
            )
        return self.decoder(latent.to(device=self.device, dtype=self.dtype))
