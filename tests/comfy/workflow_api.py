"""Turn a UI-format workflow (what the frontend saves, what `workflows/*.json` hold) into an API prompt.

ComfyUI's backend has no converter; the frontend's `graphToPrompt()` does it. This follows the rules
that reproduced the frontend's output on graphs with seeds, Reroute, bypass and mute
(shared/spec/comfyui.md §5.3). Not handled: subgraphs (refused), PrimitiveNode-driven values,
custom widgets that serialize values.
"""

from __future__ import annotations

from typing import Any

FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
MUTED, BYPASSED = 2, 4
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
SEED_NAMES = {"seed", "noise_seed"}


class WorkflowError(ValueError):
    """The workflow cannot be converted (subgraphs, node types the server does not know, ...)."""


def _links(workflow: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """link id -> (origin node id, origin slot); links are lists or objects depending on the schema."""
    result = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            result[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            result[link[0]] = (link[1], link[2])
    return result


def input_specs(info: dict[str, Any]) -> dict[str, list[Any]]:
    """Input name -> `[type, options]` in the order the frontend walks widgets."""
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info.get("input_order")
    names = [*order.get("required", []), *order.get("optional", [])] if order else list(specs)
    return {name: specs[name] for name in names if name in specs}


def widget_options(spec: list[Any]) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: list[Any]) -> bool:
    options = widget_options(spec)
    if options.get("forceInput") or options.get("rawLink"):
        return False
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES or "widgetType" in options


def has_control_value(name: str, spec: list[Any]) -> bool:
    options = widget_options(spec)
    if "control_after_generate" in options:
        return bool(options["control_after_generate"])
    return spec[0] == "INT" and name in SEED_NAMES


def _widget_values(node: dict[str, Any], specs: dict[str, list[Any]]) -> dict[str, Any]:
    values = node.get("widgets_values") or []
    if isinstance(values, dict):
        return {name: value for name, value in values.items() if name in specs}
    result, position = {}, 0
    for name, spec in specs.items():
        if not is_widget(spec) or position >= len(values):
            continue
        result[name] = values[position]
        position += 1
        if has_control_value(name, spec) and position < len(values) and values[position] in CONTROL_VALUES:
            position += 1
    return result


class _Graph:
    def __init__(self, workflow: dict[str, Any]):
        self.nodes = {node["id"]: node for node in workflow.get("nodes", [])}
        self.links = _links(workflow)

    def resolve(self, link_id: int | None) -> tuple[int, int] | None:
        """The node and slot that really feed a link: through Reroutes and bypassed nodes; None if muted."""
        seen = set()
        while link_id is not None and link_id in self.links and link_id not in seen:
            seen.add(link_id)
            origin_id, slot = self.links[link_id]
            origin = self.nodes.get(origin_id)
            if origin is None or origin.get("mode") == MUTED:
                return None
            if origin["type"] == "Reroute":
                link_id = (origin.get("inputs") or [{}])[0].get("link")
            elif origin.get("mode") == BYPASSED:
                link_id = self._bypass_source(origin, slot)
            else:
                return origin_id, slot
        return None

    @staticmethod
    def _bypass_source(node: dict[str, Any], slot: int) -> int | None:
        outputs = node.get("outputs") or []
        wanted = outputs[slot].get("type") if slot < len(outputs) else None
        for entry in node.get("inputs") or []:
            if entry.get("link") is not None and entry.get("type") == wanted:
                return entry["link"]
        return None


def workflow_to_prompt(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The API prompt the frontend would queue for `workflow`, given the server's `/object_info`."""
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported; unpack the subgraphs first")
    graph = _Graph(workflow)
    active = [node for node in graph.nodes.values()
              if node["type"] not in FRONTEND_ONLY_TYPES and node.get("mode", 0) not in (MUTED, BYPASSED)]
    missing = sorted({node["type"] for node in active if node["type"] not in object_info})
    if missing:
        raise WorkflowError(f"node types not installed on the server: {', '.join(missing)}")
    prompt = {}
    for node in active:
        info = object_info[node["type"]]
        specs = input_specs(info)
        inputs = _widget_values(node, specs)
        for entry in node.get("inputs") or []:
            name = entry.get("name")
            if name not in specs or entry.get("link") is None:
                continue
            inputs.pop(name, None)
            source = graph.resolve(entry["link"])
            if source is not None:
                inputs[name] = [str(source[0]), source[1]]
        title = node.get("title") or info.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return prompt
