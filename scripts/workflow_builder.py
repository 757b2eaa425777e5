"""Build the shipped UI workflows (`workflows/<name>.json`) from API-format sources (`scripts/workflow_sources/`).

Why: a UI workflow (what the frontend saves and the template browser opens) repeats every widget value,
socket, link id and position; writing one by hand is error-prone. Its meaning is the API prompt, which is
short and reviewable. So each workflow is kept as an API prompt and this script lays it out as the
frontend would save it, using the server's `/object_info` for widget order, socket types and output names.
`tests/comfy/workflow_api.workflow_to_prompt` turns the result back into exactly the source prompt (minus
notes), and `tests/comfy/test_workflows.py` checks that for every workflow. Both sides take the frontend's
widget rules (which inputs are widgets, their order, the seed's extra control value) from `workflow_api`.

Source format (`scripts/workflow_sources/<name>.json`): an API prompt
`{"<id>": {"class_type": ..., "inputs": {name: value or ["<source id>", slot]}, "_meta": {"title": ...}}}`.
Ids are whole numbers (the UI node ids). `_meta.title` is optional; a title other than the node's display
name is kept as the node's title. Frontend-only notes are written as
`{"class_type": "MarkdownNote" (or "Note"), "inputs": {"text": "..."}}`: they are placed above the graph and
are not part of the prompt. Widget inputs that are left out get their default; seeds get the frontend's
extra `control_after_generate` value `"fixed"`, so the shipped seed is the one that runs.

Layout: nodes go into columns by graph depth (longest path from a node without inputs), left to right,
stacked in id order inside a column; notes sit in a row above.

Command line (starts the test ComfyUI of `scripts/comfyui_test_env.py` with the tiny models, fetches
`/object_info`, writes `workflows/<name>.json`):

    python scripts/workflow_builder.py                 # every source
    python scripts/workflow_builder.py cover repaint   # only these
    python scripts/workflow_builder.py --object-info info.json   # no server: use a saved /object_info

Library use: `build_workflow(source, object_info) -> dict` and `expected_prompt(source, object_info) -> dict`
(the prompt `workflow_to_prompt` must give back).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.comfy.workflow_api import has_control_value, input_specs, is_widget, widget_options  # noqa: E402
SOURCES_DIR = REPO_ROOT / "scripts" / "workflow_sources"
WORKFLOWS_DIR = REPO_ROOT / "workflows"

NOTE_TYPES = {"Note", "MarkdownNote"}
CONTROL_DEFAULT = "fixed"
# Widgets the frontend adds after a combo with `audio_upload` (player, upload button): sockets and saved values.
AUDIO_UPLOAD_EXTRAS = [("audioUI", "AUDIO_UI", None), ("upload", "AUDIOUPLOAD", None)]

COLUMN_GAP = 60
ROW_GAP = 40
NODE_WIDTH = 340
WIDE_NODE_WIDTH = 440
NOTE_SIZE = (440, 260)
TITLE_HEIGHT = 30
SLOT_HEIGHT = 22
WIDGET_HEIGHT = 26
MULTILINE_HEIGHT = 140
LYRICS_HEIGHT = 260


class BuildError(ValueError):
    """The source cannot become a workflow (unknown node type, bad id, link to a missing node, ...)."""


def _type_name(spec: list[Any]) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _default(name: str, spec: list[Any]) -> Any:
    options = widget_options(spec)
    if "default" in options:
        return options["default"]
    choices = spec[0] if isinstance(spec[0], list) else options.get("options")
    if choices:
        return choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _node_id(key: str) -> int:
    if not key.isdigit() or int(key) < 1:
        raise BuildError(f"node id '{key}' must be a whole number from 1 on (it becomes the UI node id)")
    return int(key)


def _title(node: dict[str, Any]) -> str | None:
    return (node.get("_meta") or {}).get("title")


def _depths(graph: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Longest path from a node without linked inputs, for the column of each node."""
    depths: dict[str, int] = {}

    def depth(key: str, trail: tuple[str, ...]) -> int:
        if key in trail:
            raise BuildError(f"the graph has a cycle through node {key}")
        if key not in depths:
            parents = [value[0] for value in graph[key]["inputs"].values() if _is_link(value)]
            depths[key] = 1 + max((depth(p, (*trail, key)) for p in parents), default=-1)
        return depths[key]

    for key in graph:
        depth(key, ())
    return depths


