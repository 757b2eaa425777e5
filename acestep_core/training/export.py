"""Write a trained adapter as a single ComfyUI LoRA file, beside the official PEFT folder.

ComfyUI's own LoRA loader (0.3.75, `comfy/lora.py`) maps every DiT weight `diffusion_model.<key>.weight` to
the LoRA key `diffusion_model.<key>` and reads `<key>.lora_A.weight` / `<key>.lora_B.weight` with an optional
scalar `<key>.alpha` (scale alpha / rank). ComfyUI's ACE-Step 1.5 model uses the official module names, so
`diffusion_model.decoder.layers.0.self_attn.q_proj.lora_A.weight` etc. load with the stock "LoraLoaderModelOnly"
node as well as with ours. The alpha is stored per module so the scale survives without the PEFT config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import save_file

from acestep_core.errors import AceStepError
from acestep_core.lora_formats import Adapter

PathLike = Union[str, Path]
COMFY_PREFIX = "diffusion_model."


def comfy_lora_tensors(adapter: Adapter) -> dict[str, torch.Tensor]:
    """`{diffusion_model.<module>.lora_A.weight, .lora_B.weight, .alpha}` for every LoRA module."""
    tensors: dict[str, torch.Tensor] = {}
    for module, delta in adapter.modules.items():
        if delta.kind != "lora" or delta.magnitude is not None:
            raise AceStepError(f"Adapter {adapter.name}: module {module} is not a plain LoRA; only plain LoRA "
                               "adapters are exported as ComfyUI files.")
        rank = delta.factors["down"].shape[0]
        prefix = COMFY_PREFIX + module
        tensors[f"{prefix}.lora_A.weight"] = delta.factors["down"].contiguous()
        tensors[f"{prefix}.lora_B.weight"] = delta.factors["up"].contiguous()
        tensors[f"{prefix}.alpha"] = torch.tensor(delta.scale * rank, dtype=torch.float32)
    return tensors


def save_comfy_lora(adapter: Adapter, path: PathLike, *, dtype: torch.dtype = torch.float32,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write the ComfyUI single file (never over an existing file)."""
    target = Path(path).expanduser()
    if target.exists():
        raise AceStepError(f"{target} already exists; choose another LoRA file name.")
    tensors = {k: (v if k.endswith(".alpha") else v.to(dtype)) for k, v in comfy_lora_tensors(adapter).items()}
    info = {"format": "pt", "acestep_lora": json.dumps({"name": adapter.name, "modules": len(adapter.modules)})}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata=info | dict(metadata or {}))
    return target
