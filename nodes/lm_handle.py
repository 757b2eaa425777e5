"""The 5 Hz LM handle our nodes pass around (ACESTEP_LM): a `PlannerLM` whose network ComfyUI manages.

Like the DiT and text-encoder handles (`model_handles`), the Qwen3 causal LM sits in a `NetworkHost`
inside a `comfy.model_patcher.ModelPatcher`, so ComfyUI's model manager loads it onto its device before
a planner node runs and offloads it when another model needs the room. The LM uses the text encoder's
devices and command-line dtype flags, as ComfyUI's own ACE-Step 1.5 LM is part of its text encoder.

Nodes call `loaded_planner()` and run the planner on whatever device the manager chose: the
`PlannerLM` reads its device from its weights, so nothing else needs to follow the move.
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from acestep_core.checkpoint_identify import ModelInfo
from acestep_core.planner import PlannerLM

from .model_handles import NetworkHandle, NetworkHost

LM_TYPE = io.Custom("ACESTEP_LM")
LM_KIND = "text_encoder"  # the device and dtype policy the LM follows


class AceStepLM(NetworkHost):
    """The LM's host; its class name is what ComfyUI's log shows when it loads the model."""


@dataclass(frozen=True, eq=False)
class LMHandle(NetworkHandle):
    """ACESTEP_LM: the 5 Hz LM with its tokenizer and token tables (`planner`), managed by ComfyUI."""

    planner: PlannerLM

    def loaded_planner(self) -> PlannerLM:
        """The planner with its network on the load device, after ComfyUI made room for it."""
        self.load()
        return self.planner

    @property
    def size_name(self) -> str:
        """The LM's size as the official folders name it (0.6B, 1.7B, 4B), from its hidden width."""
        hidden = self.planner.model.config.hidden_size
        return {1024: "0.6B", 2048: "1.7B", 2560: "4B"}.get(hidden, f"hidden {hidden}")


def lm_load_device() -> torch.device:
    return mm.text_encoder_device()


def lm_offload_device() -> torch.device:
    return mm.text_encoder_offload_device()


def make_lm_handle(planner: PlannerLM, info: ModelInfo, name: str, dtype: torch.dtype) -> LMHandle:
    """Wrap a planner loaded on the offload device for ComfyUI."""
    from comfy.model_patcher import ModelPatcher  # here: it pulls in all of ComfyUI's model code

    host = AceStepLM(planner.model, "transformer", dtype)
    patcher = ModelPatcher(host, load_device=lm_load_device(), offload_device=lm_offload_device())
    return LMHandle(patcher, info, name, planner)


__all__ = ["LM_KIND", "LM_TYPE", "LMHandle", "lm_load_device", "lm_offload_device", "make_lm_handle"]
