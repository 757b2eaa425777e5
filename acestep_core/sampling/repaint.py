"""Repaint seam helpers used inside and after the sampling loop (dit.md §4.12, tasks.md §5.2–5.3).

The repaint mask is bool `[B, T]`, True where the song is regenerated. Outside it, the sampler keeps
pulling the latent back onto the source (injection) and finally cross-fades into it (boundary blend).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acestep_core.errors import AceStepError


@dataclass(frozen=True)
class RepaintInputs:
    """What the sampler needs for a repaint/lego span: the region mask and the clean source latents."""

    mask: torch.Tensor
    clean_latents: torch.Tensor

    def checked(self, latents: torch.Tensor) -> "RepaintInputs":
        """The inputs with a bool mask, after checking that both fit `latents` [B, T, C]."""
        batch, frames = latents.shape[:2]
        if tuple(self.mask.shape) != (batch, frames):
            raise AceStepError(
                f"Repaint mask has shape {tuple(self.mask.shape)} but the latent needs ({batch}, {frames}): "
                "build the mask from the same latent."
            )
        if tuple(self.clean_latents.shape) != tuple(latents.shape):
            raise AceStepError(
                f"Repaint source latents have shape {tuple(self.clean_latents.shape)} but the latent is "
                f"{tuple(latents.shape)}: encode the source at the song's length."
            )
        return RepaintInputs(self.mask.to(device=latents.device, dtype=torch.bool), self.clean_latents)


def repaint_inject(
    x: torch.Tensor,
    clean: torch.Tensor,
    mask: torch.Tensor,
    noise: torch.Tensor,
    t_next: float | torch.Tensor,
) -> torch.Tensor:
    """Outside the region, replace `x` by the source noised to the level just reached: `t·noise + (1−t)·clean`."""
    noised_source = t_next * noise + (1.0 - t_next) * clean
    return torch.where(mask.unsqueeze(-1).expand_as(x), x, noised_source)


def repaint_blend_mask(mask: torch.Tensor, crossfade_frames: int) -> torch.Tensor:
    """Float mask [B, T]: 1 inside the region, linear ramps over `crossfade_frames` frames on each side.

    Ramp values are `k/(n+1)` (the inner points of `linspace(0, 1, n+2)`), clipped at the song's ends.
    Rows that are all inside or all outside stay 0/1. With 0 frames the plain 0/1 mask is returned.
    """
    soft = mask.float().clone()
    if crossfade_frames <= 0:
        return soft
    frames = mask.shape[1]
    for row, selected in enumerate(mask):
        if bool(selected.all()) or not bool(selected.any()):
            continue
        inside = torch.nonzero(selected).squeeze(-1)
        left, right = int(inside[0]), int(inside[-1]) + 1
        ramp_start, ramp_end = max(left - crossfade_frames, 0), min(right + crossfade_frames, frames)
        if left > ramp_start:
            soft[row, ramp_start:left] = torch.linspace(0, 1, left - ramp_start + 2, device=soft.device)[1:-1]
        if ramp_end > right:
            soft[row, right:ramp_end] = torch.linspace(1, 0, ramp_end - right + 2, device=soft.device)[1:-1]
    return soft


def repaint_boundary_blend(
    x: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, crossfade_frames: int
) -> torch.Tensor:
    """`m·x + (1 − m)·clean` with the ramped mask: outside region and ramps the result is the source.

    The mask is float32 as in the official code, so a half-precision latent comes back as float32.
    """
    soft = repaint_blend_mask(mask, crossfade_frames).unsqueeze(-1).expand_as(x)
    return soft * x + (1.0 - soft) * clean