def _node_size(specs: dict[str, list[Any]], linked: set[str], outputs: int) -> list[int]:
    sockets = [name for name, spec in specs.items() if not is_widget(spec) or name in linked]
    widgets = [(name, spec) for name, spec in specs.items() if is_widget(spec) and name not in linked]
    height = TITLE_HEIGHT + SLOT_HEIGHT * max(len(sockets), outputs, 1)
    wide = False
    for name, spec in widgets:
        if spec[0] == "STRING" and widget_options(spec).get("multiline"):
            height += LYRICS_HEIGHT if name == "lyrics" else MULTILINE_HEIGHT
            wide = True
        else:
            height += WIDGET_HEIGHT + (WIDGET_HEIGHT if has_control_value(name, spec) else 0)
    return [WIDE_NODE_WIDTH if wide else NODE_WIDTH, height + 10]


def _check_source(source: dict[str, Any], object_info: dict[str, Any]) -> None:
    for key, node in source.items():
        _node_id(key)
        kind = node.get("class_type")
        if kind in NOTE_TYPES:
            continue
        if kind not in object_info:
            raise BuildError(f"node {key}: type '{kind}' is not installed on the server")
        specs = input_specs(object_info[kind])
        for name, value in node.get("inputs", {}).items():
            if name not in specs:
                raise BuildError(f"node {key} ({kind}) has no input '{name}'")
            if not _is_link(value):
                continue
            origin = source.get(value[0], {}).get("class_type")
            if origin not in object_info:
                raise BuildError(f"node {key} input '{name}' links to node {value[0]}, which is not in the graph")
            if not 0 <= value[1] < len(object_info[origin]["output"]):
                raise BuildError(f"node {key} input '{name}' links to output {value[1]} of node {value[0]} ({origin}), "
                                 "which it does not have")


def _sockets(graph: dict[str, dict[str, Any]], object_info: dict[str, Any]
             ) -> tuple[dict[str, list[dict[str, Any]]], list[list[Any]], dict[tuple[str, int], list[int]]]:
    """Each node's `inputs` entries (sockets and widgets, frontend order), the links
    `[id, origin, slot, target, target slot, type]`, and the link ids leaving each (node, output slot)."""
    inputs_of: dict[str, list[dict[str, Any]]] = {}
    links: list[list[Any]] = []
    outgoing: dict[tuple[str, int], list[int]] = {}
    for key in sorted(graph, key=_node_id):
        entries = []
        for name, spec in input_specs(object_info[graph[key]["class_type"]]).items():
            entry: dict[str, Any] = {"name": name, "localized_name": name, "type": _type_name(spec)}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            entry["link"] = None
            value = graph[key]["inputs"].get(name)
            if _is_link(value):
                entry["link"] = len(links) + 1
                origin_type = object_info[graph[value[0]]["class_type"]]["output"][value[1]]
                links.append([entry["link"], _node_id(value[0]), value[1], _node_id(key), len(entries), origin_type])
                outgoing.setdefault((value[0], value[1]), []).append(entry["link"])
            entries.append(entry)
            if widget_options(spec).get("audio_upload"):
                entries += [{"name": extra, "localized_name": extra, "type": kind, "widget": {"name": extra},
                             "link": None} for extra, kind, _ in AUDIO_UPLOAD_EXTRAS]
        inputs_of[key] = entries
    return inputs_of, links, outgoing


def _widgets_values(node: dict[str, Any], specs: dict[str, list[Any]]) -> list[Any]:
    """Widget values in the frontend's order, with the seed control and upload extras it saves."""
    values: list[Any] = []
    for name, spec in specs.items():
        if not is_widget(spec):
            continue
        value = node["inputs"].get(name)
        values.append(_default(name, spec) if value is None or _is_link(value) else value)
        if has_control_value(name, spec):
            values.append(CONTROL_DEFAULT)
        if widget_options(spec).get("audio_upload"):
            values += [saved for _, _, saved in AUDIO_UPLOAD_EXTRAS]
    return values


def _place_in_columns(nodes: list[dict[str, Any]], depths: dict[int, int], top: int) -> None:
    """Columns by depth, as wide as their widest node; nodes stacked in list order from `top` down."""
    widths: dict[int, int] = {}
    for entry in nodes:
        widths[depths[entry["id"]]] = max(widths.get(depths[entry["id"]], 0), entry["size"][0])
    column_x, x = {}, 0
    for depth in sorted(widths):
        column_x[depth] = x
        x += widths[depth] + COLUMN_GAP
    heights: dict[int, int] = {}
    for entry in nodes:
        depth = depths[entry["id"]]
        entry["pos"] = [column_x[depth], heights.get(depth, top)]
        heights[depth] = entry["pos"][1] + entry["size"][1] + ROW_GAP


def _note_entry(key: str, note: dict[str, Any], index: int, order: int) -> dict[str, Any]:
    entry = {"id": _node_id(key), "type": note["class_type"], "pos": [index * (NOTE_SIZE[0] + COLUMN_GAP), 0],
             "size": list(NOTE_SIZE), "flags": {}, "order": order, "mode": 0, "inputs": [], "outputs": [],
             "properties": {}, "widgets_values": [note.get("inputs", {}).get("text", "")]}
    if _title(note):
        entry["title"] = _title(note)
    return entry


