"""Every shipped workflow (`workflows/*.json`) runs in the real ComfyUI on the tiny models and saves good audio.

Each workflow is converted to an API prompt the way the frontend does (`workflow_api.workflow_to_prompt`)
and queued with the workflow as metadata, exactly as pressing Run would. The files it names in Load Audio
nodes are generated into the input folder (users pick their own; the workflows are written for a 60 s
song). The workflows ship user-sized songs (60-90 s); decoding that much audio with the tiny 48 kHz VAE
is what costs time, so the song seconds, repaint ranges and source length are scaled by `TIME_SCALE` on
the queued copy and nothing else changes. `ACESTEP_WORKFLOWS_FULL_LENGTH=1` runs the shipped values
(about 3x slower). Every file a Save Audio node writes is read back: 48 kHz stereo, finite, not silent,
as long as the graph asks for, with the workflow inside the FLAC. Also: each workflow is the graph
`scripts/workflow_builder.py` makes of its source, ComfyUI serves the folder as templates, and re-running
with only a VAE Decode setting changed re-runs only decode and save.
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import comfyui_test_env
import numpy as np
import pytest
import soundfile

from .client import ComfyClient, execution_error, messages
from .tiny_model_folders import install_model_folders
from .test_audio_nodes import flac_tags_like_frontend
from .workflow_api import workflow_to_prompt

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import workflow_builder  # noqa: E402

WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
SOURCES = sorted(workflow_builder.SOURCES_DIR.glob("*.json"))
RATE = 48000
HOP = 1920
FULL_LENGTH = os.environ.get("ACESTEP_WORKFLOWS_FULL_LENGTH") == "1"
TIME_SCALE = 1.0 if FULL_LENGTH else 1 / 3
SHIPPED_SOURCE_SECONDS = 60.0
SOURCE_SECONDS = SHIPPED_SOURCE_SECONDS * TIME_SCALE
SAVE_TYPES = {"AceStepSaveAudio"}
LOAD_TYPES = {"AceStepLoadAudio", "LoadAudio"}
RUN_TIMEOUT_S = 900.0


def source_waveform(seconds: float = SOURCE_SECONDS) -> np.ndarray:
    """A stereo 48 kHz test recording `[samples, 2]`: a four-chord loop with a beat, different per channel."""
    t = np.arange(int(round(seconds * RATE))) / RATE
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0)
    roots = np.array([220.0, 174.6, 261.6, 196.0])[(t // 2).astype(int) % 4]
    left = sum(np.sin(2 * np.pi * roots * ratio * t) for ratio in (1.0, 1.26, 1.5)) * beat
    right = sum(np.sin(2 * np.pi * roots * ratio * t) for ratio in (0.5, 1.0, 1.5)) * beat
    return (0.2 * np.stack([left, right], axis=1)).astype(np.float32)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def scaled(prompt: dict[str, Any], object_info: dict[str, Any], factor: float = TIME_SCALE) -> dict[str, Any]:
    """A copy of `prompt` with the song and repaint times times `factor`, kept at or above the input's minimum
    (10 s for a song). A duration stated in Text Encode stays: it is prompt text, the latent sets the length.
    The planner's duration is scaled too: its codes (5 per second) set the length of the song they plan."""
    result = copy.deepcopy(prompt)
    for node in result.values():
        inputs = node["inputs"]
        names = {"AceStepEmptyLatent": ["seconds"],
                 "AceStepRepaintMask": ["repaint_start", "repaint_end"],
                 "AceStepLMPlanner": ["duration"]}.get(node["class_type"], [])
        declared = object_info[node["class_type"]]["input"]["required"]
        for name in names:
            if isinstance(inputs.get(name), (int, float)) and inputs[name] not in (0, -1):
                inputs[name] = max(round(inputs[name] * factor, 2), declared[name][1].get("min", -float("inf")))
    return result


def without_fingerprints(prompt: dict[str, Any]) -> dict[str, Any]:
    """A prompt as queued: the server adds `is_changed` (input fingerprints) to what it stores in files."""
    return {key: {name: value for name, value in node.items() if name != "is_changed"} for key, node in prompt.items()}


@pytest.fixture(scope="session")
def workflow_server(comfy_server: comfyui_test_env.ComfyServer,
                    comfy_env: comfyui_test_env.TestEnv) -> comfyui_test_env.ComfyServer:
    """The test server with the tiny models and every audio file a workflow loads in its input folder."""
    install_model_folders(comfy_server.base / "models", comfy_env.home / "tiny-models")
    names = set()
    for path in WORKFLOWS:
        for node in read_json(path).get("nodes", []):
            if node["type"] in LOAD_TYPES and node.get("widgets_values"):
                names.add(node["widgets_values"][0])
    for name in names:
        target = comfy_server.base / "input" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(target, source_waveform(), RATE)
    return comfy_server


def _upstream(prompt: dict[str, Any], node_id: str, name: str) -> str | None:
    value = prompt[node_id]["inputs"].get(name)
    return value[0] if isinstance(value, list) else None


