"""APG, ADG, CFG and the CFG interval against small cases worked out by hand from dit.md §4.5–4.7."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_core.sampling import MomentumBuffer, adg, apg, cfg, in_cfg_interval
from acestep_core.sampling.guidance import ADG_ANGLE_CLIP

D = torch.float64


def column(*values: float) -> torch.Tensor:
    """A [1, T, 1] tensor: one item, one channel, the values along time."""
    return torch.tensor(values, dtype=D).reshape(1, -1, 1)


def test_cfg_formula() -> None:
    c, u = column(1.0, 2.0), column(0.5, -1.0)
    assert torch.equal(cfg(c, u, 3.0), column(0.5 + 3 * 0.5, -1.0 + 3 * 3.0))


def test_apg_projects_over_time_and_keeps_only_the_orthogonal_part() -> None:
    # v_c = (3, 4) over time → unit u = (0.6, 0.8); diff = (0, 1): parallel 0.8·u, orthogonal (−0.48, 0.36)
    v_c, v_u = column(3.0, 4.0), column(3.0, 3.0)
    out = apg(v_c, v_u, 3.0)
    assert torch.allclose(out, column(3.0 - 2 * 0.48, 4.0 + 2 * 0.36), atol=1e-12)
    # eta weights the parallel part back in
    out_eta = apg(v_c, v_u, 3.0, eta=1.0)
    assert torch.allclose(out_eta, column(3.0, 5.0 + 1.0), atol=1e-12)


def test_apg_momentum_buffer_persists() -> None:
    v_c, v_u = column(3.0, 4.0), column(3.0, 3.0)
    buffer = MomentumBuffer()
    apg(v_c, v_u, 3.0, buffer)
    second = apg(v_c, v_u, 3.0, buffer)  # running = (0, 1) − 0.75·(0, 1) = (0, 0.25)
    assert torch.allclose(buffer.running, column(0.0, 0.25))
    assert torch.allclose(second, column(3.0 - 2 * 0.12, 4.0 + 2 * 0.09), atol=1e-12)


def test_apg_norm_clamp_per_item_and_channel() -> None:
    # channel 0: diff (0, 10) has norm 10 > 2.5 → scaled to (0, 2.5); channel 1: diff (0, 1) untouched
    v_c = torch.tensor([[[3.0, 3.0], [4.0, 4.0]]], dtype=D)
    v_u = torch.tensor([[[3.0, 3.0], [-6.0, 3.0]]], dtype=D)
    out = apg(v_c, v_u, 2.0)
    assert torch.allclose(out[0, :, 0], torch.tensor([3.0 - 2.5 * 0.48, 4.0 + 2.5 * 0.36], dtype=D), atol=1e-12)
    assert torch.allclose(out[0, :, 1], torch.tensor([3.0 - 0.48, 4.0 + 0.36], dtype=D), atol=1e-12)


def rotation_case(phi: float, sigma: float = 1.0) -> tuple[torch.Tensor, ...]:
    """x = 0, so x̂ = −σ·v: x̂_c = e1 and x̂_u at angle φ from it, in one frame of 2 channels."""
    x = torch.zeros(1, 1, 2)
    v_c = -torch.tensor([[[1.0, 0.0]]]) / sigma
    v_u = -torch.tensor([[[math.cos(phi), math.sin(phi)]]]) / sigma
    return x, v_c, v_u


@pytest.mark.parametrize(("phi", "scale"), [(0.1, 2.0), (0.1, 7.0), (0.3, 0.5), (1.0, 1.5)])
def test_adg_moves_the_clean_prediction_away_by_the_clipped_angle(phi: float, scale: float) -> None:
    x, v_c, v_u = rotation_case(phi)
    weight = max(scale - 1.0, 0.0) + 1e-3
    new_angle = min(weight * phi, ADG_ANGLE_CLIP)
    # Δ = x̂_c − x̂_u; its part ⟂ x̂_u is sin φ·(sin φ, −cos φ), so perp/sin θ = (sin φ, −cos φ) and
    # x_new = cos θ'·e1 + sin θ'·(sin φ, −cos φ); the velocity is (x − x_new)/σ = −x_new
    x_new = torch.tensor([math.cos(new_angle) + math.sin(new_angle) * math.sin(phi),
                          -math.sin(new_angle) * math.cos(phi)])
    out = adg(x, v_c, v_u, 1.0, scale)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, 0], -x_new, atol=1e-6)


def test_adg_sigma_scales_back_to_a_velocity_and_works_per_item() -> None:
    cases = [rotation_case(0.2, sigma=0.5), rotation_case(0.4, sigma=0.25)]
    x = torch.cat([c[0] for c in cases])
    v_c = torch.cat([c[1] for c in cases])
    v_u = torch.cat([c[2] for c in cases])
    together = adg(x, v_c, v_u, torch.tensor([0.5, 0.25]), 3.0)
    one = adg(cases[0][0], cases[0][1], cases[0][2], 0.5, 3.0)
    two = adg(cases[1][0], cases[1][1], cases[1][2], 0.25, 3.0)
    assert torch.allclose(together, torch.cat([one, two]), atol=1e-7)
    unit = adg(*rotation_case(0.2), 1.0, 3.0)
    assert torch.allclose(one, unit / 0.5, atol=1e-6)


def test_adg_parallel_predictions_stay_finite() -> None:
    x = torch.randn(1, 4, 3)
    v = torch.randn(1, 4, 3)
    out = adg(x, v, v * 1.0000001, 0.7, 5.0)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, v, atol=1e-4)


def test_cfg_interval_is_inclusive_and_compared_in_t_dtype() -> None:
    t = torch.tensor(0.3, dtype=torch.float32)  # 0.30000001 as float32
    assert in_cfg_interval(t, 0.0, 0.3)  # python would say 0.30000001 > 0.3
    assert in_cfg_interval(t, 0.3, 1.0)
    assert not in_cfg_interval(torch.tensor(0.75), 0.0, 0.5)
    assert in_cfg_interval(torch.tensor(1.0), 0.0, 1.0)


def test_apg_chain_matches_official_guided_velocities(golden_dir: Path) -> None:
    g = load_file(str(golden_dir / "tiny_2b/generate_base_cfg7_apg_6steps_shift3_dcw_off.safetensors"))
    buffer = MomentumBuffer()
    for i in range(6):
        v_c, v_u = g[f"step{i}.decoder_output_velocity"].chunk(2)
        guided = apg(v_c, v_u, 7.0, buffer)
        expected = g[f"guidance{i}.guided_velocity"]
        assert (guided - expected).abs().max() <= 4 * torch.finfo(torch.float32).eps * expected.abs().max()