def build_workflow(source: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The UI workflow (frontend save format, version 0.4) of an API-format `source` prompt."""
    _check_source(source, object_info)
    graph = {key: node for key, node in source.items() if node["class_type"] not in NOTE_TYPES}
    notes = {key: node for key, node in source.items() if node["class_type"] in NOTE_TYPES}
    depths = _depths(graph)
    inputs_of, links, outgoing = _sockets(graph, object_info)
    nodes: list[dict[str, Any]] = []
    for order, key in enumerate(sorted(graph, key=lambda key: (depths[key], _node_id(key)))):
        node, info = graph[key], object_info[graph[key]["class_type"]]
        specs = input_specs(info)
        output_names = info.get("output_name") or info["output"]
        outputs = [{"name": output_names[slot], "localized_name": output_names[slot], "type": kind,
                    "links": outgoing.get((key, slot), [])} for slot, kind in enumerate(info["output"])]
        linked = {name for name, value in node["inputs"].items() if _is_link(value)}
        entry = {"id": _node_id(key), "type": node["class_type"], "pos": [0, 0],
                 "size": _node_size(specs, linked, len(outputs)), "flags": {}, "order": order, "mode": 0,
                 "inputs": inputs_of[key], "outputs": outputs, "properties": {"Node name for S&R": node["class_type"]},
                 "widgets_values": _widgets_values(node, specs)}
        if _title(node) and _title(node) != info.get("display_name"):
            entry["title"] = _title(node)
        nodes.append(entry)
    _place_in_columns(nodes, {_node_id(key): depth for key, depth in depths.items()},
                      NOTE_SIZE[1] + ROW_GAP if notes else 0)
    nodes += [_note_entry(key, notes[key], index, len(graph) + index)
              for index, key in enumerate(sorted(notes, key=_node_id))]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-acestep/" + json.dumps(source, sort_keys=True))),
        "revision": 0,
        "last_node_id": max((_node_id(key) for key in source), default=0),
        "last_link_id": len(links),
        "nodes": sorted(nodes, key=lambda entry: entry["id"]),
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [120, 140]}},
        "version": 0.4,
    }


def expected_prompt(source: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """What `workflow_to_prompt(build_workflow(source))` gives: the source without notes, every node titled
    (its own title, else the display name), widget inputs the source left out at their defaults."""
    result = {}
    for key, node in source.items():
        if node["class_type"] in NOTE_TYPES:
            continue
        info = object_info[node["class_type"]]
        inputs = {name: _default(name, spec) for name, spec in input_specs(info).items()
                  if is_widget(spec) and name not in node["inputs"]}
        inputs.update(node["inputs"])
        title = _title(node) or info.get("display_name") or node["class_type"]
        result[key] = {"inputs": inputs, "class_type": node["class_type"], "_meta": {"title": title}}
    return result


def sources(names: list[str] | None = None) -> dict[str, Path]:
    """The source files to build: all of them, or the given names (with or without `.json`)."""
    available = {path.stem: path for path in sorted(SOURCES_DIR.glob("*.json"))}
    if not names:
        return available
    wanted = [name.removesuffix(".json") for name in names]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise BuildError(f"no source for {', '.join(unknown)} in {SOURCES_DIR}")
    return {name: available[name] for name in wanted}


def write_workflows(paths: dict[str, Path], object_info: dict[str, Any], out_dir: Path = WORKFLOWS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in paths.items():
        workflow = build_workflow(json.loads(path.read_text()), object_info)
        target = out_dir / f"{name}.json"
        target.write_text(json.dumps(workflow, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def server_object_info() -> dict[str, Any]:
    """`/object_info` of the test ComfyUI with the tiny models installed (so model menus hold the official names)."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import comfyui_test_env

    from tests.comfy.client import ComfyClient
    from tests.comfy.tiny_model_folders import install_model_folders

    env = comfyui_test_env.setup()
    base = comfyui_test_env.prepare_base(Path(tempfile.mkdtemp(prefix="acestep-workflow-builder.")))
    install_model_folders(base / "models", env.home / "tiny-models")
    with comfyui_test_env.start_server(env, base) as server:
        return ComfyClient(server.url).object_info()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="source names (default: every file in scripts/workflow_sources)")
    parser.add_argument("--object-info", type=Path, default=None,
                        help="a saved /object_info JSON instead of starting the test server")
    args = parser.parse_args(argv)
    try:
        paths = sources(args.names)
        info = json.loads(args.object_info.read_text()) if args.object_info else server_object_info()
        for target in write_workflows(paths, info):
            print(f"wrote {target.relative_to(REPO_ROOT)}")
    except BuildError as exc:
        print(f"workflow_builder: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
