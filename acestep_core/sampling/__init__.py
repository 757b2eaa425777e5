"""Flow-matching samplers of ACE-Step 1.5: schedules, guidance, DCW, noise and the step loop.

Small pure functions over tensors; the network is passed in as a `velocity_fn` callable, so nothing
here imports a model. Typical use::

    schedule = turbo_schedule(shift=3.0, infer_steps=8)          # or base_schedule(...)
    noise = draw_noise(batch, frames, 64, seed)
    latents = sample(velocity_fn, noise, schedule, condition, settings=SamplerSettings(...))
"""

from acestep_core.sampling.dcw import DCW_MODES, DCW_OFF, DcwSettings, dcw_correct
from acestep_core.sampling.guidance import MomentumBuffer, adg, apg, cfg, in_cfg_interval
from acestep_core.sampling.loop import SamplerSettings, StepInfo, VelocityFn, sample
from acestep_core.sampling.noise import draw_noise, mix_retake_noise, resolve_seeds
from acestep_core.sampling.repaint import (
    RepaintInputs,
    repaint_blend_mask,
    repaint_boundary_blend,
    repaint_inject,
)
from acestep_core.sampling.schedules import (
    TURBO_ALLOWED_TIMESTEPS,
    TURBO_FIXED_TABLES,
    Schedule,
    base_schedule,
    cover_noise_start,
    shift_timestep,
    turbo_schedule,
)

__all__ = [
    "DCW_MODES",
    "DCW_OFF",
    "DcwSettings",
    "MomentumBuffer",
    "RepaintInputs",
    "SamplerSettings",
    "Schedule",
    "StepInfo",
    "TURBO_ALLOWED_TIMESTEPS",
    "TURBO_FIXED_TABLES",
    "VelocityFn",
    "adg",
    "apg",
    "base_schedule",
    "cfg",
    "cover_noise_start",
    "dcw_correct",
    "draw_noise",
    "in_cfg_interval",
    "mix_retake_noise",
    "repaint_blend_mask",
    "repaint_boundary_blend",
    "repaint_inject",
    "resolve_seeds",
    "sample",
    "shift_timestep",
    "turbo_schedule",
]
