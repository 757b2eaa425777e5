"""The step loop with toy velocity functions, against results derived by hand from dit.md §4.4, §4.9–4.12."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from acestep_core.errors import AceStepError
from acestep_core.sampling import (
    DCW_OFF,
    RepaintInputs,
    SamplerSettings,
    StepInfo,
    adg,
    apg,
    base_schedule,
    cfg,
    sample,
    turbo_schedule,
)
from acestep_core.sampling.guidance import MomentumBuffer

D = torch.float64
PLAIN = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF)


@dataclass
class Recorder:
    """A velocity function `v = f(x, t)` that records every call."""

    fn: object
    calls: list[tuple[torch.Tensor, torch.Tensor, object, object]] = field(default_factory=list)

    def __call__(self, x, t, condition, cache):
        self.calls.append((x.clone(), t.clone(), condition, cache))
        return self.fn(x, t)


def linear() -> Recorder:
    return Recorder(lambda x, t: x.clone())


def test_euler_base_and_turbo_jump() -> None:
    x0 = torch.ones(1, 4, 2, dtype=D)
    # v = x, base 2 steps shift 1: each step multiplies by (1 − 0.5)
    assert torch.allclose(sample(linear(), x0, base_schedule(2, 1.0, dtype=D), None, settings=PLAIN), x0 * 0.25)
    # turbo 2 steps: Euler to 0.5, then the jump x − v·t = x·(1 − 0.5)
    net = linear()
    out = sample(net, x0, turbo_schedule(1.0, infer_steps=2, dtype=D), None, settings=PLAIN)
    assert torch.allclose(out, x0 * 0.25)
    assert [float(c[1]) for c in net.calls] == [1.0, 0.5]


def test_heun_second_order_update() -> None:
    # v = x: Heun multiplies by 1 − dt + dt²/2 = 0.625 per step of 0.5; turbo's last step stays the jump
    x0 = torch.full((1, 3, 2), 2.0, dtype=D)
    heun = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF, sampler_mode="heun")
    base_net = linear()
    out = sample(base_net, x0, base_schedule(2, 1.0, dtype=D), None, settings=heun)
    assert torch.allclose(out, x0 * 0.625 ** 2)
    assert [float(c[1][0]) for c in base_net.calls] == [1.0, 0.5, 0.5, 0.0]
    assert [c[3] is None for c in base_net.calls] == [False, True, False, True]  # corrector: no cache
    turbo_net = linear()
    out = sample(turbo_net, x0, turbo_schedule(1.0, infer_steps=2, dtype=D), None, settings=heun)
    assert torch.allclose(out, x0 * 0.625 * 0.5)
    assert len(turbo_net.calls) == 3


def test_heun_with_sde_falls_back_to_euler() -> None:
    x0 = torch.ones(1, 2, 2, dtype=D)
    settings = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF, sampler_mode="heun", infer_method="sde")
    net = Recorder(lambda x, t: torch.zeros_like(x))
    sample(net, x0, base_schedule(2, 1.0, dtype=D), None, settings=settings, generator=torch.Generator().manual_seed(0))
    assert len(net.calls) == 2


def test_sde_renoises_to_the_next_t_from_our_generator() -> None:
    x0 = torch.randn(2, 5, 3, dtype=D)
    settings = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF, infer_method="sde")
    v = torch.randn(2, 5, 3, dtype=D)
    for schedule in (base_schedule(3, 3.0, dtype=D), turbo_schedule(3.0, infer_steps=3, dtype=D)):
        net = Recorder(lambda x, t: v)
        out = sample(net, x0, schedule, None, settings=settings, generator=torch.Generator().manual_seed(9))
        replay = torch.Generator().manual_seed(9)
        x = x0
        for i in range(3):
            t, t_next = schedule.values[i], schedule.values[i + 1]
            assert torch.equal(net.calls[i][0], x)
            denoised = x - v * t
            x = t_next * torch.randn(x.shape, generator=replay, dtype=D) + (1 - t_next) * denoised
            if schedule.family == "turbo" and i == 2:
                x = denoised
        assert torch.allclose(out, x)
    with pytest.raises(AceStepError, match="generator"):
        sample(linear(), x0, base_schedule(2, dtype=D), None, settings=settings)


def test_velocity_clamp_per_item() -> None:
    # v = 10·x, threshold 2: item 0 gets v = 2·x; item 1 (v = 0 there) is left alone
    x0 = torch.stack([torch.ones(3, 2, dtype=D), torch.ones(3, 2, dtype=D)])
    net = Recorder(lambda x, t: torch.cat([10 * x[:1], torch.zeros_like(x[1:])]))
    settings = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF, velocity_norm_threshold=2.0)
    out = sample(net, x0, base_schedule(1, 1.0, dtype=D), None, settings=settings)
    assert torch.allclose(out[0], x0[0] * (1 - 2.0), atol=1e-8)
    assert torch.equal(out[1], x0[1])


def test_velocity_ema() -> None:
    # raw velocities 1, 2, 3 per call; EMA 0.25: 1, 0.75·2 + 0.25·1 = 1.75, 0.75·3 + 0.25·1.75 = 2.6875
    counter = iter([1.0, 2.0, 3.0])
    net = Recorder(lambda x, t: torch.full_like(x, next(counter)))
    settings = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF, velocity_ema_factor=0.25)
    steps: list[StepInfo] = []
    x0 = torch.zeros(1, 2, 1, dtype=D)
    out = sample(net, x0, base_schedule(timesteps=[1.0, 0.5, 0.25, 0.0], dtype=D), None,
                 settings=settings, callback=steps.append)
    assert [float(s.velocity[0, 0, 0]) for s in steps] == [1.0, 1.75, 2.6875]
    assert torch.allclose(out, torch.full_like(x0, -(0.5 * 1.0 + 0.25 * 1.75 + 0.25 * 2.6875)))


class TwoWay:
    """CFG toy: cond rows get `a·x + b`, uncond rows `x / 2` (the condition object is checked)."""

    def __init__(self, a: float, b: float):
        self.a, self.b, self.calls = a, b, []

    def __call__(self, x, t, condition, cache):
        assert condition == "doubled" and x.shape[0] == 2 and torch.equal(x[0], x[1])
        self.calls.append(float(t[0]))
        return torch.cat([self.a * x[:1] + self.b, x[1:] / 2])


def test_cfg_with_apg_inside_the_interval_only() -> None:
    x0 = torch.randn(1, 6, 3, dtype=D)
    settings = SamplerSettings(guidance_scale=4.0, dcw=DCW_OFF, cfg_interval_start=0.0, cfg_interval_end=0.5)
    schedule = base_schedule(4, 1.0, dtype=D)  # t = 1, 0.75, 0.5, 0.25
    steps: list[StepInfo] = []
    sample(TwoWay(1.5, 0.3), x0, schedule, "doubled", settings=settings, callback=steps.append)
    buffer, x = MomentumBuffer(), x0
    for i, info in enumerate(steps):
        v_c, v_u = 1.5 * x + 0.3, x / 2
        expected = apg(v_c, v_u, 4.0, buffer) if schedule.values[i] <= 0.5 else v_c
        assert torch.allclose(info.velocity, expected)
        x = x - expected * (schedule.values[i] - schedule.values[i + 1])
        assert torch.allclose(info.x, x)


def test_turbo_never_doubles_the_batch() -> None:
    net = linear()
    sample(net, torch.ones(1, 2, 2), turbo_schedule(3.0), None, settings=SamplerSettings(guidance_scale=7.0))
    assert all(c[0].shape[0] == 1 for c in net.calls)


def test_adg_and_heun_corrector_guidance() -> None:
    x0 = torch.randn(1, 4, 3, dtype=D)
    schedule = base_schedule(2, 1.0, dtype=D)
    for use_adg in (False, True):
        settings = SamplerSettings(guidance_scale=3.0, use_adg=use_adg, sampler_mode="heun", dcw=DCW_OFF)
        net = TwoWay(2.0, 0.1)
        out = sample(net, x0, schedule, "doubled", settings=settings)
        assert net.calls == [1.0, 0.5, 0.5, 0.0]
        buffer, x = MomentumBuffer(), x0
        for i in range(2):
            t, t_next = schedule.values[i], schedule.values[i + 1]
            v = adg(x, 2 * x + 0.1, x / 2, t, 3.0) if use_adg else apg(2 * x + 0.1, x / 2, 3.0, buffer)
            x_pred = x - v * (t - t_next)
            if use_adg and t_next > 0:
                v2 = adg(x_pred, 2 * x_pred + 0.1, x_pred / 2, t_next, 3.0)
            else:
                v2 = cfg(2 * x_pred + 0.1, x_pred / 2, 3.0)
            x = x - 0.5 * (v + v2) * (t - t_next)
        assert torch.allclose(out, x)


def test_cover_strength_switches_condition_and_cache() -> None:
    net = linear()
    sample(net, torch.ones(1, 2, 2), turbo_schedule(3.0), "cover",
           settings=SamplerSettings(audio_cover_strength=0.5), non_cover_condition="text")
    assert [c[2] for c in net.calls] == ["cover"] * 4 + ["text"] * 4
    caches = [c[3] for c in net.calls]
    assert all(c is caches[0] for c in caches[:4]) and all(c is caches[4] for c in caches[4:])
    assert caches[0] is not caches[4] and caches[4] == {}
    for strength, expected in ((0.0, ["text"] * 8), (1.0, ["cover"] * 8), (1.5, ["cover"] * 8)):
        net = linear()
        sample(net, torch.ones(1, 2, 2), turbo_schedule(3.0), "cover",
               settings=SamplerSettings(audio_cover_strength=strength), non_cover_condition="text")
        assert [c[2] for c in net.calls] == expected
    with pytest.raises(AceStepError, match="non_cover_condition"):
        sample(linear(), torch.ones(1, 2, 2), turbo_schedule(3.0), "cover",
               settings=SamplerSettings(audio_cover_strength=0.5))


def test_cover_noise_start_and_truncated_step_count() -> None:
    noise, source = torch.randn(1, 5, 2), torch.randn(1, 5, 2)
    net = linear()
    settings = SamplerSettings(dcw=DCW_OFF, cover_noise_strength=0.2, audio_cover_strength=0.5)
    sample(net, noise, turbo_schedule(3.0), "cover", settings=settings, non_cover_condition="text",
           source_latents=source)
    t_star = 0.8333333333333334
    assert len(net.calls) == 5
    assert torch.equal(net.calls[0][0], t_star * noise + (1 - t_star) * source)
    assert float(net.calls[0][1]) == pytest.approx(t_star, abs=1e-7)
    assert [c[2] for c in net.calls] == ["cover"] * 2 + ["text"] * 3  # int(5 · 0.5) = 2
    with pytest.raises(AceStepError, match="source latents"):
        sample(linear(), noise, turbo_schedule(3.0), None, settings=settings)


def towards_one(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact flow-matching velocity toward clean latents that are all 1: Euler lands on 1."""
    return (x - 1.0) / t.view(-1, 1, 1)


