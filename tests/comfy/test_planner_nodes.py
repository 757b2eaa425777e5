"""The planner nodes (Load LM, LM Planner, Save / Load Blueprint, Text Encode's blueprint) in the real ComfyUI.

The tiny 5 Hz LM (real vocabulary, random toy weights) sits in the server's model folders twice: as the
official folder `acestep-5Hz-lm-0.6B` and as ComfyUI's single file. Its text is gibberish, but the
constrained decoder makes every plan well-formed: metadata in range and exactly 5 codes a second. Text
budgets are capped (`max_text_tokens`) so that each plan takes seconds.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import comfyui_test_env
import pytest

from .client import ComfyClient, PromptRejected, execution_error, messages
from .node_definitions import check_node_definitions
from .test_core_nodes import check_song, core_models, saved_songs  # noqa: F401  (core_models is a fixture)
from .tiny_model_folders import COMFY_LM, LM_FOLDER

pytestmark = pytest.mark.usefixtures("core_models")
ERROR_TYPE = "acestep_core.errors.AceStepError"
PLANNER_NODES = {
    "AceStepLoadLM": ["lm_name", "dtype", "download"],
    "AceStepLMPlanner": ["lm", "mode", "caption", "lyrics", "instrumental", "bpm", "keyscale", "timesignature",
                         "duration", "language", "write_codes", "use_lm_caption", "temperature", "cfg_scale",
                         "top_k", "top_p", "min_p", "repetition_penalty", "max_text_tokens", "seed", "batch_size",
                         "latent", "dit", "audio_codes"],
    "AceStepSaveBlueprint": ["blueprint", "filename_prefix"],
    "AceStepLoadBlueprint": ["blueprint_file"],
}
LM_FILE = f"text_encoders/{COMFY_LM}"


def plan_prompt(mode: str = "think", *, lm: str = f"acestep/{LM_FOLDER}", seed: int = 1, batch: int = 1,
                duration: float = 10.0, **inputs: Any) -> dict[str, Any]:
    """Load LM → LM Planner → Save Blueprint (under a fresh prefix)."""
    planner = {"lm": ["lm", 0], "mode": mode, "caption": "dream pop, airy synths", "lyrics": "[verse]\nla la",
               "instrumental": False, "bpm": 0, "keyscale": "auto", "timesignature": "auto", "duration": duration,
               "language": "auto", "write_codes": True, "use_lm_caption": True, "temperature": 0.85,
               "cfg_scale": 2.0, "top_k": 0, "top_p": 0.9, "min_p": 0.0, "repetition_penalty": 1.0,
               "max_text_tokens": 40, "seed": seed, "batch_size": batch}
    planner.update(inputs)
    return {
        "lm": {"class_type": "AceStepLoadLM", "inputs": {"lm_name": lm, "dtype": "auto", "download": False}},
        "plan": {"class_type": "AceStepLMPlanner", "inputs": planner},
        "save": {"class_type": "AceStepSaveBlueprint",
                 "inputs": {"blueprint": ["plan", 0], "filename_prefix": f"acestep_plans/{mode}_{uuid.uuid4().hex[:8]}"}},
    }


def saved_blueprint(entry: dict[str, Any], output: Path) -> tuple[Path, dict[str, Any]]:
    assert execution_error(entry) is None, execution_error(entry)
    [text] = entry["outputs"]["save"]["text"]
    name = text.splitlines()[0].removeprefix("saved ")
    path = output / name
    return path, json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def output(comfy_server: comfyui_test_env.ComfyServer) -> Path:
    return comfy_server.base / "output"


def test_object_info_documents_the_planner_nodes(comfy: ComfyClient) -> None:
    info = check_node_definitions(comfy, PLANNER_NODES, "audio/ACE-Step")
    menu = info["AceStepLoadLM"]["input"]["required"]["lm_name"][1]["options"]
    assert {"acestep/acestep-5Hz-lm-1.7B", f"acestep/{LM_FOLDER}", LM_FILE} <= set(menu)
    assert info["AceStepLMPlanner"]["output"] == ["ACESTEP_BLUEPRINT", "STRING", "STRING"]


def test_think_writes_metadata_and_five_codes_a_second(comfy: ComfyClient, output: Path) -> None:
    """Also: a metadata widget takes a link (here bpm from a core Int primitive)."""
    prompt = plan_prompt(seed=5, batch=2, keyscale="F# minor")
    prompt["tempo"] = {"class_type": "PrimitiveInt", "inputs": {"value": 96}}
    prompt["plan"]["inputs"]["bpm"] = ["tempo", 0]
    entry = comfy.run(prompt, timeout_s=240)
    _, data = saved_blueprint(entry, output)
    assert data["mode"] == "think" and len(data["items"]) == 2
    assert data["items"][0]["seed"] == 5 and data["items"][1]["seed"] != 5
    for item in data["items"]:
        assert len(item["codes"]) == 50 and all(0 <= c < 64000 for c in item["codes"])
        assert item["keyscale"] == "F# minor" and item["duration"] == 10.0 and item["bpm"] == 96
    assert entry["outputs"]["lm"]["text"][0].startswith("ACE-Step 1.5 5 Hz LM")


@pytest.mark.parametrize("mode", ["simple", "rewrite", "random"])
def test_text_modes_on_the_comfy_single_file(comfy: ComfyClient, output: Path, mode: str) -> None:
    entry = comfy.run(plan_prompt(mode, lm=LM_FILE, seed=7, bpm=120, language="en"), timeout_s=240)
    _, data = saved_blueprint(entry, output)
    assert data["mode"] == {"simple": "sample", "rewrite": "format", "random": "understand"}[mode]
    [item] = data["items"]
    assert item["codes"] == [] and item["seed"] == 7
    if mode != "random":
        assert item["language"] == "en"
    if mode == "rewrite":
        assert item["bpm"] == 120


def test_understand_reads_a_source_latent_through_the_dit(comfy: ComfyClient, output: Path) -> None:
    prompt = plan_prompt("understand", seed=2)
    prompt.update({
        "dit": {"class_type": "AceStepLoadDit", "inputs": {"dit_name": "acestep/acestep-v15-turbo", "dtype": "auto",
                                                           "variant": "auto", "download": False}},
        "vae": {"class_type": "AceStepLoadVae", "inputs": {"vae_name": "acestep/vae", "dtype": "auto",
                                                           "download": False}},
        "load": {"class_type": "LoadAudio", "inputs": {"audio": "acestep_source.wav"}},
        "source": {"class_type": "AceStepSourceAudioEncode", "inputs": {
            "vae": ["vae", 0], "audio": ["load", 0], "encode_mode": "mean", "seed": 0, "batch_size": 1}},
    })
    prompt["plan"]["inputs"].update(latent=["source", 0], dit=["dit", 0])
    _, data = saved_blueprint(comfy.run(prompt, timeout_s=240), output)
    [item] = data["items"]
    assert data["mode"] == "understand" and len(item["codes"]) == 30  # 6 s of audio at 5 codes a second


def test_understand_without_audio_names_the_inputs(comfy: ComfyClient) -> None:
    entry = comfy.run(plan_prompt("understand", seed=3), timeout_s=120)
    error = execution_error(entry)
    assert error and error["node_id"] == "plan" and error["exception_type"] == ERROR_TYPE
    assert "connect 'latent'" in error["exception_message"] and "'audio_codes'" in error["exception_message"]


def test_blueprint_round_trip_through_save_and_load(comfy: ComfyClient, output: Path,
                                                    comfy_server: comfyui_test_env.ComfyServer) -> None:
    first, data = saved_blueprint(comfy.run(plan_prompt(seed=9), timeout_s=240), output)
    name = f"plans_{uuid.uuid4().hex[:8]}.json"
    shutil.copy(first, comfy_server.base / "input" / name)
    menu = comfy.object_info("AceStepLoadBlueprint")["AceStepLoadBlueprint"]["input"]["required"]["blueprint_file"]
    assert name in menu[1]["options"]
    prefix = f"acestep_plans/again_{uuid.uuid4().hex[:8]}"

    def load_and_save(file: str) -> tuple[Path, dict[str, Any]]:
        return saved_blueprint(comfy.run({
            "load": {"class_type": "AceStepLoadBlueprint", "inputs": {"blueprint_file": file}},
            "save": {"class_type": "AceStepSaveBlueprint", "inputs": {"blueprint": ["load", 0],
                                                                     "filename_prefix": prefix}},
        }, timeout_s=60), output)

    second, copy = load_and_save(name)
    assert second != first and copy == data
    other = f"plans_{uuid.uuid4().hex[:8]}.json"
    shutil.copy(first, comfy_server.base / "input" / other)
    third, _ = load_and_save(other)
    assert third.parent == second.parent and third.name != second.name and second.is_file(), "a file was overwritten"


def test_load_blueprint_refuses_other_json(comfy: ComfyClient, comfy_server: comfyui_test_env.ComfyServer) -> None:
    name = f"not_a_plan_{uuid.uuid4().hex[:8]}.json"
    (comfy_server.base / "input" / name).write_text('{"hello": 1}', encoding="utf-8")
    entry = comfy.run({"load": {"class_type": "AceStepLoadBlueprint", "inputs": {"blueprint_file": name}},
                       "save": {"class_type": "AceStepSaveBlueprint",
                                "inputs": {"blueprint": ["load", 0], "filename_prefix": "acestep_plans/never"}}},
                      timeout_s=60)
    error = execution_error(entry)
    assert error and error["node_id"] == "load" and "is not an ACE-Step blueprint" in error["exception_message"]


def song_from_plan(seed: int, peak_db: float) -> dict[str, Any]:
    """Planner (batch 2) → Text Encode (blueprint) → DiT Sampler → VAE Decode → SaveAudio."""
    prompt = plan_prompt(seed=seed, batch=2)
    del prompt["save"]
    prompt.update({
        "dit": {"class_type": "AceStepLoadDit", "inputs": {"dit_name": "acestep/acestep-v15-turbo", "dtype": "auto",
                                                           "variant": "auto", "download": False}},
        "vae": {"class_type": "AceStepLoadVae", "inputs": {"vae_name": "acestep/vae", "dtype": "auto",
                                                           "download": False}},
        "te": {"class_type": "AceStepLoadTextEncoder", "inputs": {
            "text_encoder_name": "acestep/Qwen3-Embedding-0.6B", "dtype": "auto", "download": False}},
        "latent": {"class_type": "AceStepEmptyLatent", "inputs": {"seconds": 30.0, "batch_size": 1}},
        "cond": {"class_type": "AceStepTextEncode", "inputs": {
            "text_encoder": ["te", 0], "caption": "replaced by the plans", "lyrics": "", "language": "auto", "bpm": 0,
            "keyscale": "auto", "timesignature": "auto", "duration": 0.0, "task": "text2music", "track_name": "none",
            "track_classes": "", "latent": ["latent", 0], "blueprint": ["plan", 0]}},
        "sample": {"class_type": "AceStepDitSampler", "inputs": {
            "dit": ["dit", 0], "conditioning": ["cond", 0], "latent": ["latent", 0], "seed": seed, "steps": 0,
            "shift": 3.0, "guidance_scale": 7.0, "use_adg": False, "cfg_interval_start": 0.0, "cfg_interval_end": 1.0,
            "infer_method": "ode", "sampler": "euler", "audio_cover_strength": 1.0, "cover_noise_strength": 0.0}},
        "decode": {"class_type": "AceStepVaeDecode", "inputs": {
            "vae": ["vae", 0], "latent": ["sample", 0], "normalize": True, "peak_db": peak_db, "fade_in": 0.0,
            "fade_out": 0.0}},
        "save": {"class_type": "SaveAudio", "inputs": {
            "audio": ["decode", 0], "filename_prefix": f"acestep_plans/song_{uuid.uuid4().hex[:8]}"}},
    })
    return prompt


def test_plans_make_songs_and_decode_changes_do_not_rerun_the_planner(comfy: ComfyClient) -> None:
    entry = comfy.run(song_from_plan(13, -1.0), timeout_s=300)
    songs = saved_songs(comfy, entry)
    assert len(songs) == 2
    for data, rate in songs:
        check_song(data, rate, frames=250)  # the codes' 10 s, not the empty latent's 30 s
    again = comfy.run(song_from_plan(13, -3.0), timeout_s=300)
    assert len(saved_songs(comfy, again)) == 2
    cached = {node for data in messages(again, "execution_cached") for node in data["nodes"]}
    assert {"lm", "plan", "cond", "sample"} <= cached, cached


@pytest.mark.parametrize(("inputs", "field", "fragments"), [
    ({"bpm": 20}, "bpm", ["bpm 20 is outside", "30 to 300"]),
    ({"duration": 5.0}, "duration", ["duration 5.0 s is outside"]),
])
def test_bad_metadata_stops_the_planner_naming_the_field(comfy: ComfyClient, inputs: dict[str, Any], field: str,
                                                         fragments: list[str]) -> None:
    entry = comfy.run(plan_prompt(seed=17, **inputs), timeout_s=120)
    error = execution_error(entry)
    assert error and error["node_id"] == "plan" and error["exception_type"] == ERROR_TYPE, entry["status"]
    assert error["exception_message"].startswith("ACE-Step LM Planner: ")
    for fragment in fragments:
        assert fragment in error["exception_message"]


def test_unknown_key_stops_the_planner_naming_the_field(comfy: ComfyClient) -> None:
    """A key outside the menu (typed into a linked value or an API prompt) is refused by name: by ComfyUI's
    combo check, or (0.3.75 lets V3 combo values through) by the planner's own check."""
    try:
        entry = comfy.run(plan_prompt(seed=18, keyscale="H major"), timeout_s=120)
    except PromptRejected as rejected:
        assert "keyscale" in json.dumps(rejected.node_errors["plan"])
        return
    error = execution_error(entry)
    assert error and error["node_id"] == "plan" and error["exception_type"] == ERROR_TYPE, entry["status"]
    assert "keyscale 'H major' is not a key" in error["exception_message"]


def test_interrupt_stops_the_lm_within_a_chunk_of_tokens(comfy: ComfyClient) -> None:
    """600 s of codes (3000 tokens, two guided rows each) run far longer than the moment it takes to interrupt."""
    warm = comfy.run(plan_prompt(seed=19), timeout_s=240)  # the LM loader is cached for the long run
    assert execution_error(warm) is None, execution_error(warm)
    prompt_id = comfy.queue(plan_prompt(seed=20, duration=600.0, bpm=100, keyscale="C major", timesignature="4"))
    entry, stopped_after = comfy.interrupt_when_running(prompt_id, settle_s=0.5)
    interrupted = messages(entry, "execution_interrupted")
    assert interrupted and interrupted[0]["node_id"] == "plan", entry["status"]
    assert stopped_after < 10, f"the planner took {stopped_after:.1f} s to stop"
