"""Tiny ACE-Step checkpoints in the test ComfyUI's model folders, in the layouts users have.

- `models/acestep/`: the official Hugging Face folders (`acestep-v15-turbo`, `-base`, `-sft`, `-xl-turbo`,
  `vae`, `Qwen3-Embedding-0.6B`) from `tests/core/tiny_models.py`, i.e. the golden tiny DiTs and VAE and
  a random tiny Qwen3 with the real tokenizer. `acestep-v15-xl-base` is left out on purpose: it is the
  "official model not downloaded" case. `acestep-5Hz-lm-0.6B` is the tiny 5 Hz LM of `tests/core/tiny_lm.py`
  (real vocabulary with the audio-code tokens, random toy-width weights).
- ComfyUI's folders: a single-file DiT (with `silence_latent.pt` beside it) in `diffusion_models/`, a
  single-file VAE under Stable Audio Tools names in `vae/`, and a safetensors file that is no ACE-Step
  model at all (`diffusion_models/not_acestep.safetensors`), the "wrong file in a combo" case; the same
  tiny LM as ComfyUI's single file `text_encoders/qwen_0.6b_ace15_lm_tiny.safetensors`.
- `loras/`: adapters for the tiny 2B DiT: a ComfyUI single file (`diffusion_model.` keys, alpha), a PEFT folder
  as the official trainer writes it, a LoKr file, and one made for twice the width (the "does not fit" case).

The folders are written once per machine into a cache and copied into each server's base folder (the
tiny text encoder's vocabulary makes it the slow part).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.core import tiny_adapters
from tests.core.tiny_layouts import write_comfy_dit, write_comfy_vae
from tests.core.tiny_lm import write_comfy_lm, write_lm_folder
from tests.core.tiny_models import write_tiny_models

COMFY_DIT = "acestep_v1.5_turbo_tiny.safetensors"
COMFY_VAE = "ace_1.5_vae_tiny.safetensors"
WRONG_FILE = "not_acestep.safetensors"
LM_FOLDER = "acestep-5Hz-lm-0.6B"
COMFY_LM = "qwen_0.6b_ace15_lm_tiny.safetensors"
LORA_FILE = "acestep_tiny_lora.safetensors"
LORA_FOLDER = "acestep_tiny_peft"
LOKR_FILE = "acestep_tiny_lokr.safetensors"
WIDE_LORA_FILE = "acestep_tiny_wide_lora.safetensors"
LAYOUT_VERSION = "3"


def write_loras(loras: Path) -> Path:
    """Adapters for the tiny 2B DiT in three formats, plus one shaped for a DiT twice as wide."""
    shapes = tiny_adapters.golden_shapes()
    modules = tiny_adapters.attention_modules(shapes)
    tiny_adapters.write_lora_file(loras / LORA_FILE, tiny_adapters.random_lora(shapes, modules, rank=4, seed=1),
                                  style="diffusion_model", alpha=4.0)
    tiny_adapters.write_peft_folder(loras / LORA_FOLDER, tiny_adapters.random_lora(shapes, modules, rank=2, seed=2),
                                    r=2, alpha=4.0)
    lokr = tiny_adapters.random_lokr(shapes, modules, rank=2, seed=3)
    tiny_adapters.write_lycoris_file(loras / LOKR_FILE, lokr, alpha=2.0)
    wide_shapes = {key: tuple(2 * size for size in shape) for key, shape in shapes.items()}
    tiny_adapters.write_lora_file(loras / WIDE_LORA_FILE,
                                  tiny_adapters.random_lora(wide_shapes, modules, rank=4, seed=4),
                                  style="diffusion_model", alpha=4.0)
    return loras


def write_model_folders(models: Path) -> Path:
    """Write every tiny model into the ComfyUI `models` folder `models` and return it."""
    write_tiny_models(models / "acestep")
    write_comfy_dit(models / "diffusion_models" / COMFY_DIT, with_silence=True)
    write_comfy_vae(models / "vae" / COMFY_VAE)
    save_file({"model.conv_in.weight": torch.zeros(4, 4)}, models / "diffusion_models" / WRONG_FILE)
    write_lm_folder(models / "acestep" / LM_FOLDER)
    write_comfy_lm(models / "text_encoders" / COMFY_LM)
    write_loras(models / "loras")
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
