"""What every node of the pack must show in `/object_info` and its help page, checked in one place."""

from __future__ import annotations

from typing import Any

import comfyui_test_env

from .client import ComfyClient


def check_node_definitions(comfy: ComfyClient, nodes: dict[str, list[str]], category: str) -> dict[str, Any]:
    """Each node is registered in `category` with a description, exactly the `nodes[node]` inputs in that
    order, a tooltip on every input and output, and a help page titled with its display name that names
    every input. Returns the server's `/object_info` for further checks."""
    info = comfy.object_info()
    for node, inputs in nodes.items():
        assert node in info, f"{node} is not registered"
        definition = info[node]
        assert definition["category"] == category and definition["description"], node
        declared = {**definition["input"]["required"], **definition["input"].get("optional", {})}
        assert list(declared) == inputs, node
        for name, spec in declared.items():
            options = spec[1] if len(spec) > 1 else {}
            assert options.get("tooltip"), f"{node}.{name} has no tooltip"
        assert all(definition["output_tooltips"]), f"{node} has an output without a tooltip"
        page = comfy.get(f"/extensions/{comfyui_test_env.PACK_FOLDER_NAME}/docs/{node}.md").decode()
        assert page.startswith(f"# {definition['display_name']}"), node
        for name in inputs:
            assert f"`{name}`" in page, f"{node}.{name} is missing from its help page"
    return info
