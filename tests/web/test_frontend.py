"""The pack in the real frontend: extensions load, nodes are searchable, workflows open, other nodes still work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import soundfile

from tests.comfy.client import ComfyClient
from tests.comfy.test_workflows import RATE, SHIPPED_SOURCE_SECONDS, source_waveform
from tests.comfy.workflow_api import workflow_to_prompt

from .comfy_page import OUR_EXTENSIONS, ComfyPage, load_workflow, read_json
from .graphs import song_graph

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
LOAD_TYPES = {"AceStepLoadAudio", "LoadAudio"}
ENHANCED = {"AceStepRepaintMask": ".acestep-region", "AceStepTextEncode": ".acestep-lyrics",
            "AceStepLoadAudio": "audio.comfy-audio", "AceStepSaveAudio": "audio.comfy-audio",
            "AceStepPreviewAudio": "audio.comfy-audio"}


def required_frontend_version(comfyui_dir: Path) -> str:
    text = (comfyui_dir / "requirements.txt").read_text()
    return re.search(r"^comfyui-frontend-package==(\S+)", text, re.M).group(1)


def our_nodes(object_info: dict[str, Any]) -> dict[str, str]:
    return {name: info["display_name"] for name, info in object_info.items() if name.startswith("AceStep")}


def test_frontend_loads_our_extensions(ui: ComfyPage, comfy_env: Any, comfy: ComfyClient) -> None:
    state = ui.evaluate("""async () => ({
        version: window.__COMFYUI_FRONTEND_VERSION__,
        extensions: app.extensions.map((e) => e.name).filter((n) => n.startsWith("acestep")),
        files: (await (await fetch("/extensions")).json()).filter((f) => f.includes("comfyui-acestep")),
    })""")
    assert state["version"] == required_frontend_version(comfy_env.comfyui_dir)
    assert sorted(state["extensions"]) == sorted(OUR_EXTENSIONS)
    assert {Path(f).name for f in state["files"]} >= {"audio_player.js", "lyrics_editor.js", "region_picker.js"}
    ui.shot("01_frontend_loaded")


def test_node_search_finds_every_pack_node(ui: ComfyPage, comfy: ComfyClient) -> None:
    wanted = our_nodes(comfy.object_info())
    assert len(wanted) >= 13, sorted(wanted)
    ui.build({})
    ui.browser.mouse([["dblclick", 800, 650]])
    ui.wait_for("() => document.querySelector('input[placeholder^=\"Search\"]')")
    ui.browser.type("ACE-Step")
    found = ui.wait_for("""(names) => {
        const items = [...document.querySelectorAll('[role=option]')].map((e) => e.innerText);
        return names.every((name) => items.some((text) => text.includes(name))) && items;
    }""", sorted(wanted.values()), timeout_s=15)
    ui.shot("02_node_search")
    ui.browser.press("Escape")
    assert all(any(name in item for item in found) for name in wanted.values())


def check_workflow_loads(ui: ComfyPage, workflow: dict[str, Any], name: str) -> None:
    """Load a UI workflow: no missing-nodes dialog, every node known, our widgets attached, and saving then
    loading it again keeps every widget value (our extra widgets must not shift them)."""
    load_workflow(ui, workflow)
    ui.wait_for("() => app.graph.nodes.every((n) => !n.acestepRegion || (n.acestepRegion.ticked && !n.acestepRegion.loading))")
    ui.shot(name)
    assert ui.missing_nodes_dialog() == ""
    state = ui.evaluate("""(selectors) => ({
        missing: app.graph.nodes.filter((n) => n.has_errors || !LiteGraph.registered_node_types[n.type]).map((n) => n.type),
        enhanced: app.graph.nodes.filter((n) => selectors[n.type]).map((n) => [n.type,
            n.widgets.some((w) => w.element?.matches?.(selectors[n.type]))]),
    })""", ENHANCED)
    assert state["missing"] == []
    assert all(ok for _, ok in state["enhanced"]), state["enhanced"]
    types = {node["type"] for node in workflow.get("nodes", [])} - FRONTEND_ONLY_TYPES
    registered = ui.evaluate("(types) => types.filter((t) => LiteGraph.registered_node_types[t])", sorted(types))
    assert sorted(registered) == sorted(types)
    first, second = ui.evaluate("""async () => {
        const values = (g) => Object.fromEntries(g.nodes.map((n) => [n.id, n.widgets_values ?? null]));
        const first = app.graph.serialize();
        await app.loadGraphData(first);
        return [values(first), values(app.graph.serialize())];
    }""")
    assert first == second, "widget values change when the workflow is saved and loaded again"


@pytest.fixture(scope="session")
def workflow_inputs(web_server: Any) -> None:
    """The audio files the shipped workflows name (placeholders users replace), so players and pickers load them."""
    for path in WORKFLOWS:
        for node in read_json(path).get("nodes", []):
            target = web_server.base / "input" / str((node.get("widgets_values") or [""])[0])
            if node["type"] in LOAD_TYPES and not target.exists():
                soundfile.write(target, source_waveform(SHIPPED_SOURCE_SECONDS), RATE)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_loads_without_missing_nodes(workflow_inputs: None, ui: ComfyPage, comfy: ComfyClient,
                                                      path: Path) -> None:
    """Also: the frontend queues exactly the prompt our converter (and so tests/comfy/test_workflows.py) runs,
    apart from values of frontend-only widgets (player, preview) that no node declares."""
    workflow = read_json(path)
    check_workflow_loads(ui, workflow, f"03_workflow_{path.stem}")
    load_workflow(ui, workflow)
    queued = ui.evaluate("async () => (await app.graphToPrompt()).output")
    info = comfy.object_info()
    for node in queued.values():
        declared = info[node["class_type"]]["input"]
        known = {**declared.get("required", {}), **declared.get("optional", {})}
        node["inputs"] = {name: value for name, value in node["inputs"].items() if name in known}
    assert queued == workflow_to_prompt(workflow, info)


def test_saved_graph_of_every_pack_node_loads_back(ui: ComfyPage, comfy: ComfyClient) -> None:
    """A graph with each of our nodes, saved as a UI workflow the way users share them, opens again intact.
    Pack nodes outside the repaint song stand unconnected below it (new nodes join automatically)."""
    in_song = {"AceStepLoadDit", "AceStepLoadVae", "AceStepLoadTextEncoder", "AceStepLoadAudio",
               "AceStepSourceAudioEncode", "AceStepRepaintMask", "AceStepTextEncode", "AceStepDitSampler",
               "AceStepVaeDecode", "AceStepSaveAudio"}
    others = sorted(set(our_nodes(comfy.object_info())) - in_song)
    extra = {kind: {"type": kind, "pos": [380 * (index % 5), 800 + 420 * (index // 5)]}
             for index, kind in enumerate(others)}
    song_graph(ui, extra)
    ui.evaluate("""() => { const text = app.graph.nodes.find((n) => n.type === 'AceStepTextEncode');
        text.widgets.find((w) => w.name === 'lyrics').value = '[Verse]\\nla  la\\n[Chorus]'; return true; }""")
    workflow = ui.evaluate("() => app.graph.serialize()")
    assert {node["type"] for node in workflow["nodes"]} >= set(our_nodes(comfy.object_info()))
    ui.build({})
    check_workflow_loads(ui, workflow, "03_workflow_saved_graph")
    lint = ui.wait_for("() => document.querySelector('.acestep-lyrics-lint')?.dataset.issues")
    assert "extra-spaces" in lint and "empty-section" in lint


def test_core_nodes_keep_working(ui: ComfyPage, comfy: ComfyClient) -> None:
    """Core LoadAudio keeps its player and upload button, a core text box is not dressed as a lyrics editor,
    and a core LoadAudio → SaveAudio run still shows its result in the player."""
    ids = ui.build({
        "load": {"type": "LoadAudio", "pos": [60, 120], "widgets": {"audio": "acestep_web_source.wav"}},
        "save": {"type": "SaveAudio", "pos": [460, 120], "widgets": {"filename_prefix": "web/core_save"}},
        "text": {"type": "CLIPTextEncode", "pos": [60, 420]},
    }, links=[["load", 0, "save", "audio"]])
    state = ui.evaluate("""([load, text]) => ({
        load: app.graph.getNodeById(load).widgets.map((w) => w.name),
        lyricsEditors: document.querySelectorAll('.acestep-lyrics').length,
        textarea: !!app.graph.getNodeById(text).widgets.find((w) => w.name === 'text')?.element?.matches('textarea'),
    })""", [ids["load"], ids["text"]])
    assert state["load"][:3] == ["audio", "audioUI", "upload"]
    assert state["lyricsEditors"] == 0 and state["textarea"]
    ui.browser.click('button[aria-label="Run"]')
    src = ui.wait_for("""(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'audioUI')
        .element.src.includes('/view?') && app.graph.getNodeById(id).widgets.find((w) => w.name === 'audioUI').element.src""",
                      ids["save"], timeout_s=60)
    assert "core_save" in src
    ui.shot("04_core_nodes")
