"""Bad inputs to the core nodes come back as node errors that name the field and the fix, the server keeps
running, and an interrupt stops a long sampler run within a step."""

from __future__ import annotations

from typing import Any

import pytest

from .client import ComfyClient, execution_error, messages
from .test_core_nodes import core_models, song_prompt  # noqa: F401  (core_models is a fixture)
from .tiny_model_folders import WRONG_FILE

ERROR_TYPE = "acestep_core.errors.AceStepError"
pytestmark = pytest.mark.usefixtures("core_models")


def _set(prompt: dict[str, Any], node: str, **inputs: Any) -> dict[str, Any]:
    prompt[node]["inputs"].update(inputs)
    return prompt


CASES = {
    "wrong file in the DiT menu": (
        lambda: _set(song_prompt(seed=21), "dit", dit_name=f"diffusion_models/{WRONG_FILE}"), "dit",
        ["Load ACE-Step DiT: dit_name 'diffusion_models/not_acestep.safetensors'", "not an ACE-Step 1.5 checkpoint"]),
    "official model missing, downloads off": (
        lambda: _set(song_prompt(seed=22), "dit", dit_name="acestep/acestep-v15-xl-base"), "dit",
        ["dit_name 'acestep/acestep-v15-xl-base'", "downloading is off", "turn on 'download'"]),
    "official model missing, Hugging Face offline": (
        lambda: _set(song_prompt(seed=23), "dit", dit_name="acestep/acestep-v15-xl-base", download=True), "dit",
        ["dit_name 'acestep/acestep-v15-xl-base'", "offline mode", "hf download"]),
    "repaint range after the end of the source": (
        lambda: song_prompt("repaint", seed=24, source=True, repaint=(20.0, 25.0)), "latent",
        ["ACE-Step Repaint Mask: Repaint start 20 s", "after the end of the source (6.00 s)"]),
    "base-only task on a turbo DiT": (
        lambda: song_prompt("lego", seed=25, source=True, track_name="drums"), "sample",
        ["ACE-Step DiT Sampler: Task lego needs an ACE-Step 1.5 base model", "Load a base model"]),
    "source task on an empty latent": (
        lambda: song_prompt("cover", seed=26), "sample",
        ["Task cover starts from a recording", "Source Audio Encode"]),
    "track name on a task that has no tracks": (
        lambda: song_prompt(seed=29, track_name="drums"), "cond",
        ["ACE-Step Text Encode: track_name is drums", "set track_name to none or choose lego or extract"]),
    "turbo with too many steps": (
        lambda: song_prompt(seed=27, steps=30), "sample", ["steps is 30", "1–20 steps"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_node_error_and_the_server_keeps_running(comfy: ComfyClient, case: str) -> None:
    make_prompt, node, parts = CASES[case]
    entry = comfy.run(make_prompt(), timeout_s=240)
    error = execution_error(entry)
    assert error is not None, f"{case}: the prompt ran"
    assert error["node_id"] == node, error
    assert error["exception_type"] == ERROR_TYPE, error
    for part in parts:
        assert part in error["exception_message"], error["exception_message"]
    assert comfy.system_stats()["system"]["comfyui_version"]


def test_server_runs_a_good_prompt_after_the_errors(comfy: ComfyClient) -> None:
    entry = comfy.run(song_prompt(seed=28, save="latent"), timeout_s=240)
    assert execution_error(entry) is None, execution_error(entry)


def test_interrupt_stops_a_long_sampler_run(comfy: ComfyClient) -> None:
    """A 240 s base-model song with 200 guided Heun steps (800 model calls) runs far longer than the
    moment it takes to interrupt, even on a fast machine; it stops within a step.

    A first run with one step leaves every node but the sampler cached, so the interrupted run is
    sampling from the moment it starts."""
    def prompt(steps: int) -> dict[str, Any]:
        song = song_prompt(seed=31, steps=steps, seconds=240.0, dit="acestep/acestep-v15-base", save="latent")
        song["sample"]["inputs"]["sampler"] = "heun"
        return song

    warm = comfy.run(prompt(1), timeout_s=300)
    assert execution_error(warm) is None, execution_error(warm)
    prompt_id = comfy.queue(prompt(200))
    entry, stopped_after = comfy.interrupt_when_running(prompt_id, settle_s=0.2)
    interrupted = messages(entry, "execution_interrupted")
    assert interrupted and interrupted[0]["node_id"] == "sample", entry["status"]
    assert stopped_after < 10, f"the sampler took {stopped_after:.1f} s to stop"
    assert comfy.run(song_prompt(seed=32, save="latent"), timeout_s=240)["status"]["completed"]

