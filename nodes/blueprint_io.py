"""Save ACE-Step Blueprint / Load ACE-Step Blueprint: plans as JSON files, kept, edited and used again.

The file format is `acestep_core.planner.blueprint`'s (plain JSON, checked on load). Saving writes into
ComfyUI's output folder under a numbered name and never overwrites a file; loading lists the `.json`
files of ComfyUI's input folder (files sent to `/upload/image` land there too; the 0.3.75 frontend has no
upload button for other files) and refuses anything that is not a blueprint with a message that says
what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import folder_paths
from comfy_api.latest import io, ui

from acestep_core.errors import AceStepError
from acestep_core.planner import Blueprint, load_blueprint, save_blueprint

from .common import CATEGORY, user_errors
from .planner import BLUEPRINT_TYPE, summary

SAVE_NAME = "Save ACE-Step Blueprint"
LOAD_NAME = "Load ACE-Step Blueprint"
DEFAULT_PREFIX = "acestep/blueprint"


def save_numbered(blueprint: Blueprint, prefix: str) -> Path:
    """Write `<output>/<prefix>_00001_.json` (the next free number, as ComfyUI numbers its files)."""
    output = folder_paths.get_output_directory()
    try:
        folder, name, counter, _, _ = folder_paths.get_save_image_path(prefix, output)
    except Exception as error:  # ComfyUI refuses prefixes that leave the output folder
        raise AceStepError(f"filename_prefix '{prefix}': {error}; give a name inside the output folder.") from None
    while True:
        target = Path(folder) / f"{name}_{counter:05}_.json"
        if not target.exists():
            return save_blueprint(blueprint, target)
        counter += 1


def blueprint_files() -> list[str]:
    """The `.json` files of ComfyUI's input folder (subfolders included), as the load menu lists them."""
    root = Path(folder_paths.get_input_directory())
    if not root.is_dir():
        return []
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.json") if path.is_file())


def input_path(name: str) -> Path:
    """The input-folder file a menu entry names, refusing names that leave the folder."""
    root = Path(folder_paths.get_input_directory()).resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise AceStepError(f"blueprint_file '{name}' is outside ComfyUI's input folder; pick a file from the menu.")
    if not path.is_file():
        raise AceStepError(f"blueprint_file '{name}' is not in ComfyUI's input folder ({root}); put the .json file "
                           "there (or upload it) and refresh the menu (R).")
    return path


class AceStepSaveBlueprint(io.ComfyNode):
    """Save a blueprint as JSON into the output folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepSaveBlueprint", display_name=SAVE_NAME, category=CATEGORY,
            description=("Saves the LM Planner's plans (metadata, caption, lyrics, audio codes, seeds) as a JSON "
                         "file in ComfyUI's output folder, numbered so that nothing is overwritten. Copy it into "
                         "the input folder to load it again."),
            inputs=[
                BLUEPRINT_TYPE.Input("blueprint", tooltip="The plans to keep (ACE-Step LM Planner)."),
                io.String.Input("filename_prefix", default=DEFAULT_PREFIX,
                                tooltip="Name in the output folder; a number and .json are added."),
            ],
            outputs=[BLUEPRINT_TYPE.Output(display_name="blueprint", tooltip="The same blueprint, passed on.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, blueprint: Blueprint, filename_prefix: str) -> io.NodeOutput:
        with user_errors(SAVE_NAME):
            path = save_numbered(blueprint, filename_prefix.strip() or DEFAULT_PREFIX)
        relative = os.path.relpath(path, folder_paths.get_output_directory())
        return io.NodeOutput(blueprint, ui=ui.PreviewText(f"saved {relative}\n{summary(blueprint)}"))


class AceStepLoadBlueprint(io.ComfyNode):
    """Load a blueprint JSON file from the input folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoadBlueprint", display_name=LOAD_NAME, category=CATEGORY,
            description=("Loads plans saved by Save ACE-Step Blueprint (a .json file in ComfyUI's input folder), "
                         "for ACE-Step Text Encode. Edit the file to change captions, lyrics or metadata."),
            inputs=[
                io.Combo.Input("blueprint_file", options=blueprint_files(),
                               tooltip="A blueprint .json file in ComfyUI's input folder (refresh the menu with R)."),
            ],
            outputs=[
                BLUEPRINT_TYPE.Output(display_name="blueprint", tooltip="The plans, for ACE-Step Text Encode."),
                io.String.Output(display_name="caption", tooltip="The first plan's caption."),
                io.String.Output(display_name="lyrics", tooltip="The first plan's lyrics."),
            ],
        )

    @classmethod
    def validate_inputs(cls, blueprint_file: str) -> bool | str:
        try:
            input_path(blueprint_file)
        except AceStepError as error:
            return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, blueprint_file: str) -> Any:
        """Load again when the file changed (an edited plan), not only when another file is picked."""
        try:
            stat = input_path(blueprint_file).stat()
        except AceStepError:
            return blueprint_file
        return (blueprint_file, stat.st_mtime_ns, stat.st_size)

    @classmethod
    def execute(cls, blueprint_file: str) -> io.NodeOutput:
        with user_errors(LOAD_NAME):
            blueprint = load_blueprint(input_path(blueprint_file))
        first = blueprint.items[0]
        return io.NodeOutput(blueprint, first.caption, first.lyrics, ui=ui.PreviewText(summary(blueprint)))


BLUEPRINT_NODES: list[type[io.ComfyNode]] = [AceStepSaveBlueprint, AceStepLoadBlueprint]
