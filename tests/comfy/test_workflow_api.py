"""The UI-workflow -> API-prompt converter: its rules on small graphs, then a saved workflow run for real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .client import ComfyClient, execution_error
from .test_empty_latent import frames_for, saved_latent
from .workflow_api import WorkflowError, workflow_to_prompt

DATA = Path(__file__).parent / "data"

OBJECT_INFO = {
    "Source": {"input": {"required": {
        "seed": ["INT", {"default": 0}],
        "steps": ["INT", {"default": 8}],
        "sampler": [["euler", "heun"], {}],
        "noise": ["INT", {"control_after_generate": True}],
        "scale": ["FLOAT", {}],
    }}, "output": ["LATENT"], "display_name": "Source node"},
    "Sink": {"input": {"required": {"samples": ["LATENT"], "strength": ["FLOAT", {"forceInput": True}]},
                       "optional": {"label": ["STRING", {}]}}, "output": []},
}


def _node(node_id: int, kind: str, mode: int = 0, inputs: list | None = None, widgets: Any = None) -> dict:
    return {"id": node_id, "type": kind, "mode": mode, "inputs": inputs or [],
            "outputs": [{"name": "out", "type": "LATENT", "links": []}], "widgets_values": widgets or []}


def test_widget_values_skip_control_values_and_socket_only_inputs() -> None:
    source = _node(1, "Source", widgets=[42, "randomize", 20, "heun", 7, "fixed", 1.5])
    sink = _node(2, "Sink", inputs=[{"name": "samples", "type": "LATENT", "link": 1}], widgets=["hello"])
    workflow = {"nodes": [source, sink], "links": [[1, 1, 0, 2, 0, "LATENT"]]}
    prompt = workflow_to_prompt(workflow, OBJECT_INFO)
    assert prompt["1"]["inputs"] == {"seed": 42, "steps": 20, "sampler": "heun", "noise": 7, "scale": 1.5}
    assert prompt["1"]["_meta"]["title"] == "Source node"
    assert prompt["2"] == {"inputs": {"label": "hello", "samples": ["1", 0]}, "class_type": "Sink",
                           "_meta": {"title": "Sink"}}


def test_link_objects_dict_widgets_and_muted_origins() -> None:
    source = _node(1, "Source", widgets={"seed": 3, "steps": 4, "unknown": 9})
    muted = _node(3, "Source", mode=2)
    sink = _node(2, "Sink", inputs=[{"name": "samples", "type": "LATENT", "link": 7},
                                    {"name": "strength", "type": "FLOAT", "link": 8}])
    links = [{"id": 7, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "LATENT"},
             {"id": 8, "origin_id": 3, "origin_slot": 0, "target_id": 2, "target_slot": 1, "type": "FLOAT"}]
    prompt = workflow_to_prompt({"nodes": [source, muted, sink], "links": links}, OBJECT_INFO)
    assert set(prompt) == {"1", "2"}
    assert prompt["1"]["inputs"] == {"seed": 3, "steps": 4}
    assert prompt["2"]["inputs"] == {"samples": ["1", 0]}


def test_refuses_subgraphs_and_unknown_nodes() -> None:
    with pytest.raises(WorkflowError, match="subgraphs"):
        workflow_to_prompt({"nodes": [], "definitions": {"subgraphs": [{"id": "x"}]}}, OBJECT_INFO)
    with pytest.raises(WorkflowError, match="NotInstalled"):
        workflow_to_prompt({"nodes": [_node(1, "NotInstalled")], "links": []}, OBJECT_INFO)


def test_saved_ui_workflow_runs_on_the_server(comfy: ComfyClient, object_info: dict[str, Any]) -> None:
    workflow = json.loads((DATA / "empty_latent_ui.json").read_text())
    prompt = workflow_to_prompt(workflow, object_info)
    assert set(prompt) == {"1", "3"}, "Reroute, note, bypassed and muted nodes must not reach the server"
    assert prompt["1"]["inputs"] == {"seconds": 10.1, "batch_size": 2}
    assert prompt["3"]["inputs"]["samples"] == ["1", 0]
    assert prompt["3"]["_meta"]["title"] == "Save the empty latent"
    entry = comfy.run(prompt, workflow=workflow)
    assert execution_error(entry) is None, execution_error(entry)
    latent = saved_latent(comfy, entry, "3")
    assert tuple(latent.shape) == (2, 64, frames_for(101))
