"""Tiny ACE-Step checkpoints in the test ComfyUI's model folders, in the layouts users have.

- `models/acestep/`: the official Hugging Face folders (`acestep-v15-turbo`, `-base`, `-sft`, `-xl-turbo`,
  `vae`, `Qwen3-Embedding-0.6B`) from `tests/core/tiny_models.py`, i.e. the golden tiny DiTs and VAE and
  a random tiny Qwen3 with the real tokenizer. `acestep-v15-xl-base` is left out on purpose: it is the
  "official model not downloaded" case.
- ComfyUI's folders: a single-file DiT (with `silence_latent.pt` beside it) in `diffusion_models/`, a
  single-file VAE under Stable Audio Tools names in `vae/`, and a safetensors file that is no ACE-Step
  model at all (`diffusion_models/not_acestep.safetensors`), the "wrong file in a combo" case.

The folders are written once per machine into a cache and copied into each server's base folder (the
tiny text encoder's vocabulary makes it the slow part).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.core.tiny_layouts import write_comfy_dit, write_comfy_vae
from tests.core.tiny_models import write_tiny_models

COMFY_DIT = "acestep_v1.5_turbo_tiny.safetensors"
COMFY_VAE = "ace_1.5_vae_tiny.safetensors"
WRONG_FILE = "not_acestep.safetensors"
LAYOUT_VERSION = "1"


def write_model_folders(models: Path) -> Path:
    """Write every tiny model into the ComfyUI `models` folder `models` and return it."""
    write_tiny_models(models / "acestep")
    write_comfy_dit(models / "diffusion_models" / COMFY_DIT, with_silence=True)
    write_comfy_vae(models / "vae" / COMFY_VAE)
    save_file({"model.conv_in.weight": torch.zeros(4, 4)}, models / "diffusion_models" / WRONG_FILE)
    return models


def install_model_folders(models: Path, cache: Path) -> Path:
    """Copy the tiny model folders into the server's `models` folder.

    They are built once into `<cache>/v<LAYOUT_VERSION>` (in a scratch folder renamed into place, so
    test sessions running at the same time never see a half-written set).
    """
    built = cache / f"v{LAYOUT_VERSION}"
    if not built.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="building.", dir=cache))
        write_model_folders(scratch / "models")
        try:
            scratch.rename(built)
        except OSError:  # another session finished first
            shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(built / "models", models, dirs_exist_ok=True)
    return models
