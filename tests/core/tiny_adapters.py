"""Adapters for the tiny golden DiT in every layout users have, and the formulas they stand for.

Key names are written here from the formats' descriptions (the official PEFT trainer wraps the decoder, so
`base_model.model.layers.…`; ComfyUI `diffusion_model.decoder.…` with `.lora_A/.lora_B` or
`.lora_down/.lora_up/.alpha`; kohya `lora_unet_decoder_…`; LyCORIS `lycoris_layers_…` with `lokr_*`/`hada_*`),
independently of the reader, and the expected weight changes are computed here with plain formulas so the tests
compare two implementations. Factors are random and non-zero so that every module really changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

import torch
from safetensors.torch import load_file, save_file

from acestep_core.checkpoints import load_dit

GOLDEN_DIT = Path(__file__).parents[1] / "fixtures" / "golden" / "tiny_2b"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]
Tensors = dict[str, torch.Tensor]
# LoKr/LoHa test factorisation: w1 is [4, 8]; every tiny attention width (32, 64) divides by both.
KRON_W1 = (4, 8)


def tiny_dit() -> torch.nn.Module:
    """The golden tiny 2B DiT (float32, CPU), freshly loaded."""
    return load_dit(GOLDEN_DIT, require_silence_latent=False).model


def golden_shapes(folder: Path = GOLDEN_DIT) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in load_file(folder / "model.safetensors").items()}


def attention_modules(shapes: Mapping[str, tuple[int, ...]], targets: tuple[str, ...] = ATTENTION) -> list[str]:
    """Decoder attention projections (self and cross) named like the official checkpoint, e.g.
    `decoder.layers.0.self_attn.q_proj`."""
    return sorted(k[:-len(".weight")] for k in shapes
                  if k.startswith("decoder.layers.") and k.endswith(tuple(f"attn.{t}.weight" for t in targets)))


def random_lora(shapes: Mapping[str, tuple[int, ...]], modules: list[str], rank: int, seed: int) -> Factors:
    """`{module: (A [r, in], B [out, r])}` with non-zero entries (a trained adapter, not a fresh one)."""
    generator = torch.Generator().manual_seed(seed)
    factors = {}
    for module in modules:
        out, inp = shapes[module + ".weight"]
        a = torch.randn(rank, inp, generator=generator) / inp ** 0.5
        b = torch.randn(out, rank, generator=generator) * 0.1
        factors[module] = (a, b)
    return factors


def random_magnitudes(shapes: Mapping[str, tuple[int, ...]], modules: list[str], seed: int) -> Tensors:
    generator = torch.Generator().manual_seed(seed)
    return {m: 0.5 + torch.rand(shapes[m + ".weight"][0], generator=generator) for m in modules}


def _relative(module: str) -> str:
    return module[len("decoder."):]


def write_peft_folder(folder: Path, factors: Factors, *, r: int, alpha: float, use_dora: bool = False,
                      magnitudes: Optional[Tensors] = None, use_rslora: bool = False,
                      alpha_pattern: Optional[dict] = None, rank_pattern: Optional[dict] = None,
                      base_model: Optional[str] = None, whole_model: bool = False) -> Path:
    """A PEFT folder as the official trainer writes it (decoder-relative keys; `whole_model` wraps the root)."""
    tensors = {}
    for module, (a, b) in factors.items():
        name = "base_model.model." + (module if whole_model else _relative(module))
        tensors[f"{name}.lora_A.weight"] = a
        tensors[f"{name}.lora_B.weight"] = b
        if magnitudes is not None:
            tensors[f"{name}.lora_magnitude_vector"] = magnitudes[module]
    config = {"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION", "r": r, "lora_alpha": alpha,
              "target_modules": list(ATTENTION), "use_dora": use_dora, "use_rslora": use_rslora,
              "alpha_pattern": alpha_pattern or {}, "rank_pattern": rank_pattern or {}, "lora_dropout": 0.1,
              "bias": "none", "fan_in_fan_out": False, "base_model_name_or_path": base_model}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


LORA_STYLES = {
    # style: (module name as written, down part, up part)
    "diffusion_model": (lambda m: f"diffusion_model.{m}", "lora_A.weight", "lora_B.weight"),
    "base_model": (lambda m: f"base_model.model.{_relative(m)}", "lora_A.weight", "lora_B.weight"),
    "down_up": (lambda m: f"diffusion_model.{m}", "lora_down.weight", "lora_up.weight"),
    "kohya": (lambda m: "lora_unet_" + m.replace(".", "_"), "lora_down.weight", "lora_up.weight"),
    "peft_adapter_name": (lambda m: f"base_model.model.{_relative(m)}", "lora_A.default.weight",
                          "lora_B.default.weight"),
}


def write_lora_file(path: Path, factors: Factors, *, style: str, alpha: Optional[float] = None,
                    dora_scale: Optional[Tensors] = None, metadata: Optional[dict] = None) -> Path:
    """A single-file LoRA in one of `LORA_STYLES`, with a per-module `.alpha` when `alpha` is given."""
    name_of, down, up = LORA_STYLES[style]
    tensors = {}
    for module, (a, b) in factors.items():
        name = name_of(module)
        tensors[f"{name}.{down}"] = a
        tensors[f"{name}.{up}"] = b
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        if dora_scale is not None:
            tensors[f"{name}.dora_scale"] = dora_scale[module]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path, metadata=metadata)
    return path


def random_lokr(shapes: Mapping[str, tuple[int, ...]], modules: list[str], rank: Optional[int], seed: int,
                split_w1: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """LoKr factors per module: w1 [4, 8] (or w1_a·w1_b), w2 = w2_a·w2_b of `rank` (full w2 if rank None)."""
    generator = torch.Generator().manual_seed(seed)
    a, c = KRON_W1
    result = {}
    for module in modules:
        out, inp = shapes[module + ".weight"]
        b, d = out // a, inp // c
        parts = {}
        if split_w1:
            parts["lokr_w1_a"] = torch.randn(a, 2, generator=generator)
            parts["lokr_w1_b"] = torch.randn(2, c, generator=generator)
        else:
            parts["lokr_w1"] = torch.randn(a, c, generator=generator)
        if rank is None:
            parts["lokr_w2"] = torch.randn(b, d, generator=generator) * 0.05
        else:
            parts["lokr_w2_a"] = torch.randn(b, rank, generator=generator) * 0.1
            parts["lokr_w2_b"] = torch.randn(rank, d, generator=generator) * 0.1
        result[module] = parts
    return result


def random_loha(shapes: Mapping[str, tuple[int, ...]], modules: list[str], rank: int,
                seed: int) -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for module in modules:
        out, inp = shapes[module + ".weight"]
        result[module] = {"hada_w1_a": torch.randn(out, rank, generator=generator) * 0.3,
                          "hada_w1_b": torch.randn(rank, inp, generator=generator) * 0.3,
                          "hada_w2_a": torch.randn(out, rank, generator=generator) * 0.3,
                          "hada_w2_b": torch.randn(rank, inp, generator=generator) * 0.3}
    return result


def write_lycoris_file(path: Path, parts: Mapping[str, Mapping[str, torch.Tensor]], *, alpha: Optional[float],
                       algo: str = "lokr", extra: Optional[Mapping[str, Tensors]] = None,
                       config: Optional[dict] = None) -> Path:
    """LyCORIS keys relative to the decoder (`lycoris_layers_0_self_attn_q_proj.lokr_w1`), as the official LoKr
    trainer saves them, with its `lokr_config` JSON in the metadata."""
    tensors = {}
    for module, factors in parts.items():
        name = "lycoris_" + _relative(module).replace(".", "_")
        for part, tensor in factors.items():
            tensors[f"{name}.{part}"] = tensor
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
        for part, values in (extra or {}).items():
            tensors[f"{name}.{part}"] = values[module]
    metadata = {"algo": algo, "format": "lycoris"}
    if config is not None:
        metadata[f"{algo}_config"] = json.dumps(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path, metadata=metadata)
    return path


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * (b.double() @ a.double())


def lokr_delta(parts: Mapping[str, torch.Tensor], scale: float) -> torch.Tensor:
    w1 = parts["lokr_w1"].double() if "lokr_w1" in parts else parts["lokr_w1_a"].double() @ parts["lokr_w1_b"].double()
    w2 = parts["lokr_w2"].double() if "lokr_w2" in parts else parts["lokr_w2_a"].double() @ parts["lokr_w2_b"].double()
    # Kronecker product written out: block (i, j) of the result is w1[i, j] · w2.
    return scale * torch.cat([torch.cat([w1[i, j] * w2 for j in range(w1.shape[1])], dim=1)
                              for i in range(w1.shape[0])], dim=0)


def loha_delta(parts: Mapping[str, torch.Tensor], scale: float) -> torch.Tensor:
    p = {k: v.double() for k, v in parts.items()}
    return scale * (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])


def dora_weight(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """PEFT's DoRA merge: each output row of W + ΔW rescaled to the learned magnitude."""
    merged = weight.double() + delta
    return magnitude.double()[:, None] * merged / merged.norm(dim=1, keepdim=True)
