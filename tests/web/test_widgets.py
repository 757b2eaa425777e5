"""The extension's widgets under real mouse and keyboard input: players, region picker, lyrics editor, a run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import soundfile

from tests.comfy.client import ComfyClient, execution_error

from .comfy_page import ComfyPage
from .conftest import SOURCE_FILE, SOURCE_RATE, SOURCE_SECONDS, source_waveform
from .graphs import song_graph

GRID = 0.04

PLAY = """(id) => {
  const audio = app.graph.getNodeById(id).widgets.find((w) => w.name === 'audioUI').element;
  const rect = audio.getBoundingClientRect();
  return [rect.left + Math.min(22, rect.width / 2), rect.top + rect.height / 2];
}"""
PLAYING = """(id) => {
  const audio = app.graph.getNodeById(id).widgets.find((w) => w.name === 'audioUI').element;
  return !audio.paused && audio.currentTime > 0.25 && [audio.src, audio.duration, audio.currentTime];
}"""
REGION = "(id) => { const p = app.graph.getNodeById(id).acestepRegion; return {...p.drawn, duration: p.audio?.duration ?? null}; }"
REGION_X = """([id, seconds]) => {
  const picker = app.graph.getNodeById(id).acestepRegion;
  const rect = picker.canvas.getBoundingClientRect();
  return [picker.clientX(seconds), rect.top + rect.height / 2];
}"""


def on_grid(value: float) -> bool:
    return abs(value / GRID - round(value / GRID)) < 1e-6


def drag(ui: ComfyPage, mask: int, from_s: float, to_s: float) -> None:
    x0, y = ui.evaluate(REGION_X, [mask, from_s])
    x1, _ = ui.evaluate(REGION_X, [mask, to_s])
    ui.browser.mouse([["move", x0, y], ["down"], ["move", (x0 + x1) / 2, y, 5], ["move", x1, y, 5], ["up"]])


def new_prompt_id(comfy: ComfyClient, before: set[str], timeout_s: float = 20.0) -> str:
    """The id of the prompt that appeared in the queue or the history after `before` was taken."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queue = comfy.get_json("/queue")
        seen = {item[1] for item in queue.get("queue_running", []) + queue.get("queue_pending", [])}
        fresh = (seen | set(comfy.get_json("/history"))) - before
        if fresh:
            return fresh.pop()
        time.sleep(0.2)
    raise AssertionError("clicking Run queued no prompt")


def test_player_plays_a_saved_file(ui: ComfyPage) -> None:
    ids = ui.build({
        "load": {"type": "AceStepLoadAudio", "pos": [0, 60], "widgets": {"audio": SOURCE_FILE}},
        "save": {"type": "AceStepSaveAudio", "pos": [380, 60], "widgets": {"filename_prefix": "web/player"}},
        "preview": {"type": "AceStepPreviewAudio", "pos": [380, 380]},
    }, [["load", 0, "save", "audio"], ["load", 0, "preview", "audio"]])
    loaded = ui.wait_for("""(id) => { const a = app.graph.getNodeById(id).widgets.find((w) => w.name === 'audioUI').element;
        return a.src.includes('/view?') && a.src; }""", ids["load"])
    assert SOURCE_FILE in loaded
    ui.browser.click('button[aria-label="Run"]')
    for key in ("save", "preview"):
        ui.wait_for("""(id) => { const a = app.graph.getNodeById(id).widgets.find((w) => w.name === 'audioUI').element;
            return a.src.includes('/view?') && a.readyState >= 1; }""", ids[key], timeout_s=60)
    x, y = ui.evaluate(PLAY, ids["save"])
    ui.browser.mouse([["click", x, y]])
    src, duration, _ = ui.wait_for(PLAYING, ids["save"], timeout_s=15)
    assert "player" in src and "type=output" in src
    assert abs(duration - SOURCE_SECONDS) < 0.05
    ui.shot("05_player_playing")


def test_region_drag_sets_widgets_and_widgets_move_region(ui: ComfyPage) -> None:
    ids = song_graph(ui)
    mask = ids["mask"]
    assert abs(ui.evaluate(REGION, mask)["duration"] - SOURCE_SECONDS) < 0.05
    ui.shot("06_region_source_loaded")
    drag(ui, mask, 1.0, 3.0)
    start, end = ui.widget(mask, "repaint_start"), ui.widget(mask, "repaint_end")
    assert abs(start - 1.0) <= GRID and abs(end - 3.0) <= GRID, (start, end)
    assert on_grid(start) and on_grid(end), (start, end)
    assert ui.evaluate(REGION, mask)["start"] == start and ui.evaluate(REGION, mask)["end"] == end
    ui.shot("07_region_dragged")

    x, y = ui.widget_point(mask, "repaint_start", "right")
    ui.browser.mouse([["click", x, y]])
    stepped = ui.widget(mask, "repaint_start")
    assert stepped > start and on_grid(stepped), (start, stepped)
    ui.wait_for("([id, s]) => app.graph.getNodeById(id).acestepRegion.drawn.start === s", [mask, stepped])

    drag(ui, mask, end, 4.5)
    assert ui.widget(mask, "repaint_start") == stepped
    moved_end = ui.widget(mask, "repaint_end")
    assert abs(moved_end - 4.5) <= GRID and on_grid(moved_end)

    ui.evaluate("([id, v]) => { const w = app.graph.getNodeById(id).widgets.find((w) => w.name === 'repaint_end');"
                " w.value = v; w.callback?.(v); return true; }", [mask, 6.8])
    region = ui.wait_for("([id, e]) => { const d = app.graph.getNodeById(id).acestepRegion.drawn; return d.end === e && d; }",
                         [mask, 6.8])
    assert region["view"][1] >= 6.8, "the view must widen to show an extension past the end"
    ui.shot("08_region_follows_widgets")