def repaint_case(frames: int = 8) -> tuple[torch.Tensor, RepaintInputs]:
    mask = torch.zeros(1, frames, dtype=torch.bool)
    mask[0, 3:5] = True
    return torch.randn(1, frames, 2, dtype=D), RepaintInputs(mask, torch.randn(1, frames, 2, dtype=D))


def test_repaint_injection_turbo_half() -> None:
    noise, repaint = repaint_case()
    schedule = turbo_schedule(3.0, dtype=D)
    net = Recorder(lambda x, t: torch.zeros_like(x))  # x never moves by itself
    settings = SamplerSettings(dcw=DCW_OFF, repaint_injection_ratio=0.5, repaint_crossfade_frames=0)
    sample(net, noise, schedule, None, settings=settings, repaint=repaint)
    outside = ~repaint.mask[0]
    for step in range(1, 8):
        x_in = net.calls[step][0][0]
        assert torch.equal(x_in[~outside], noise[0][~outside])
        if step <= 4:  # injected after steps 0..3 at the t just reached
            t_reached = schedule.values[step]
            expected = t_reached * noise + (1.0 - t_reached) * repaint.clean_latents
            assert torch.allclose(x_in[outside], expected[0][outside])
        else:
            assert torch.equal(x_in[outside], net.calls[4][0][0][outside])


