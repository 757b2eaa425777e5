"""ComfyUI adapters of comfyui-acestep: V3 schema nodes, one file per stage, thin over `acestep_core`.

Only the pack's root `__init__.py` imports this, and only inside ComfyUI. Registration goes through
`comfy_entrypoint()` alone: a module that also exported `NODE_CLASS_MAPPINGS` would have its entrypoint
ignored by ComfyUI.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .audio_io import AceStepLoadAudio, AceStepPreviewAudio, AceStepSaveAudio
from .best_of import BEST_OF_NODES
from .blueprint_io import BLUEPRINT_NODES
from .decode import DECODE_NODES
from .latent import AceStepEmptyLatent
from .lora import LORA_NODES
from .lrc import LRC_NODES
from .models import LOADER_NODES
from .planner import PLANNER_NODES
from .sampler import SAMPLER_NODES
from .scoring import SCORE_NODES
from .source_audio import SOURCE_NODES
from .text_encode import TEXT_NODES
from .training import TRAINING_NODES

NODES: list[type[io.ComfyNode]] = [
    *LOADER_NODES, *TEXT_NODES, AceStepEmptyLatent, *SOURCE_NODES, *SAMPLER_NODES, *DECODE_NODES, *LORA_NODES,
    AceStepLoadAudio, AceStepSaveAudio, AceStepPreviewAudio, *LRC_NODES, *SCORE_NODES, *BEST_OF_NODES,
    *TRAINING_NODES,
    *PLANNER_NODES, *BLUEPRINT_NODES,
]


class AceStepExtension(ComfyExtension):
    """Hands ComfyUI the node classes (0.3.75 never calls `on_load`, so nothing is set up there)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> AceStepExtension:
    return AceStepExtension()
