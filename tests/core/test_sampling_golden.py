"""Replay the official golden sampling runs through our loop, with the network replaced by its recording.

The fake network checks that the loop feeds it the recorded latents and timesteps at every step and
answers with the recorded velocity; the loop's own arithmetic (schedule, guidance, update, DCW, noise)
must then reproduce the official intermediate tensors and the final latents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from acestep_core.sampling import (
    DCW_OFF,
    DcwSettings,
    SamplerSettings,
    StepInfo,
    base_schedule,
    draw_noise,
    sample,
    turbo_schedule,
)

RUNS = [
    "tiny_2b/generate_turbo_shift3_8steps_dcw_off.safetensors",
    "tiny_2b/generate_turbo_shift3_8steps_dcw_default.safetensors",
    "tiny_2b/generate_base_cfg7_apg_6steps_shift3_dcw_off.safetensors",
    "tiny_xl/generate_xl_turbo_shift3_8steps_dcw_off.safetensors",
]


def load_run(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), "pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        call = json.loads(f.metadata()["call"])
    return tensors, call


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """The brief's parity bar: relative L2 ≤ 1e-5 and max abs ≤ 1e-4."""
    diff = (actual.double() - expected.double())
    rel = diff.norm() / expected.double().norm().clamp_min(1e-30)
    assert rel <= 1e-5 and diff.abs().max() <= 1e-4, f"{what}: rel L2 {rel:.3e}, max abs {diff.abs().max():.3e}"


class RecordedNetwork:
    """Stands in for the DiT: checks each call against step N of the recording, returns its velocity."""

    def __init__(self, tensors: dict[str, torch.Tensor], condition: object):
        self.tensors = tensors
        self.condition = condition
        self.calls = 0
        self.caches: list[dict | None] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, condition: object, cache: dict | None) -> torch.Tensor:
        prefix = f"step{self.calls}."
        assert condition is self.condition
        assert_close(x, self.tensors[prefix + "decoder_input_hidden_states"], prefix + "input")
        assert torch.equal(t, self.tensors[prefix + "decoder_timestep"]), (t, self.tensors[prefix + "decoder_timestep"])
        self.calls += 1
        self.caches.append(cache)
        return self.tensors[prefix + "decoder_output_velocity"].clone()


def replay(golden_dir: Path, name: str):
    tensors, call = load_run(golden_dir / name)
    args = call["arguments"]
    is_base = ".base." in call["function"]
    noise = tensors["debug.noise"]
    batch, frames, channels = noise.shape
    assert torch.equal(draw_noise(batch, frames, channels, args["seed"]), noise)

    if is_base:
        schedule = base_schedule(args["infer_steps"], args["shift"])
        settings = SamplerSettings(guidance_scale=args["diffusion_guidance_scale"], dcw=DCW_OFF)
    else:
        schedule = turbo_schedule(args["shift"])
        settings = SamplerSettings(dcw=DCW_OFF if args.get("dcw_enabled") is False else DcwSettings())
    assert torch.equal(schedule.tensor()[:-1], tensors["debug.timestep_schedule"])

    condition = object()
    network = RecordedNetwork(tensors, condition)
    steps: list[StepInfo] = []
    out = sample(network, noise, schedule, condition, settings=settings, callback=steps.append)
    return tensors, call, network, steps, out


@pytest.mark.parametrize("name", RUNS)
def test_replay_matches_official_run(golden_dir: Path, name: str) -> None:
    tensors, call, network, steps, out = replay(golden_dir, name)
    assert network.calls == call["decoder_calls"]
    assert all(cache is network.caches[0] for cache in network.caches), "one cache for the whole run"
    assert_close(out, tensors["output.target_latents"], "output.target_latents")
    assert (out - tensors["output.target_latents"]).abs().max() <= 1e-6


def test_replay_guided_velocities(golden_dir: Path) -> None:
    tensors, call, _, steps, _ = replay(golden_dir, RUNS[2])
    assert call["guidance_calls"] == len(steps) == 6
    for i, info in enumerate(steps):
        assert_close(info.velocity, tensors[f"guidance{i}.guided_velocity"], f"guidance{i}")


def test_replay_dcw_outputs_are_the_next_inputs(golden_dir: Path) -> None:
    tensors, _, _, steps, out = replay(golden_dir, RUNS[1])
    for i, info in enumerate(steps):
        assert float(tensors[f"dcw{i}.t_curr"]) == info.t
        assert torch.equal(info.denoised, tensors[f"dcw{i}.denoised"])
        assert torch.equal(info.x, tensors[f"dcw{i}.x_next_out"])
    assert torch.equal(out, tensors["output.target_latents"])
