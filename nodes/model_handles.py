"""The model handles our nodes pass around (ACESTEP_DIT, ACESTEP_VAE, ACESTEP_TEXT_ENCODER).

Each handle wraps one network in a `comfy.model_patcher.ModelPatcher`, so ComfyUI's model manager
decides where it lives: `load()` asks `comfy.model_management.load_models_gpu` to bring it onto its
load device (freeing room from other models first) and returns the network ready to run; afterwards
ComfyUI offloads it whenever another model needs the memory. Load and offload devices and the "auto"
dtype come from ComfyUI's own policy (`--cpu`, `--lowvram`, `--gpu-only`, `--fp32-unet`, `--bf16-vae`,
...), so our models share the GPU like the native ones.

Why a host module: ModelPatcher writes a `device` attribute onto the module it manages, and our VAE as
well as transformers' Qwen3 expose `device` as a read-only property. `NetworkHost` holds the network
under one attribute (the DiT under `diffusion_model`, ComfyUI's own name, so patch keys read
`diffusion_model.<official key>`) and gives ModelPatcher a plain attribute to write.

Our networks are plain `torch.nn` modules without ComfyUI's cast-on-the-fly layers, so they cannot be
split between devices; they are always loaded whole (`force_full_load`), and `--lowvram` frees the other
models instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import comfy.model_management as mm
import torch
from comfy.cli_args import args
from comfy_api.latest import io
from torch import nn

from acestep_core.checkpoint_identify import ModelInfo
from acestep_core.checkpoint_io import resolve_dtype
from acestep_core.pipeline_models import Models

if TYPE_CHECKING:  # imported where used: comfy.model_patcher pulls in all of ComfyUI's model code
    from comfy.model_patcher import ModelPatcher

DIT_TYPE = io.Custom("ACESTEP_DIT")
VAE_TYPE = io.Custom("ACESTEP_VAE")
TEXT_ENCODER_TYPE = io.Custom("ACESTEP_TEXT_ENCODER")

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


class NetworkHost(nn.Module):
    """One network under a fixed attribute name, with the writable `device` ModelPatcher needs."""

    def __init__(self, network: nn.Module, attribute: str, dtype: torch.dtype):
        super().__init__()
        self.add_module(attribute, network)
        self.network_attribute = attribute
        self.network_dtype = dtype

    @property
    def network(self) -> nn.Module:
        return getattr(self, self.network_attribute)

    def get_dtype(self) -> torch.dtype:
        """Read by `ModelPatcher.model_dtype()`."""
        return self.network_dtype


class AceStepDit(NetworkHost):
    """The DiT's host; its class name is what ComfyUI's log shows when it loads the model."""


class AceStepVae(NetworkHost):
    """The VAE's host."""


class AceStepTextEncoder(NetworkHost):
    """The text encoder's host."""


@dataclass(frozen=True, eq=False)
class NetworkHandle:
    """A network managed by ComfyUI, what it is (`info`), and the menu entry it was loaded from (`name`)."""

    patcher: ModelPatcher
    info: ModelInfo
    name: str

    def load(self) -> Any:
        """The network on its load device (weights patched), after ComfyUI made room for it."""
        mm.load_models_gpu([self.patcher], force_full_load=True)
        return self.patcher.model.network

    @property
    def device(self) -> torch.device:
        return self.patcher.load_device

    @property
    def dtype(self) -> torch.dtype:
        return self.patcher.model.network_dtype


@dataclass(frozen=True, eq=False)
class DitHandle(NetworkHandle):
    """ACESTEP_DIT: the DiT, its silence latent `[1, T, C]` (offload device, model dtype) and its variant.

    `variant` is "turbo", "sft", "base" or None (unknown); it picks the sampler family and the defaults.
    `adapters` is the LoRA stack patched onto this handle's patcher, `(adapter, strength)` in the order the
    LoRA nodes added them (`acestep_core.lora.Adapter`s; empty for a DiT straight from its loader).
    """

    silence_latent: torch.Tensor
    variant: Optional[str]
    adapters: tuple[tuple[Any, float], ...] = ()

    def loaded_models(self) -> Models:
        """The engine's `Models` around the loaded DiT, for the stage functions that only need the DiT.

        The VAE and text encoder are left empty: in ComfyUI each has its own node and handle.
        """
        dit = self.load()
        silence = self.silence_latent.to(device=self.device, dtype=self.dtype)
        return Models(dit, silence, None, None, self.variant, {"dit": self.info.describe()})

    def clone(self) -> "DitHandle":
        """A handle on a patcher clone: same weights, its own patches (what a LoRA node changes)."""
        return dataclasses.replace(self, patcher=self.patcher.clone())

    @property
    def latent_channels(self) -> int:
        return int(self.silence_latent.shape[-1])


