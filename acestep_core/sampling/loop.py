"""The ACE-Step 1.5 sampling loop for both model families (dit.md §4.4, §4.9–4.12; tasks.md §5–6).

The network stays outside: the loop calls `velocity_fn(x, t, condition, cache)` and never imports a
model. Turbo (guidance distilled, last step jumps straight to `x − v·t`) and base/sft (CFG with APG or
ADG, last step an ordinary update to the schedule's end) share one loop; the schedule's `family`
selects the differences. Numbers follow the official float32 operation order so that a replay of the
golden runs matches them; two official bugs are deliberately not copied (§7): base SDE re-noises to
the real next t, and the cover switch counts the steps actually run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import torch

from acestep_core.errors import AceStepError
from acestep_core.sampling.dcw import DcwSettings, dcw_correct
from acestep_core.sampling.guidance import MomentumBuffer, adg, apg, cfg, in_cfg_interval
from acestep_core.sampling.repaint import RepaintInputs, repaint_boundary_blend, repaint_inject
from acestep_core.sampling.schedules import Schedule, cover_noise_start


class VelocityFn(Protocol):
    """The network as the sampler sees it.

    `x` [N, T, C] noisy latents; `t` [N] timesteps in x's dtype (the decoder gets `timestep =
    timestep_r = t`); `condition` whatever the caller passed as `condition` / `non_cover_condition`;
    `cache` a dict the callee may fill with per-condition state such as cross-attention keys/values,
    or None when it must not cache. The loop hands over a fresh dict at the start and at the cover
    switch, and None for Heun's corrector call. Returns the velocity [N, T, C].
    With CFG, N = 2B: rows are `[x; x]` and the condition must be the doubled `[cond; null]` one.
    """

    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, condition: Any, cache: dict | None
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class SamplerSettings:
    """Every sampler option with the official `generate_audio` defaults (§4.16)."""

    guidance_scale: float = 7.0
    use_adg: bool = False
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    infer_method: Literal["ode", "sde"] = "ode"
    sampler_mode: Literal["euler", "heun"] = "euler"
    velocity_norm_threshold: float = 0.0
    velocity_ema_factor: float = 0.0
    dcw: DcwSettings = field(default_factory=DcwSettings)
    audio_cover_strength: float = 1.0
    cover_noise_strength: float = 0.0
    repaint_injection_ratio: float = 0.5
    repaint_crossfade_frames: int = 10

    def __post_init__(self) -> None:
        if self.infer_method not in ("ode", "sde"):
            raise AceStepError(f"Infer method '{self.infer_method}' is unknown: choose 'ode' or 'sde'.")
        if self.sampler_mode not in ("euler", "heun"):
            raise AceStepError(f"Sampler '{self.sampler_mode}' is unknown: choose 'euler' or 'heun'.")


@dataclass(frozen=True)
class StepInfo:
    """Reported after each step: the new latent, the step's clean prediction and the velocity used."""

    step: int
    num_steps: int
    t: float
    t_next: float
    x: torch.Tensor
    denoised: torch.Tensor
    velocity: torch.Tensor


@dataclass
class _Guide:
    """Turns one network evaluation into the velocity the step uses (CFG variants, clamp, EMA)."""

    settings: SamplerSettings
    use_cfg: bool
    buffer: MomentumBuffer = field(default_factory=MomentumBuffer)

    def evaluate(
        self, velocity_fn: VelocityFn, x: torch.Tensor, t: torch.Tensor, condition: Any, cache: dict | None
    ) -> torch.Tensor:
        x_in = torch.cat([x, x], dim=0) if self.use_cfg else x
        return velocity_fn(x_in, t.repeat(x_in.shape[0]), condition, cache)

    def main(self, raw: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Guidance of a step's first evaluation: APG (updates the momentum) or ADG inside the interval."""
        if not self.use_cfg:
            return raw
        s = self.settings
        v_cond, v_uncond = raw.chunk(2)
        if not in_cfg_interval(t, s.cfg_interval_start, s.cfg_interval_end):
            return v_cond
        if s.use_adg:
            return adg(x, v_cond, v_uncond, t, s.guidance_scale)
        return apg(v_cond, v_uncond, s.guidance_scale, self.buffer)

    def corrector(self, raw: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Guidance of Heun's second evaluation: plain CFG instead of APG, ADG only where t > 0."""
        if not self.use_cfg:
            return raw
        s = self.settings
        v_cond, v_uncond = raw.chunk(2)
        if not in_cfg_interval(t, s.cfg_interval_start, s.cfg_interval_end):
            return v_cond
        if s.use_adg and bool(t > 0):
            return adg(x, v_cond, v_uncond, t, s.guidance_scale)
        return cfg(v_cond, v_uncond, s.guidance_scale)

    def clamp(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Scale v down so that ‖v‖ ≤ threshold·‖x‖ per item (off when the threshold is 0)."""
        threshold = self.settings.velocity_norm_threshold
        if threshold <= 0.0:
            return v
        v_norm = torch.norm(v, dim=(1, 2), keepdim=True)
        x_norm = torch.norm(x, dim=(1, 2), keepdim=True) + 1e-10
        return v * torch.clamp(threshold * x_norm / (v_norm + 1e-10), max=1.0)

    def smooth(self, v: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Velocity EMA `(1−f)·v + f·previous` (off when f is 0 or there is no previous velocity)."""
        factor = self.settings.velocity_ema_factor
        if factor <= 0.0 or previous is None:
            return v
        return (1.0 - factor) * v + factor * previous


def _cover_start(
    noise: torch.Tensor, schedule: Schedule, strength: float, source_latents: torch.Tensor | None
) -> tuple[torch.Tensor, Schedule]:
    """Start from the source noised to the schedule value nearest `1 − strength`, dropping earlier steps."""
    if strength <= 0.0:
        return noise, schedule
    if source_latents is None:
        raise AceStepError("Cover noise strength > 0 needs source latents: connect a source or set it to 0.")
    index = cover_noise_start(schedule, strength)
    t_star = schedule.values[index]
    return t_star * noise + (1 - t_star) * source_latents, schedule.starting_at(index)


@torch.no_grad()
def sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    schedule: Schedule,
    condition: Any,
    *,
    settings: SamplerSettings | None = None,
    non_cover_condition: Any = None,
    source_latents: torch.Tensor | None = None,
    repaint: RepaintInputs | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], None] | None = None,
) -> torch.Tensor:
    """Run one sampling pass and return the final latents [B, T, C].

    `noise` [B, T, C] is the initial noise in the pipeline dtype (after retake mixing); the injection
    of a repaint reuses it. `condition` is used for the first `int(steps·audio_cover_strength)` steps,
    `non_cover_condition` after that (with a fresh cache). `source_latents` are the context source
    before the cover substitution, needed for `cover_noise_strength`. `generator` feeds the SDE
    re-noising. `callback` is called after every step; raising from it stops the run.
    CFG is active iff the schedule is a base one and `guidance_scale > 1`.
    """
    s = settings or SamplerSettings()
    turbo = schedule.family == "turbo"
    if s.infer_method == "sde" and generator is None:
        raise AceStepError("The SDE sampler needs a seeded generator for its re-noising; pass `generator`.")
    if repaint is not None:
        repaint = repaint.checked(noise)
    x, schedule = _cover_start(noise, schedule, s.cover_noise_strength, source_latents)
    num_steps = schedule.num_steps
    t_all = schedule.tensor(noise.device)
    cover_steps = int(num_steps * s.audio_cover_strength)
    injection_cutoff = round(s.repaint_injection_ratio * num_steps)
    use_heun = s.sampler_mode == "heun" and s.infer_method == "ode"
    guide = _Guide(s, use_cfg=not turbo and s.guidance_scale > 1.0)

    active, cache, switched, previous_v = condition, {}, False, None
    for i in range(num_steps):
        t, t_next = t_all[i], t_all[i + 1]
        jump = turbo and i == num_steps - 1
        if i >= cover_steps and not switched:
            if non_cover_condition is None:
                raise AceStepError(
                    "Audio cover strength < 1 switches to the text-only condition, but none was given: "
                    "pass non_cover_condition or set the strength to 1."
                )
            active, cache, switched = non_cover_condition, {}, True

        v = guide.main(guide.evaluate(velocity_fn, x, t, active, cache), x, t)
        v = guide.smooth(guide.clamp(v, x), previous_v)
        denoised = x - v * t

        if jump:
            x = denoised
        elif s.infer_method == "sde":
            fresh = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
            t_after = float(t_next)
            x = t_after * fresh.to(x.device) + (1 - t_after) * denoised
        else:
            dt = t - t_next
            if use_heun:
                x_pred = x - v * dt
                v2 = guide.corrector(guide.evaluate(velocity_fn, x_pred, t_next, active, None), x_pred, t_next)
                v2 = guide.smooth(guide.clamp(v2, x_pred), v)
                v = 0.5 * (v + v2)
            x = x - v * dt

        x = dcw_correct(x, denoised, float(t), s.dcw)
        previous_v = v
        if repaint is not None and i < injection_cutoff and not jump:
            t_reached = float(t_next) if turbo else t_next
            x = repaint_inject(x, repaint.clean_latents, repaint.mask, noise, t_reached)
        if callback is not None:
            callback(StepInfo(i, num_steps, float(t), float(t_next), x, denoised, v))

    if repaint is not None and s.repaint_crossfade_frames > 0:
        x = repaint_boundary_blend(x, repaint.clean_latents, repaint.mask, s.repaint_crossfade_frames)
    return x