def test_repaint_conservative_base_pastes_the_source_at_the_end() -> None:
    noise, repaint = repaint_case()
    settings = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF, repaint_injection_ratio=1.0,
                               repaint_crossfade_frames=0)
    out = sample(Recorder(towards_one), noise, base_schedule(4, 3.0, dtype=D), None,
                 settings=settings, repaint=repaint)
    outside = ~repaint.mask[0]
    assert torch.equal(out[0][outside], repaint.clean_latents[0][outside])
    assert torch.allclose(out[0][~outside], torch.ones_like(out[0][~outside]))
    turbo_out = sample(Recorder(towards_one), noise, turbo_schedule(3.0, dtype=D), None,
                       settings=settings, repaint=repaint)
    assert not torch.equal(turbo_out[0][outside], repaint.clean_latents[0][outside])  # no injection after the jump


def test_repaint_crossfade_after_the_loop() -> None:
    noise, repaint = repaint_case(frames=12)
    settings = SamplerSettings(guidance_scale=1.0, dcw=DCW_OFF, repaint_injection_ratio=0.0,
                               repaint_crossfade_frames=2)
    out = sample(Recorder(towards_one), noise, base_schedule(2, dtype=D), None,
                 settings=settings, repaint=repaint)
    clean = repaint.clean_latents[0]
    weights = [0, 1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3, 0]  # frames 0..7 around the region [3, 5)
    for frame, w in enumerate(weights):
        assert torch.allclose(out[0, frame], w * 1.0 + (1 - w) * clean[frame], atol=1e-6), frame
    assert torch.equal(out[0, 8:], clean[8:])


def test_repaint_inputs_are_checked() -> None:
    noise, repaint = repaint_case()
    with pytest.raises(AceStepError, match="mask"):
        sample(linear(), noise[:, :6], base_schedule(2, dtype=D), None, settings=PLAIN, repaint=repaint)


def test_unknown_methods_are_user_errors() -> None:
    with pytest.raises(AceStepError, match="Infer method"):
        SamplerSettings(infer_method="ddim")  # type: ignore[arg-type]
    with pytest.raises(AceStepError, match="Sampler"):
        SamplerSettings(sampler_mode="rk4")  # type: ignore[arg-type]