@dataclass(frozen=True, eq=False)
class VaeHandle(NetworkHandle):
    """ACESTEP_VAE: the Oobleck VAE (48 kHz stereo ↔ 25 Hz latents)."""


@dataclass(frozen=True, eq=False)
class TextEncoderHandle(NetworkHandle):
    """ACESTEP_TEXT_ENCODER: the Qwen3-Embedding encoder; `encoder` wraps the managed network and tokenizer."""

    encoder: Any

    def loaded_encoder(self) -> Any:
        """The `TextEncoder` with its network on the load device."""
        self.load()
        return self.encoder


def _patcher(host: NetworkHost, load_device: torch.device, offload_device: torch.device) -> ModelPatcher:
    from comfy.model_patcher import ModelPatcher

    return ModelPatcher(host, load_device=load_device, offload_device=offload_device)


def make_dit_handle(loaded: Any, name: str, dtype: torch.dtype, variant: Optional[str]) -> DitHandle:
    """Wrap `checkpoints.load_dit`'s result (loaded on the offload device) for ComfyUI."""
    patcher = _patcher(AceStepDit(loaded.model, "diffusion_model", dtype), mm.get_torch_device(),
                       mm.unet_offload_device())
    return DitHandle(patcher, loaded.info, name, loaded.silence_latent, variant)


def make_vae_handle(loaded: Any, name: str, dtype: torch.dtype) -> VaeHandle:
    patcher = _patcher(AceStepVae(loaded.model, "first_stage_model", dtype), mm.vae_device(), mm.vae_offload_device())
    return VaeHandle(patcher, loaded.info, name)


def make_text_encoder_handle(loaded: Any, name: str, dtype: torch.dtype) -> TextEncoderHandle:
    patcher = _patcher(AceStepTextEncoder(loaded.encoder.model, "transformer", dtype), mm.text_encoder_device(),
                       mm.text_encoder_offload_device())
    return TextEncoderHandle(patcher, loaded.info, name, loaded.encoder)


def offload_device(kind: str) -> torch.device:
    """Where a network of `kind` ("dit", "vae", "text_encoder") waits between uses (and is first loaded)."""
    return {"dit": mm.unet_offload_device, "vae": mm.vae_offload_device,
            "text_encoder": mm.text_encoder_offload_device}[kind]()


def load_device(kind: str) -> torch.device:
    return {"dit": mm.get_torch_device, "vae": mm.vae_device, "text_encoder": mm.text_encoder_device}[kind]()


_FLAG_SUFFIX = {"dit": "unet", "vae": "vae", "text_encoder": "text_enc"}


def _flag_dtype(kind: str) -> Optional[torch.dtype]:
    """A dtype forced on ComfyUI's command line (`--fp32-unet`, `--bf16-vae`, `--fp16-text-enc`, ...), if any."""
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if getattr(args, f"{name}_{_FLAG_SUFFIX[kind]}", False):
            return dtype
    return None


def choose_dtype(choice: str, kind: str) -> torch.dtype:
    """The dtype to load a network in: the node's choice, or for "auto" ComfyUI's command-line flag for
    that kind, else the official rule on the load device (bf16 where supported, fp16 on older GPUs, fp32
    on the CPU)."""
    if choice != "auto":
        return resolve_dtype(choice)
    forced = _flag_dtype(kind)
    if forced is not None:
        return forced
    device = load_device(kind)
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


def describe_dtype(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


__all__ = [
    "DIT_TYPE", "DTYPE_CHOICES", "DitHandle", "NetworkHandle", "NetworkHost", "TEXT_ENCODER_TYPE",
    "TextEncoderHandle", "VAE_TYPE", "VaeHandle", "choose_dtype", "describe_dtype", "load_device",
    "make_dit_handle", "make_text_encoder_handle", "make_vae_handle", "offload_device",
]
