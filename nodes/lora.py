"""LoRA nodes: Loader (chainable), Stack (several in one node), Inspect (what a file is, does it fit), Bake.

Loader and Stack return a new ACESTEP_DIT on a ModelPatcher clone with the stack as weight patches
(`lora_patches`): the loaded DiT is never changed in place, removing the node from the graph brings back the
base weights exactly, and chained nodes add their changes (W0 + Σ strengthᵢ·Δᵢ, as `acestep_core.lora`).
Adapters come from ComfyUI's `loras` folder: `.safetensors` files (ComfyUI, kohya, LyCORIS LoKr/LoHa, with or
without DoRA) and PEFT folders as the official trainer writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import folder_paths
from comfy_api.latest import io, ui

from acestep_core.checkpoint_identify import name_tokens
from acestep_core.errors import AceStepError
from acestep_core.lora import inspect_adapter
from acestep_core.lora_bake import baked_folder, write_baked_dit

from .common import CATEGORY, user_errors
from .lora_patches import NONE, describe_stack, load_lora, lora_choices, stack_adapters
from .model_handles import DIT_TYPE, DitHandle

LORA_CATEGORY = f"{CATEGORY}/LoRA"
STACK_SLOTS = 4
STRENGTH = dict(default=1.0, min=-10.0, max=10.0, step=0.01)
STRENGTH_TOOLTIP = ("How much of the adapter to add: 1 as trained, 0 off, negative values subtract it "
                    "(DoRA moves linearly between the base weights at 0 and its merged weights at 1).")
LORA_TOOLTIP = ("An adapter in ComfyUI's loras folder: a .safetensors LoRA/LoKr/LoHa/DoRA file or a PEFT folder "
                "(adapter_config.json + adapter_model.safetensors, as the ACE-Step trainer writes it).")
BAKE_DESTINATIONS = {"output": "output", "models/acestep": "acestep", "models/diffusion_models": "diffusion_models"}


def _dit_output() -> io.Custom.Output:
    return DIT_TYPE.Output(display_name="dit", tooltip="The DiT with the adapters as weight patches (base untouched).")


class AceStepLoraLoader(io.ComfyNode):
    """One adapter on the DiT; chain several loaders to stack them."""

    DISPLAY_NAME = "ACE-Step LoRA Loader"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoraLoader", display_name=cls.DISPLAY_NAME, category=LORA_CATEGORY,
            description=("Adds a LoRA (or LoKr/LoHa/DoRA) to the ACE-Step DiT as weight patches. Chain loaders to "
                         "stack adapters: their changes add up. The loaded DiT itself is never modified."),
            inputs=[
                DIT_TYPE.Input("dit", tooltip="The DiT from Load ACE-Step DiT or another LoRA node."),
                io.Combo.Input("lora_name", options=lora_choices(), tooltip=LORA_TOOLTIP),
                io.Float.Input("strength", **STRENGTH, tooltip=STRENGTH_TOOLTIP),
            ],
            outputs=[_dit_output()],
        )

    @classmethod
    def execute(cls, dit: DitHandle, lora_name: str, strength: float) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            adapter = load_lora("lora_name", lora_name)
            patched = stack_adapters(dit, [(f"lora_name '{lora_name}'", adapter, strength)])
        return io.NodeOutput(patched, ui=ui.PreviewText(f"LoRA stack: {describe_stack(patched.adapters)}"))


class AceStepLoraStack(io.ComfyNode):
    """Several adapters with their strengths in one node ("none" leaves a slot empty)."""

    DISPLAY_NAME = "ACE-Step LoRA Stack"

    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = [NONE, *lora_choices()]
        slots = []
        for slot in range(1, STACK_SLOTS + 1):
            slots += [io.Combo.Input(f"lora_{slot}", options=choices, default=NONE,
                                     tooltip=f"{LORA_TOOLTIP} 'none' leaves this slot empty."),
                      io.Float.Input(f"strength_{slot}", **STRENGTH, tooltip=STRENGTH_TOOLTIP)]
        return io.Schema(
            node_id="AceStepLoraStack", display_name=cls.DISPLAY_NAME, category=LORA_CATEGORY,
            description=(f"Adds up to {STACK_SLOTS} adapters to the ACE-Step DiT in one node; the same as chaining "
                         "LoRA Loaders in slot order."),
            inputs=[DIT_TYPE.Input("dit", tooltip="The DiT from Load ACE-Step DiT or another LoRA node."), *slots],
            outputs=[_dit_output()],
        )

    @classmethod
    def execute(cls, dit: DitHandle, **slots: object) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            picked = [(f"lora_{s}", str(slots[f"lora_{s}"]), float(slots[f"strength_{s}"]))
                      for s in range(1, STACK_SLOTS + 1) if slots.get(f"lora_{s}", NONE) != NONE]
            additions = [(f"{field} '{name}'", load_lora(field, name), strength) for field, name, strength in picked]
            patched = stack_adapters(dit, additions)
        return io.NodeOutput(patched, ui=ui.PreviewText(f"LoRA stack: {describe_stack(patched.adapters)}"))


def _variant_note(trained_on: Optional[str], dit: DitHandle) -> Optional[str]:
    if not trained_on or dit.variant is None:
        return None
    if dit.variant in name_tokens(trained_on):
        return None
    return (f"trained on {trained_on}, the connected DiT is {dit.variant}: it loads, but may sound different "
            "than on the model it was trained on.")


class AceStepLoraInspect(io.ComfyNode):
    """What an adapter file is: format, rank, alpha, targets, trained-on model, and whether it fits a DiT."""

    DISPLAY_NAME = "ACE-Step LoRA Inspect"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoraInspect", display_name=cls.DISPLAY_NAME, category=LORA_CATEGORY,
            description=("Reports an adapter's format, rank, alpha, target modules and the model it was trained on; "
                         "with a DiT connected, whether it fits that DiT and why not."),
            inputs=[
                io.Combo.Input("lora_name", options=lora_choices(), tooltip=LORA_TOOLTIP),
                DIT_TYPE.Input("dit", optional=True, tooltip="Optional: check the adapter against this DiT."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="The report as text.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lora_name: str, dit: Optional[DitHandle] = None) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            adapter = load_lora("lora_name", lora_name)
        report = inspect_adapter(adapter, dit.patcher.model.network if dit is not None else None)
        lines = [report.describe()]
        if dit is not None:
            note = _variant_note(report.trained_on, dit)
            lines += [f"connected DiT: {dit.name} ({dit.variant or 'variant unknown'}); "
                      f"adapters on it: {describe_stack(dit.adapters)}"] + ([f"note: {note}"] if note else [])
        text = "\n".join(lines)
        return io.NodeOutput(text, ui=ui.PreviewText(text))


class AceStepLoraBake(io.ComfyNode):
    """Merge the DiT's adapters into its weights and save an official model folder."""

    DISPLAY_NAME = "ACE-Step Bake LoRA"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoraBake", display_name=cls.DISPLAY_NAME, category=LORA_CATEGORY,
            description=("Saves the DiT with its LoRA stack merged in as an official model folder (model.safetensors "
                         "with the official key names, config.json, silence latent), which Load ACE-Step DiT reads. "
                         "Never overwrites: each run takes a new numbered folder."),
            inputs=[
                DIT_TYPE.Input("dit", tooltip="A DiT with adapters, from LoRA Loader or LoRA Stack."),
                io.String.Input("filename_prefix", default="acestep_lora_baked",
                                tooltip="Folder name (a counter is added); may include subfolders."),
                io.Combo.Input("save_to", options=list(BAKE_DESTINATIONS), default="output",
                               tooltip=("output: ComfyUI's output folder. models/acestep: listed by Load ACE-Step DiT "
                                        "as acestep/<folder>. models/diffusion_models: listed as "
                                        "diffusion_models/<folder>/model.safetensors.")),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="The weights file written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, dit: DitHandle, filename_prefix: str, save_to: str) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            if not dit.adapters:
                raise AceStepError("dit carries no LoRA: connect it through ACE-Step LoRA Loader or LoRA Stack "
                                   "first (baking the plain DiT would only copy it).")
            if save_to not in BAKE_DESTINATIONS:
                raise AceStepError(f"save_to '{save_to}' is not one of {', '.join(BAKE_DESTINATIONS)}.")
            kind = BAKE_DESTINATIONS[save_to]
            root = Path(folder_paths.get_output_directory() if kind == "output" else
                        folder_paths.get_folder_paths(kind)[0])
            network = dit.load()
            folder = baked_folder(root, filename_prefix)
            weights = write_baked_dit(folder, network.state_dict(), dit.info.config.to_dict(), dit.silence_latent,
                                      variant=dit.variant, base_name=dit.name,
                                      adapters=[(adapter.name, strength) for adapter, strength in dit.adapters])
        entry = {"acestep": f"acestep/{folder.relative_to(root).as_posix()}",
                 "diffusion_models": f"diffusion_models/{weights.relative_to(root).as_posix()}"}.get(kind)
        text = f"Baked {describe_stack(dit.adapters)} into {weights}" + (
            f"\nLoad ACE-Step DiT entry: {entry}" if entry else "")
        return io.NodeOutput(str(weights), ui=ui.PreviewText(text))


LORA_NODES: list[type[io.ComfyNode]] = [AceStepLoraLoader, AceStepLoraStack, AceStepLoraInspect, AceStepLoraBake]
