"""LoRA stacks as ComfyUI weight patches on a clone of the DiT's ModelPatcher, and the `loras` folder menu.

Why our own patch type: ComfyUI's built-in "lora"/"lokr" patches see the weight as the patches before them
left it, and its DoRA takes the norm of the unmerged weight, so a chain of them is not our engine's rule
(W = W0 + Σ strengthᵢ·Δᵢ(W0), DoRA as PEFT merges it). `AdapterStackPatch` is a `WeightAdapterBase`, which
`ModelPatcher.add_patches` stores like any patch and `comfy.lora.calculate_weight` calls when ComfyUI loads
the model: it holds only the factors (no dense copy of the weight) and adds the whole stack's change in one
step, with the same float operations as `acestep_core.lora.apply_adapters`, so both give the same weights.

Each LoRA node returns a handle on a fresh patcher clone carrying the whole stack so far (one patch per
changed weight); the loaded DiT's own tensors are never written. ComfyUI swaps the patched weights in when
a sampler loads that clone and restores the originals when it loads another (a graph without the LoRA).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import folder_paths
import torch
from comfy.weight_adapter import WeightAdapterBase

from acestep_core.errors import AceStepError
from acestep_core.lora import Adapter, ModuleDelta, check_fits, read_adapter
from acestep_core.lora_io import PEFT_CONFIG

from .model_handles import DitHandle

LORA_FOLDER = "loras"
NONE = "none"
# The DiT sits under this attribute of its ModelPatcher host, so patch keys read "diffusion_model.<key>".
DIT_PREFIX = "diffusion_model."

Stack = tuple[tuple[Adapter, float], ...]


class AdapterStackPatch(WeightAdapterBase):
    """The change of one weight by every adapter of a stack: Σ strengthᵢ·Δᵢ(W), added in one step."""

    name = "acestep_adapter_stack"

    def __init__(self, changes: tuple[tuple[ModuleDelta, float], ...]):
        self.changes = changes
        self.loaded_keys: set[str] = set()
        self.weights = [t for delta, _ in changes for t in delta.factors.values()]

    def calculate_weight(self, weight: torch.Tensor, key: str, strength: float, strength_model: float,
                         offset: Any, function: Callable[[torch.Tensor], torch.Tensor],
                         intermediate_dtype: torch.dtype = torch.float32,
                         original_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ComfyUI hands the weight as float32 (a copy); Δ is taken against it, as the engine takes it
        against the unpatched weight (ours is the only patch on a DiT weight)."""
        base = weight.float()
        total = sum(scale * delta.effective_delta(base) for delta, scale in self.changes)
        if strength != 1.0:
            total = strength * total
        weight += function(total).to(weight.dtype)
        return weight


def stack_adapters(dit: DitHandle, additions: Sequence[tuple[str, Adapter, float]]) -> DitHandle:
    """A handle on a patcher clone with `additions` `(label, adapter, strength)` stacked on the adapters `dit`
    already carries.

    Every adapter is checked against the DiT before anything is patched; a misfit raises `AceStepError`
    starting with the addition's label (the node input and menu entry) and saying what to load instead.
    Strength 0 adds no patch.
    """
    network = dit.patcher.model.network
    for label, adapter, _ in additions:
        try:
            check_fits(adapter, network)
        except AceStepError as exc:
            raise AceStepError(f"{label}: {exc}") from None
    stack: Stack = dit.adapters + tuple((adapter, float(strength)) for _, adapter, strength in additions)
    clone = dit.clone()
    patcher = clone.patcher
    for key in list(patcher.patches):
        kept = [p for p in patcher.patches[key] if not isinstance(p[1], AdapterStackPatch)]
        if kept:
            patcher.patches[key] = kept
        else:
            del patcher.patches[key]
    per_key: dict[str, list[tuple[ModuleDelta, float]]] = {}
    for adapter, strength in stack:
        if strength == 0.0:
            continue
        for module, key in check_fits(adapter, network).items():
            per_key.setdefault(DIT_PREFIX + key, []).append((adapter.modules[module], strength))
    patcher.add_patches({key: AdapterStackPatch(tuple(changes)) for key, changes in per_key.items()})
    patcher.patches_uuid = uuid.uuid4()
    return dataclasses.replace(clone, adapters=stack)


def _peft_folders(root: Path) -> list[str]:
    found = []
    for current, folders, files in os.walk(root, followlinks=True):
        if PEFT_CONFIG in files and Path(current) != root:
            found.append(Path(current).relative_to(root).as_posix())
            folders.clear()
    return found


def lora_choices() -> list[str]:
    """The adapter menu: `.safetensors` files and PEFT folders (holding adapter_config.json) in `loras`.

    Files inside a PEFT folder are not listed on their own: the folder is the adapter (its config holds alpha).
    """
    folders = sorted({name for root in folder_paths.get_folder_paths(LORA_FOLDER) if Path(root).is_dir()
                      for name in _peft_folders(Path(root))})
    inside = tuple(f"{name}/" for name in folders)
    files = [name for name in folder_paths.get_filename_list(LORA_FOLDER)
             if name.lower().endswith(".safetensors") and not name.replace(os.sep, "/").startswith(inside)]
    return sorted(set(files) | set(folders), key=str.lower)


def resolve_lora(field: str, choice: str) -> Path:
    """The file or PEFT folder a menu entry names in one of the `loras` folders."""
    for root in folder_paths.get_folder_paths(LORA_FOLDER):
        candidate = Path(root) / choice
        if Path(os.path.commonpath([os.path.abspath(root), os.path.abspath(candidate)])) != Path(
                os.path.abspath(root)):
            break
        if candidate.is_file() or (candidate / PEFT_CONFIG).is_file():
            return candidate
    raise AceStepError(f"{field} '{choice}': not found in the loras folder "
                       f"({', '.join(folder_paths.get_folder_paths(LORA_FOLDER))}); refresh the menu (R) and pick "
                       "another adapter.")


def load_lora(field: str, choice: str) -> Adapter:
    """Read the adapter a menu entry names; errors name the field and the entry."""
    path = resolve_lora(field, choice)
    try:
        return read_adapter(path)
    except AceStepError as exc:
        raise AceStepError(f"{field} '{choice}': {exc}") from None


def describe_stack(stack: Stack) -> str:
    return ", ".join(f"{adapter.name} ({strength:g})" for adapter, strength in stack) or "no LoRA"
