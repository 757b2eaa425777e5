"""The ComfyUI frontend in the test browser: open it, build graphs, find things on screen, watch the console.

Graphs are built the way a user's clicks end up (`LiteGraph.createNode`, `graph.add`, `node.connect`), while
the gestures under test (dragging, typing, clicking Run or a widget arrow) go through real mouse and
keyboard events at the positions the page reports.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from .browser import Browser

OUR_EXTENSIONS = ("acestep.audioPlayer", "acestep.lyricsEditor", "acestep.regionPicker")
OUR_URL_PART = "/extensions/comfyui-acestep/"

# What the offline frontend itself logs on every load (shared/spec/comfyui.md §5.4) and nothing of ours causes.
FRONTEND_NOISE = (
    re.compile(r"Failed to load resource: the server responded with a status of 404"),
    re.compile(r"Cannot read properties of undefined \(reading 'id'\)\s+at onChange"),
    re.compile(r"Cannot set properties of null \(setting 'value'\)\s+at Proxy\.onChange .*primevue/autocomplete",
               re.S),
    re.compile(r"api\.comfy\.org"),
)
ALLOWED_404 = re.compile(r"/user\.css$|/api/userdata[/?]|comfy\.templates\.json")

BUILD_GRAPH = """async (spec) => {
  app.graph.clear();
  // The canvas spans the whole window: keep the graph clear of the menus at its top and left.
  app.canvas.ds.scale = spec.scale ?? 1;
  app.canvas.ds.offset = [90 / app.canvas.ds.scale, 150 / app.canvas.ds.scale];
  const nodes = {};
  for (const [key, n] of Object.entries(spec.nodes)) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error(`cannot create ${n.type}`);
    node.pos = n.pos;
    app.graph.add(node);
    for (const [name, value] of Object.entries(n.widgets ?? {})) {
      const widget = node.widgets.find((w) => w.name === name);
      if (!widget) throw new Error(`${n.type} has no widget ${name}`);
      widget.value = value;
      widget.callback?.(widget.value);
    }
    if (n.size) node.setSize(n.size);
    nodes[key] = node;
  }
  for (const [from, slot, to, input] of spec.links ?? []) {
    const target = nodes[to];
    const index = target.inputs.findIndex((i) => i.name === input);
    if (index < 0) throw new Error(`${target.type} has no input ${input}`);
    nodes[from].connect(slot, target, index);
  }
  app.graph.setDirtyCanvas(true, true);
  return Object.fromEntries(Object.entries(nodes).map(([key, node]) => [key, node.id]));
}"""

WIDGET_POINT = """([id, name, side]) => {
  const node = app.graph.getNodeById(id);
  const widget = node.widgets.find((w) => w.name === name);
  const height = widget.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT;
  const x = node.pos[0] + (side === "right" ? node.size[0] - 24 : side === "left" ? 24 : node.size[0] / 2);
  const y = node.pos[1] + widget.y + height / 2;
  const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([x, y]);
  const rect = app.canvas.canvas.getBoundingClientRect();
  return [rect.left + cx, rect.top + cy];
}"""


class ComfyPage:
    """One browser page on the test server, plus the folder where screenshots go."""

    def __init__(self, browser: Browser, url: str, artifacts: Path):
        self.browser = browser
        self.url = url
        self.artifacts = artifacts
        self.problems: list[str] = []

    def open(self, timeout_s: float = 120.0) -> None:
        """Load the frontend (Templates dialog off) and wait until it and our extensions are ready."""
        request = urllib.request.Request(f"{self.url}/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
        urllib.request.urlopen(request, timeout=30).close()
        self.browser.goto(self.url)
        self.browser.wait_for(
            "(names) => window.app?.graph && window.app.canvas && names.every("
            "(n) => app.extensions.some((e) => e.name === n))", list(OUR_EXTENSIONS), timeout_s=timeout_s)

    def evaluate(self, fn: str, arg: Any = None, timeout_s: float = 60.0) -> Any:
        return self.browser.evaluate(fn, arg, timeout_s)

    def wait_for(self, fn: str, arg: Any = None, timeout_s: float = 30.0) -> Any:
        return self.browser.wait_for(fn, arg, timeout_s)

    def build(self, nodes: dict[str, dict[str, Any]], links: list[list[Any]] = (), scale: float = 1.0) -> dict[str, int]:
        """A new graph: `nodes` {key: {type, pos, widgets?, size?}}, `links` [[from, out slot, to, input name]];
        returns {key: node id}."""
        return self.evaluate(BUILD_GRAPH, {"nodes": nodes, "links": list(links), "scale": scale})

    def widget(self, node_id: int, name: str) -> Any:
        return self.evaluate("([id, name]) => app.graph.getNodeById(id).widgets.find((w) => w.name === name).value",
                             [node_id, name])

    def widget_point(self, node_id: int, name: str, side: str = "middle") -> tuple[float, float]:
        """Page coordinates of a canvas widget: its left or right arrow, or its middle."""
        x, y = self.evaluate(WIDGET_POINT, [node_id, name, side])
        return x, y

    def shot(self, name: str) -> Path:
        self.evaluate("() => { app.graph.setDirtyCanvas(true, true); return true; }")
        return self.browser.screenshot(self.artifacts / f"{name}.png")

    def missing_nodes_dialog(self) -> str:
        """The text of the frontend's "missing nodes" dialog, or "" when none is open."""
        return self.evaluate("""() => [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText)
            .filter((text) => /missing nodes/i.test(text)).join('\\n')""")

    def close_dialogs(self) -> None:
        self.evaluate("""() => { document.querySelectorAll('.p-dialog [aria-label="Close"], .p-dialog-close-button')
            .forEach((b) => b.click()); return true; }""")

    def console_problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed requests since the last call that are not the
        frontend's known offline noise; anything that names our extension is always a problem."""
        problems = []
        for entry in self.browser.console():
            kind, text = entry["kind"], entry["text"]
            ours = OUR_URL_PART in text or OUR_URL_PART in entry.get("url", "")
            if kind == "pageerror" or (kind == "error" and (ours or not any(p.search(text) for p in FRONTEND_NOISE))):
                problems.append(f"{kind}: {text}")
            elif kind == "http" and (ours or not ALLOWED_404.search(text)):
                problems.append(f"{kind}: {text}")
            elif kind == "requestfailed" and ours:
                problems.append(f"{kind}: {text}")
        self.problems += problems
        return problems


def load_workflow(page: ComfyPage, workflow: dict[str, Any]) -> None:
    page.evaluate("async (wf) => { await app.loadGraphData(wf); return true; }", workflow, timeout_s=60)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