def test_region_picker_shows_an_opened_file_and_extends_before_it(ui: ComfyPage, tmp_path: Path) -> None:
    ids = ui.build({"mask": {"type": "AceStepRepaintMask", "pos": [0, 40], "size": [700, 360]}})
    mask = ids["mask"]
    take = tmp_path / "local_take.wav"
    soundfile.write(take, source_waveform()[: 3 * SOURCE_RATE], SOURCE_RATE)
    ui.wait_for("(id) => app.graph.getNodeById(id).acestepRegion.ticked", mask)
    ui.browser.set_files(".acestep-region input[type=file]", [take])
    duration = ui.wait_for("(id) => app.graph.getNodeById(id).acestepRegion.audio?.duration", mask)
    assert abs(duration - 3.0) < 0.05
    drag(ui, mask, -0.5, 1.0)
    start, end = ui.widget(mask, "repaint_start"), ui.widget(mask, "repaint_end")
    assert start < 0 and abs(start + 0.5) <= GRID and on_grid(start), start
    assert abs(end - 1.0) <= GRID and on_grid(end), end
    label = ui.evaluate("(id) => app.graph.getNodeById(id).acestepRegion.label.textContent", mask)
    assert "local_take.wav (local)" in label
    ui.shot("08b_region_local_file_extend")


def test_run_uses_the_dragged_region(ui: ComfyPage, comfy: ComfyClient) -> None:
    ids = song_graph(ui)
    drag(ui, ids["mask"], 2.0, 4.0)
    start, end = ui.widget(ids["mask"], "repaint_start"), ui.widget(ids["mask"], "repaint_end")
    before = set(comfy.get_json("/history"))
    ui.browser.click('button[aria-label="Run"]')
    prompt_id = new_prompt_id(comfy, before)
    entry = comfy.wait(prompt_id, timeout_s=150)
    assert execution_error(entry) is None, execution_error(entry)
    prompt: dict[str, Any] = entry["prompt"][2]
    sent = prompt[str(ids["mask"])]["inputs"]
    assert (sent["repaint_start"], sent["repaint_end"]) == (start, end)
    assert abs(start - 2.0) <= GRID and abs(end - 4.0) <= GRID
    assert "region" not in sent
    assert prompt[str(ids["text"])]["inputs"]["task"] == "repaint"
    ui.wait_for("""(id) => { const a = app.graph.getNodeById(id).widgets.find((w) => w.name === 'audioUI').element;
        return a.src.includes('repaint') && a.readyState >= 1; }""", ids["save"], timeout_s=30)
    x, y = ui.evaluate(PLAY, ids["save"])
    ui.browser.mouse([["click", x, y]])
    _, duration, _ = ui.wait_for(PLAYING, ids["save"], timeout_s=15)
    assert abs(duration - SOURCE_SECONDS) < 0.1
    ui.shot("09_run_with_dragged_region")


def test_lyrics_editor_completes_tags_and_flags_bad_lyrics(ui: ComfyPage) -> None:
    ids = ui.build({"text": {"type": "AceStepTextEncode", "pos": [0, 40], "size": [620, 760],
                             "widgets": {"bpm": 120, "timesignature": "4"}}})
    ui.browser.click(".acestep-lyrics textarea")
    ui.browser.type("[Cho")
    menu = ui.wait_for("() => { const m = document.querySelector('.acestep-lyrics-menu');"
                       " return m.style.display !== 'none' && [...m.children].map((li) => li.textContent); }")
    assert menu[0] == "Chorus"
    ui.browser.press("Tab")
    ui.browser.type("\nWe rise together\nInto the light\n")
    good = ui.wait_for("() => { const p = document.querySelector('.acestep-lyrics-lint');"
                       " return p.dataset.seconds !== '0' && {issues: p.dataset.issues, seconds: +p.dataset.seconds}; }")
    assert good["issues"] == "" and good["seconds"] == 8.0
    assert ui.widget(ids["text"], "lyrics") == "[Chorus]\nWe rise together\nInto the light\n"
    ui.browser.type("[Verse][Bridge]\nWalking  through the empty streets\n"
                    "and I keep on walking down the endless empty road tonight without you by my side\n[Pre-Chorus]\n")
    issues = ui.wait_for("() => { const p = document.querySelector('.acestep-lyrics-lint');"
                         " return p.dataset.issues.split(' ').length >= 4 && p.dataset.issues; }").split()
    assert {"tag-spam", "extra-spaces", "long-line", "empty-section"} <= set(issues), issues
    marks = ui.evaluate("() => [...document.querySelectorAll('.acestep-lyrics-backdrop span')].map((s) => s.className)")
    assert "tag" in marks and "bad" in marks
    slow = ui.evaluate("""(id) => { const w = app.graph.getNodeById(id).widgets.find((w) => w.name === 'bpm');
        const before = +document.querySelector('.acestep-lyrics-lint').dataset.seconds;
        w.value = 60; w.callback?.(60); return [before, +document.querySelector('.acestep-lyrics-lint').dataset.seconds]; }""",
                       ids["text"])
    assert slow[1] == 2 * slow[0]
    ui.shot("10_lyrics_linter")
    sent = ui.evaluate("async (id) => (await app.graphToPrompt()).output[String(id)].inputs.lyrics", ids["text"])
    assert "Walking  through" in sent and sent.startswith("[Chorus]\n")
