"""Classifier-free guidance variants of the base/sft samplers: APG, ADG and plain CFG (dit.md §4.5–4.7).

Pure functions over velocity tensors `[B, T, C]`. The precisions are the official ones (APG projects in
float64, ADG measures angles in float64 and projects in float32), because parity depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
ADG_ANGLE_CLIP = 3.14 / 6  # the official constant is 3.14/6, not pi/6
ADG_COS_MARGIN = 1e-6
ADG_SMALL_SINE = 1e-3


@dataclass
class MomentumBuffer:
    """APG's running average of guidance differences; it persists across the steps of one run.

    Only steps where APG actually runs update it (not steps outside the CFG interval, not the Heun
    corrector), and the cover-condition switch does not reset it.
    """

    momentum: float = APG_MOMENTUM
    running: torch.Tensor | None = field(default=None, repr=False)

    def update(self, diff: torch.Tensor) -> torch.Tensor:
        """Fold `diff` into the average (`run ← diff + momentum·run`) and return the new average."""
        self.running = diff if self.running is None else diff + self.momentum * self.running
        return self.running


def cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain classifier-free guidance `u + g·(c − u)`; the official samplers use it only in Heun's corrector."""
    return v_uncond + scale * (v_cond - v_uncond)


def _project(v: torch.Tensor, direction: torch.Tensor, dims: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split `v` into parts parallel and orthogonal to `direction` over `dims`, computed in float64."""
    dtype = v.dtype
    v64 = v.double()
    unit = F.normalize(direction.double(), dim=tuple(dims))
    parallel = (v64 * unit).sum(dim=tuple(dims), keepdim=True) * unit
    orthogonal = v64 - parallel
    return parallel.to(dtype), orthogonal.to(dtype)


def apg(
    v_cond: torch.Tensor,
    v_uncond: torch.Tensor,
    scale: float,
    buffer: MomentumBuffer | None = None,
    norm_threshold: float = APG_NORM_THRESHOLD,
    eta: float = 0.0,
    dims: Sequence[int] = (1,),
) -> torch.Tensor:
    """Adaptive projected guidance as ACE-Step 1.5 calls it (§4.5).

    `dims=(1,)` is the time axis of `[B, T, C]`: the norm clamp and the projection run per item and
    channel over time (a leftover of the 1.0 `[B, C, T]` layout that the released models were tuned with).
    """
    diff = v_cond - v_uncond
    if buffer is not None:
        diff = buffer.update(diff)
    if norm_threshold > 0:
        diff_norm = diff.norm(p=2, dim=tuple(dims), keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / diff_norm)
    parallel, orthogonal = _project(diff, v_cond, dims)
    return v_cond + (scale - 1) * (orthogonal + eta * parallel)


def adg(
    x: torch.Tensor,
    v_cond: torch.Tensor,
    v_uncond: torch.Tensor,
    sigma: torch.Tensor | float,
    scale: float,
    angle_clip: float = ADG_ANGLE_CLIP,
) -> torch.Tensor:
    """Angle-based dynamic guidance for flow matching (§4.6, the June version with the cos clamp).

    Works on the predicted clean samples `x̂ = x − σ·v`: rotates the conditional one away from the
    unconditional one by `w·θ` (clipped), per frame over the channels. `x` is the un-doubled latent,
    `sigma` the current t (scalar or one value per item).
    """
    n, frames, channels = v_cond.shape
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.tensor(sigma, device=x.device, dtype=x.dtype)
    sigma = sigma.reshape(-1, 1, 1).expand(n, 1, 1) if sigma.numel() == 1 else sigma.reshape(n, 1, 1)
    weight = max(scale - 1, 0) + 1e-3

    x_cond = x - sigma * v_cond
    x_uncond = x - sigma * v_uncond
    delta = x_cond - x_uncond

    a = x_cond.reshape(-1, channels).double()
    b = x_uncond.reshape(-1, channels).double()
    a = a / torch.linalg.norm(a, dim=1, keepdim=True)
    b = b / torch.linalg.norm(b, dim=1, keepdim=True)
    cos_theta = (a * b).sum(dim=1, keepdim=True).clamp(-1.0 + ADG_COS_MARGIN, 1.0 - ADG_COS_MARGIN)
    theta = torch.acos(cos_theta).view(n, frames, 1)
    theta_new = torch.clip(weight * theta, -angle_clip, angle_clip)

    delta32 = delta.reshape(-1, channels).float()
    uncond32 = x_uncond.reshape(-1, channels).float()
    along = (delta32 * uncond32).sum(dim=1, keepdim=True) / ((uncond32 * uncond32).sum(dim=1, keepdim=True) + 1e-8)
    perpendicular = (delta32 - along * uncond32).reshape(n, frames, channels)

    sin_theta = torch.sin(theta)
    rotated = perpendicular * torch.sin(theta_new) / sin_theta
    perpendicular_part = torch.where(sin_theta > ADG_SMALL_SINE, rotated, perpendicular * weight)
    x_new = torch.cos(theta_new) * x_cond + perpendicular_part
    return ((x - x_new) / sigma).to(x.dtype)


def in_cfg_interval(t: torch.Tensor, start: float, end: float) -> bool:
    """Whether guidance applies at `t` (bounds are t values, both inclusive, compared in t's dtype)."""
    return bool(t >= start) and bool(t <= end)
