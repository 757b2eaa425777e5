"""Trainable LoRA layers on the DiT decoder, put in and taken out in place, with PEFT's semantics.

The official trainer wraps `model.decoder` with PEFT (`LoraConfig(r, lora_alpha, lora_dropout,
target_modules=[q_proj, k_proj, v_proj, o_proj])`), so every attention projection of the decoder (self- and
cross-attention) gets `y = W x + (alpha/r) · B A dropout(x)`, A initialised Kaiming-uniform (a = √5), B zero.
`LoRALinear` computes exactly that. We write it ourselves instead of calling PEFT so that (a) removal
restores the very same base modules (ComfyUI keeps sharing them), (b) dropout draws from a seed we set per
training step, which makes runs repeatable, resumable and safe under gradient checkpointing (the recompute
redraws the same mask), and (c) the trained factors come out as an `Adapter` that `lora_io` saves as the
official PEFT folder.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from acestep_core.errors import AceStepError
from acestep_core.lora_formats import Adapter
from acestep_core.lora import lora_adapter

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ATTENTION_TYPES = {"both": ("self_attn", "cross_attn"), "self": ("self_attn",), "cross": ("cross_attn",)}


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update (float32 factors, whatever the base dtype)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.dropout = dropout
        self.dropout_seed = 0
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=torch.float32))
        init = torch.empty(rank, base.in_features, dtype=torch.float32)
        nn.init.kaiming_uniform_(init, a=math.sqrt(5), generator=generator)
        with torch.no_grad():
            self.lora_A.copy_(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        h = x
        if self.training and self.dropout > 0:
            generator = torch.Generator(device=x.device).manual_seed(self.dropout_seed)
            keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.dropout
            h = x * keep.to(x.dtype) / (1.0 - self.dropout)
        compute = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else \
            torch.float32
        update = F.linear(F.linear(h.to(compute), self.lora_A.to(compute)), self.lora_B.to(compute))
        return out + (update * self.scale).to(out.dtype)


class CheckpointedLayer(nn.Module):
    """Runs a decoder layer under activation checkpointing (recomputed in backward to save memory)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def __getattr__(self, name: str) -> object:
        # The decoder reaches into its layers (e.g. `layer.cross_attn.project_kv`); let it see the real layer.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["layer"], name)

    def forward(self, *args: object) -> torch.Tensor:
        if not self.training or not torch.is_grad_enabled():
            return self.layer(*args)
        return checkpoint(self.layer, *args, use_reentrant=False)


class LoRAInjection:
    """The LoRA layers put into one model; `remove()` puts the original modules back."""

    def __init__(self, model: nn.Module, rank: int, alpha: float, dropout: float, *,
                 targets: tuple[str, ...] = ATTENTION_TARGETS, attention: str = "both", seed: int = 0,
                 gradient_checkpointing: bool = False):
        if rank < 1:
            raise AceStepError(f"LoRA rank {rank} must be at least 1.")
        if alpha <= 0:
            raise AceStepError(f"LoRA alpha {alpha} must be positive.")
        if not 0.0 <= dropout < 1.0:
            raise AceStepError(f"LoRA dropout {dropout} must be within [0, 1).")
        if attention not in ATTENTION_TYPES:
            raise AceStepError(f"Attention type {attention!r} must be one of {', '.join(ATTENTION_TYPES)}.")
        self.model = model
        self.rank, self.alpha, self.dropout = rank, float(alpha), dropout
        self.layers: dict[str, LoRALinear] = {}
        self._checkpointed: list[tuple[nn.ModuleList, int, nn.Module]] = []
        generator = torch.Generator().manual_seed(seed)
        blocks = ATTENTION_TYPES[attention]
        for name, module in list(model.decoder.named_modules()):
            parts = name.split(".")
            if (isinstance(module, nn.Linear) and parts[-1] in targets and len(parts) >= 2
                    and parts[-2] in blocks):
                self._replace(f"decoder.{name}", LoRALinear(module, rank, alpha, dropout, generator))
        if not self.layers:
            raise AceStepError(f"No decoder module matches the LoRA targets {', '.join(targets)} "
                               f"({attention} attention); use q_proj/k_proj/v_proj/o_proj.")
        if gradient_checkpointing:
            layers = model.decoder.layers
            for index, layer in enumerate(layers):
                self._checkpointed.append((layers, index, layer))
                layers[index] = CheckpointedLayer(layer)

    def _replace(self, path: str, layer: LoRALinear) -> None:
        parent_name, _, child = path.rpartition(".")
        setattr(self.model.get_submodule(parent_name), child, layer)
        self.layers[path] = layer

    def parameters(self) -> Iterator[nn.Parameter]:
        for layer in self.layers.values():
            yield layer.lora_A
            yield layer.lora_B

    def set_dropout_seed(self, seed: int) -> None:
        """Give every layer its own dropout seed for the coming forward (and its checkpoint recompute)."""
        for index, layer in enumerate(self.layers.values()):
            layer.dropout_seed = (seed * 1_000_003 + index) % (1 << 62)

    def adapter(self, name: str = "adapter") -> Adapter:
        """The trained factors as an `Adapter` (float32 copies on the CPU), module paths from the model root."""
        factors = {path: (layer.lora_A.detach().to("cpu").clone(), layer.lora_B.detach().to("cpu").clone())
                   for path, layer in self.layers.items()}
        return lora_adapter(factors, alpha=self.alpha, name=name)

    def load_factors(self, adapter: Adapter, where: str) -> None:
        """Copy a saved adapter's factors in (resume); it must cover exactly these modules at this rank."""
        modules: Mapping[str, object] = adapter.modules
        if set(modules) != set(self.layers):
            raise AceStepError(f"{where} adapts other modules than this run ({len(modules)} vs {len(self.layers)}); "
                               "resume with the rank, targets and attention type it was trained with.")
        for path, layer in self.layers.items():
            delta = adapter.modules[path]
            down, up = delta.factors["down"], delta.factors["up"]
            if down.shape != layer.lora_A.shape or up.shape != layer.lora_B.shape or \
                    not math.isclose(delta.scale, layer.scale, rel_tol=1e-6):
                raise AceStepError(f"{where}: module {path} has rank {down.shape[0]} / scale {delta.scale:g}, this "
                                   f"run rank {self.rank} / scale {layer.scale:g}; resume with the same settings.")
            with torch.no_grad():
                layer.lora_A.copy_(down)
                layer.lora_B.copy_(up)

    def remove(self) -> None:
        """Put the original modules back (idempotent)."""
        for layers, index, layer in self._checkpointed:
            layers[index] = layer
        self._checkpointed.clear()
        for path, layer in self.layers.items():
            parent_name, _, child = path.rpartition(".")
            setattr(self.model.get_submodule(parent_name), child, layer.base)
        self.layers.clear()


def trainable_count(injection: LoRAInjection) -> int:
    return sum(p.numel() for p in injection.parameters())