def expected_length(prompt: dict[str, Any], save_id: str) -> tuple[int, int] | None:
    """(samples per file, files) a Save Audio node should get, following audio → decode → sampler → latent
    back to an Empty Latent or a source (with its repaint range); None where the graph decides itself."""
    node_id = _upstream(prompt, save_id, "audio")
    node_id = node_id and _upstream(prompt, node_id, "latent")
    node_id = node_id and _upstream(prompt, node_id, "latent")
    region = None
    if node_id and prompt[node_id]["class_type"] == "AceStepRepaintMask":
        region = prompt[node_id]["inputs"]
        node_id = _upstream(prompt, node_id, "latent")
    if not node_id:
        return None
    node = prompt[node_id]
    if node["class_type"] == "AceStepEmptyLatent":
        return round(node["inputs"]["seconds"] * RATE / HOP) * HOP, node["inputs"]["batch_size"]
    if node["class_type"] != "AceStepSourceAudioEncode":
        return None
    seconds = SOURCE_SECONDS
    if region is not None:
        seconds = max(seconds, region["repaint_end"]) - min(0.0, region["repaint_start"])
    return int(seconds * RATE) // HOP * HOP, node["inputs"]["batch_size"]


def check_audio(data: np.ndarray, rate: int, samples: int | None) -> None:
    assert rate == RATE
    assert data.ndim == 2 and data.shape[1] == 2, data.shape
    if samples is not None:
        assert data.shape[0] == samples, (data.shape[0] / RATE, samples / RATE)
    else:
        assert 10 * RATE <= data.shape[0] <= 600 * RATE, data.shape
    assert np.isfinite(data).all()
    assert float(np.sqrt(np.mean(data ** 2))) > 1e-3, "the song is silent"


def run_workflow(comfy: ComfyClient, workflow: dict[str, Any], prompt: dict[str, Any]) -> dict[str, Any]:
    entry = comfy.run(prompt, workflow, timeout_s=RUN_TIMEOUT_S)
    assert execution_error(entry) is None, execution_error(entry)
    assert entry["status"]["completed"], entry["status"]
    return entry


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_and_saves_good_audio(comfy: ComfyClient, object_info: dict[str, Any],
                                            workflow_server: comfyui_test_env.ComfyServer, path: Path) -> None:
    workflow = read_json(path)
    prompt = scaled(workflow_to_prompt(workflow, object_info), object_info)
    entry = run_workflow(comfy, workflow, prompt)
    saves = [key for key, node in prompt.items() if node["class_type"] in SAVE_TYPES]
    for key in saves:
        files = entry["outputs"][key]["audio"]
        expected = expected_length(prompt, key)
        if expected is not None:
            assert len(files) == expected[1], f"Save Audio {key} wrote {len(files)} files, expected {expected[1]}"
        for saved in files:
            assert saved["filename"].endswith(".flac"), saved
            raw = comfy.view(saved["filename"], saved["subfolder"], saved["type"])
            data, rate = soundfile.read(io.BytesIO(raw), dtype="float32")
            check_audio(data, rate, expected and expected[0])
            tags = flac_tags_like_frontend(raw)
            assert json.loads(tags["workflow"]) == workflow
            assert without_fingerprints(json.loads(tags["prompt"])) == prompt


def test_every_workflow_has_a_source() -> None:
    assert {p.stem for p in WORKFLOWS} == {p.stem for p in SOURCES}


def graph_of(workflow: dict[str, Any]) -> dict[str, Any]:
    """A UI workflow without its layout (positions, sizes, view), which the builder may restyle."""
    nodes = [{key: value for key, value in node.items() if key not in ("pos", "size")} for node in workflow["nodes"]]
    return {"nodes": nodes, "links": workflow["links"]}


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_workflow_is_built_from_its_source(object_info: dict[str, Any], workflow_server: comfyui_test_env.ComfyServer,
                                           path: Path) -> None:
    """The shipped file converts back to exactly its source, and is the graph the builder makes of it today."""
    source = read_json(path)
    shipped = read_json(REPO_ROOT / "workflows" / path.name)
    assert workflow_to_prompt(shipped, object_info) == workflow_builder.expected_prompt(source, object_info)
    assert graph_of(shipped) == graph_of(workflow_builder.build_workflow(source, object_info)), \
        f"workflows/{path.name} is out of date: run python scripts/workflow_builder.py {path.stem}"


def test_server_lists_the_workflows_as_templates(comfy: ComfyClient) -> None:
    pack = comfyui_test_env.PACK_FOLDER_NAME
    shipped = sorted((REPO_ROOT / "workflows").glob("*.json"))
    listed = comfy.get_json("/api/workflow_templates")
    assert sorted(listed.get(pack, [])) == [p.stem for p in shipped]
    for path in shipped:
        assert comfy.get_json(f"/api/workflow_templates/{pack}/{path.name}") == read_json(path)


def test_changing_only_the_decode_reruns_only_decode_and_save(comfy: ComfyClient, object_info: dict[str, Any],
                                                             workflow_server: comfyui_test_env.ComfyServer) -> None:
    workflow = read_json(REPO_ROOT / "workflows" / "text2music_fast.json")
    prompt = scaled(workflow_to_prompt(workflow, object_info), object_info)
    [decode] = [key for key, node in prompt.items() if node["class_type"] == "AceStepVaeDecode"]
    [save] = [key for key, node in prompt.items() if node["class_type"] in SAVE_TYPES]
    first = copy.deepcopy(prompt)
    first[decode]["inputs"]["peak_db"] = -2.0
    run_workflow(comfy, workflow, first)
    second = copy.deepcopy(prompt)
    second[decode]["inputs"]["peak_db"] = -3.0
    entry = run_workflow(comfy, workflow, second)
    [cached] = messages(entry, "execution_cached")
    assert sorted(cached["nodes"]) == sorted(set(prompt) - {decode, save})
    assert set(entry["outputs"]) >= {save}
