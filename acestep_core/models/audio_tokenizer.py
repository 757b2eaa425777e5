"""The 5 Hz audio tokenizer (`tokenizer.*`) and detokenizer (`detokenizer.*`).

The tokenizer pools each window of `pool_window_size` latent frames into one vector and quantizes it with
a single-level finite scalar quantizer (levels 8,8,8,5,5,5 → 64000 codes); these are the "audio codes"
the LM planner writes. The detokenizer turns codes back into 25 Hz hints for the DiT.
"""

from __future__ import annotations

import torch
from torch import nn

from acestep_core.errors import AceStepError
from acestep_core.models.config import AceStepConfig
from acestep_core.models.layers import EncoderStack


class FiniteScalarQuantizer(nn.Module):
    """One-quantizer residual FSQ with symmetric levels and a soft clamp before quantization.

    Only `project_in`/`project_out` carry weights. The quantization itself always runs in float32 (the
    official XL classes force this; for 2B in float32 it is the same computation), so code indices do
    not depend on the weight dtype.
    """

    def __init__(self, dim: int, levels: list[int]):
        super().__init__()
        self.levels = list(levels)
        self.project_in = nn.Linear(dim, len(levels))
        self.project_out = nn.Linear(len(levels), dim)

    def _level_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        levels = torch.tensor(self.levels, dtype=torch.int32, device=device)
        basis = torch.cumprod(torch.tensor([1] + self.levels[:-1], device=device), dim=0).to(torch.int32)
        return levels, basis

    @property
    def codebook_size(self) -> int:
        return int(torch.tensor(self.levels).prod().item())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, dim] → (quantized [B, N, dim] in x's dtype, indices [B, N, 1] int32)."""
        levels, basis = self._level_tensors(x.device)
        z = self.project_in(x.to(self.project_in.weight.dtype)).to(torch.float32)
        clamp_value = 1 + 1 / (levels - 1)
        z = (z / clamp_value).tanh() * clamp_value
        steps = levels - 1
        bracket = (steps * (z.clamp(-1.0, 1.0) + 1) / 2.0 + 0.5).floor()
        codes = (2.0 / steps) * bracket - 1.0
        indices = (((codes + 1.0) / (2.0 / steps)) * basis).sum(dim=-1).round().to(torch.int32)
        quantized = self.project_out(codes.to(self.project_out.weight.dtype))
        return quantized.to(x.dtype), indices.unsqueeze(-1)

    def codes_to_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, N, 1] (or [B, N]) → the quantized vectors [B, N, dim], as from `forward`."""
        if indices.dim() == 3:
            indices = indices[..., 0]
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise AceStepError(f"audio codes must lie in 0..{self.codebook_size - 1}; got values outside that range")
        levels, basis = self._level_tensors(indices.device)
        level_index = (indices.to(torch.int64)[..., None] // basis) % levels
        codes = level_index * (2.0 / (levels - 1)) - 1.0
        return self.project_out(codes.to(self.project_out.weight.dtype))


class AttentionPooler(EncoderStack):
    """Pools each window of frames into its special token's output."""

    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.num_attention_pooler_hidden_layers)
        self.embed_tokens = nn.Linear(config.hidden_size, config.hidden_size)
        self.special_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """windows [B, N, W, H] → pooled [B, N, H]."""
        batch, count = windows.shape[:2]
        x = self.embed_tokens(windows)
        x = torch.cat([self.special_token.expand(batch, count, 1, -1), x], dim=2)
        x = self.run_layers(x.flatten(0, 1))
        return x[:, 0, :].unflatten(0, (batch, count))


class AudioTokenizer(nn.Module):
    def __init__(self, config: AceStepConfig):
        super().__init__()
        self.pool_window_size = config.pool_window_size
        self.audio_acoustic_proj = nn.Linear(config.audio_acoustic_hidden_dim, config.hidden_size)
        self.attention_pooler = AttentionPooler(config)
        self.quantizer = FiniteScalarQuantizer(config.fsq_dim, config.fsq_input_levels)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """windows [B, N, W, C] of latent frames → (quantized [B, N, H], indices [B, N, 1])."""
        return self.quantizer(self.attention_pooler(self.audio_acoustic_proj(windows)))


class AudioTokenDetokenizer(EncoderStack):
    def __init__(self, config: AceStepConfig):
        super().__init__(config, config.num_attention_pooler_hidden_layers)
        self.pool_window_size = config.pool_window_size
        self.embed_tokens = nn.Linear(config.hidden_size, config.hidden_size)
        self.special_tokens = nn.Parameter(torch.zeros(1, config.pool_window_size, config.hidden_size))
        self.proj_out = nn.Linear(config.hidden_size, config.audio_acoustic_hidden_dim)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        """quantized [B, N, H] at 5 Hz → hints [B, N·W, C] at 25 Hz."""
        batch, count, _ = quantized.shape
        x = self.embed_tokens(quantized).unsqueeze(2).repeat(1, 1, self.pool_window_size, 1)
        x = x + self.special_tokens.expand(batch, count, -1, -1)
        x = self.proj_out(self.run_layers(x.flatten(0, 1)))
        return x.reshape(batch, count * self.pool_window_size, -1)
