"""Write a DiT with adapters merged in as an official model folder, so any DiT loader reads it back as it was.

The folder holds what the official `acestep-v15-*` folders hold: `model.safetensors` under the official
state-dict names, `config.json` (the loaded DiT's config, with `is_turbo`/`model_version` set from its
variant so the loader identifies it again) and the silence latent (`silence_latent.safetensors`, `[1, T, C]`).
A single weights file would lose the config (sliding window and the like are not in the weights), which is
why a folder is written. Nothing is ever overwritten: a new numbered folder is taken.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from safetensors.torch import save_file

from acestep_core.errors import AceStepError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
SILENCE = "silence_latent.safetensors"
_MAX_COUNTER = 99999
_BAD_PREFIX = re.compile(r"(^|[\\/])\.\.([\\/]|$)")


def baked_folder(root: Path, prefix: str) -> Path:
    """The first free `<root>/<prefix>_NNNNN_` folder (created empty); `prefix` may name subfolders of `root`."""
    prefix = prefix.strip()
    if not prefix.strip("/\\") or _BAD_PREFIX.search(prefix) or prefix.startswith(("/", "\\")) or ":" in prefix:
        raise AceStepError(f"filename_prefix '{prefix}' must be a name (optionally with subfolders) inside {root}, "
                           "without '..'; e.g. acestep/my_lora_baked.")
    prefix = prefix.rstrip("/\\")
    parent = (root / prefix).parent
    parent.mkdir(parents=True, exist_ok=True)
    stem = Path(prefix).name
    for counter in range(1, _MAX_COUNTER + 1):
        folder = parent / f"{stem}_{counter:05d}_"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise AceStepError(f"{parent} already holds {_MAX_COUNTER} folders named {stem}_*; choose another "
                       "filename_prefix.")


def write_baked_dit(folder: Path, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                    silence_latent: torch.Tensor, *, variant: Optional[str],
                    adapters: Sequence[tuple[str, float]], base_name: str) -> Path:
    """Write the merged DiT into the empty `folder` (see the module doc); returns the weights file.

    `silence_latent` is `[1, T, C]`; `adapters` (name, strength) and `base_name` go into the file's metadata.
    """
    for name in (WEIGHTS, CONFIG, SILENCE):
        if (folder / name).exists():
            raise AceStepError(f"{folder / name} already exists; bake into a new folder.")
    values = dict(config)
    if variant is not None:
        values["is_turbo"] = variant == "turbo"
        values["model_version"] = variant
    metadata = {"format": "pt", "acestep_base_model": base_name,
                "acestep_adapters": json.dumps([{"name": n, "strength": s} for n, s in adapters])}
    tensors = {key: tensor.detach().to("cpu").contiguous() for key, tensor in state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS), metadata=metadata)
    (folder / CONFIG).write_text(json.dumps(values, indent=2, default=str) + "\n", encoding="utf-8")
    save_file({"silence_latent": silence_latent.detach().to("cpu", torch.float32).contiguous()},
              str(folder / SILENCE))
    return folder / WEIGHTS
