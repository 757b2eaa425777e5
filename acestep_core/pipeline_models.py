"""The three networks a song needs (DiT with its silence latent, VAE, text encoder), loaded together.

`load_models` takes official folder names under a models folder (downloading them with
huggingface_hub only when asked) or paths to any layout `checkpoints` reads. `Models` records what
was loaded, so a result can name the exact models that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from acestep_core.checkpoint_download import OFFICIAL_MODELS, ensure_model
from acestep_core.checkpoint_io import resolve_dtype
from acestep_core.checkpoints import LoadedDit, load_dit, load_text_encoder, load_vae
from acestep_core.errors import AceStepError
from acestep_core.models.acestep import AceStepModel
from acestep_core.models.vae import OobleckVAE
from acestep_core.text.encoder import TextEncoder

DEFAULT_DIT = "acestep-v15-turbo"
DEFAULT_VAE = "vae"
DEFAULT_TEXT_ENCODER = "Qwen3-Embedding-0.6B"

PathLike = Union[str, Path]


@dataclass
class Models:
    """Loaded networks on one device and dtype, and a description of each for the result's record.

    `variant` is the DiT's "turbo", "sft", "base" or None (unknown); it picks the sampler family.
    """

    dit: AceStepModel
    silence_latent: torch.Tensor
    vae: OobleckVAE
    text_encoder: TextEncoder
    variant: Optional[str]
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.silence_latent.device

    @property
    def dtype(self) -> torch.dtype:
        return self.silence_latent.dtype

    @property
    def family(self) -> str:
        """The sampler family: "turbo" (distilled, no CFG) or "base" (sft/base with CFG)."""
        return "turbo" if self.variant == "turbo" else "base"

    def to(self, device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None
           ) -> "Models":
        """Move every network to `device` in `dtype` (None keeps the current one), in place; returns self."""
        device = torch.device(device) if device is not None else self.device
        dtype = resolve_dtype(dtype) if dtype is not None else self.dtype
        if device != self.device or dtype != self.dtype:
            self.dit.to(device=device, dtype=dtype)
            self.vae.to(device=device, dtype=dtype)
            self.text_encoder.model.to(device=device, dtype=dtype)
            self.silence_latent = self.silence_latent.to(device=device, dtype=dtype)
        return self


def from_loaded(dit: LoadedDit, vae: OobleckVAE, text_encoder: TextEncoder, ids: Optional[dict[str, str]] = None
                ) -> Models:
    """Wrap networks loaded elsewhere (e.g. by the ComfyUI loader nodes)."""
    if dit.silence_latent is None:
        raise AceStepError("The DiT was loaded without its silence latent; load it with silence_latent.pt beside it.")
    variant = dit.info.dit.variant if dit.info.dit is not None else None
    described = {"dit": dit.info.describe()} | dict(ids or {})
    return Models(dit.model, dit.silence_latent, vae, text_encoder, variant, described)


def model_path(name: PathLike, models_dir: Optional[PathLike], download: bool) -> Path:
    """A model folder or file: an existing path as it is, else an official model name under `models_dir`.

    Official names are completed from Hugging Face only with `download`; otherwise a missing model gives an
    error that lists the files and a command to fetch them.
    """
    path = Path(name).expanduser()
    if path.exists():
        return path
    if models_dir is None:
        raise AceStepError(f"Model '{name}' not found: give a models folder (--models-dir) or the model's path.")
    root = Path(models_dir).expanduser()
    if str(name) in OFFICIAL_MODELS:
        return ensure_model(str(name), root, allow_download=download)
    candidate = root / str(name)
    if candidate.exists():
        return candidate
    raise AceStepError(f"Model '{name}' not found in {root}; official names are: {', '.join(OFFICIAL_MODELS)}.")


def load_models(models_dir: Optional[PathLike] = None, *, dit: PathLike = DEFAULT_DIT, vae: PathLike = DEFAULT_VAE,
                text_encoder: PathLike = DEFAULT_TEXT_ENCODER, device: Union[str, torch.device] = "cpu",
                dtype: Union[str, torch.dtype, None] = torch.float32, download: bool = False,
                variant: Optional[str] = None) -> Models:
    """Load the DiT, VAE and text encoder (official folder names under `models_dir`, or paths).

    `variant` ("turbo", "sft", "base") overrides what the DiT's config and folder name say.
    """
    dtype = resolve_dtype(dtype)
    dit_path = model_path(dit, models_dir, download)
    vae_path = model_path(vae, models_dir, download)
    text_path = model_path(text_encoder, models_dir, download)
    loaded_dit = load_dit(dit_path, dtype, device, variant=variant)
    loaded_vae = load_vae(vae_path, dtype, device)
    loaded_text = load_text_encoder(text_path, dtype, device)
    ids = {"vae": loaded_vae.info.describe(), "text_encoder": loaded_text.info.describe()}
    return from_loaded(loaded_dit, loaded_vae.model, loaded_text.encoder, ids)
