"""The parsed form of every adapter file we read: per-module deltas as factors, and the key grammar.

ACE-Step 1.5 adapters reach users in several key layouts, all naming the same DiT modules:
- the official trainer wraps `model.decoder` with PEFT, so its `adapter_model.safetensors` says
  `base_model.model.layers.0.self_attn.q_proj.lora_A.weight` (relative to the decoder) and keeps `lora_alpha`
  in `adapter_config.json`; trainers that wrap the whole model write `base_model.model.decoder.layers…`;
- ComfyUI single files use `diffusion_model.decoder.layers.0.self_attn.q_proj.lora_A.weight` (or
  `.lora_down/.lora_up` with an optional per-module `.alpha`), kohya files `lora_unet_decoder_layers_0_…`;
- the official LoKr trainer (LyCORIS on the decoder) writes `lycoris_layers_0_self_attn_q_proj.lokr_w1` …,
  one `.alpha` per module and its settings as JSON in the safetensors metadata (`lokr_config`);
- DoRA adds a magnitude per module: PEFT's `lora_magnitude_vector` `[out]` or LyCORIS' `dora_scale`, whose
  shape says the axis (`[out, 1]` per output row, `[1, in]` per input column).

Everything is reduced to `ModuleDelta`s keyed by the module path from the model root
(`decoder.layers.0.self_attn.q_proj`), the names our `AceStepModel` and the official checkpoints use. The
scale rules are those of the tools that wrote each form (PEFT: alpha/r or alpha/√r with rsLoRA; ComfyUI and
LyCORIS: stored alpha / rank, or 1 without alpha), so a file means here what it means where it was made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

# Parts of a key after the module path, per algorithm. LoRA parts may carry ".weight" and an adapter name.
LORA_PARTS = {"lora_A": "down", "lora_B": "up", "lora_down": "down", "lora_up": "up"}
LOKR_PARTS = {"lokr_w1": "w1", "lokr_w1_a": "w1_a", "lokr_w1_b": "w1_b", "lokr_w2": "w2", "lokr_w2_a": "w2_a",
              "lokr_w2_b": "w2_b", "lokr_t2": "t2"}
LOHA_PARTS = {"hada_w1_a": "w1_a", "hada_w1_b": "w1_b", "hada_w2_a": "w2_a", "hada_w2_b": "w2_b",
              "hada_t1": "t1", "hada_t2": "t2"}
MAGNITUDE_PARTS = ("lora_magnitude_vector", "dora_scale")
SCALAR_PARTS = ("alpha",)
ALL_PARTS = {**LORA_PARTS, **LOKR_PARTS, **LOHA_PARTS, **{p: p for p in MAGNITUDE_PARTS + SCALAR_PARTS}}

# Prefixes in front of a dotted module path, and prefixes of the flat (underscore) forms.
DOTTED_PREFIXES = ("diffusion_model.", "base_model.model.", "model.")
FLAT_PREFIXES = ("lycoris_", "lora_unet_", "lora_transformer_")
MODEL_ROOTS = ("decoder", "encoder", "tokenizer", "detokenizer")
# Module names of the ACE-Step DiT that contain underscores, to turn flat names back into dotted paths.
# (With a model at hand, `lora.py` also matches flat names against the model's own modules.)
FLAT_SEGMENTS = frozenset({
    "self_attn", "cross_attn", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "proj_in", "proj_out", "time_embed", "time_embed_r", "linear_1", "linear_2", "time_proj",
    "condition_embedder", "lyric_encoder", "timbre_encoder", "text_projector", "embed_tokens",
    "attention_pooler", "audio_acoustic_proj", "project_in", "project_out",
})


@dataclass(frozen=True)
class ModuleDelta:
    """One module's change: factors, how they combine, the scale, and an optional DoRA magnitude.

    `kind` is "lora" (factors `down` [r, in…], `up` [out, r…]), "lokr" (`w1` or `w1_a`·`w1_b`, Kronecker
    `w2` or `w2_a`·`w2_b`) or "loha" (`(w1_a·w1_b) ⊙ (w2_a·w2_b)`). `scale` multiplies the product (alpha/rank
    and the like). `magnitude_axis` is "out" (one magnitude per output row: PEFT, LyCORIS `[out, 1]`) or
    "in" (one per input column: LyCORIS `[1, in]`).
    """

    kind: str
    factors: Mapping[str, torch.Tensor]
    scale: float
    rank: Optional[int] = None
    alpha: Optional[float] = None
    rslora: bool = False
    magnitude: Optional[torch.Tensor] = None
    magnitude_axis: Optional[str] = None
    source_keys: tuple[str, ...] = field(default=(), compare=False)

    @property
    def out_features(self) -> int:
        f = self.factors
        if self.kind == "lora":
            return f["up"].shape[0]
        if self.kind == "lokr":
            return self._w1_rows() * (f["w2"].shape[0] if "w2" in f else f["w2_a"].shape[0])
        return f["w1_a"].shape[0]

    @property
    def in_numel(self) -> int:
        """Elements per output row of the target weight (in_features, times the kernel size for a conv)."""
        f = self.factors
        if self.kind == "lora":
            return f["down"][0].numel()
        if self.kind == "lokr":
            w1_cols = f["w1"].shape[1] if "w1" in f else f["w1_b"].shape[1]
            w2_row = f["w2"][0].numel() if "w2" in f else f["w2_b"].numel() // f["w2_b"].shape[0]
            return w1_cols * w2_row
        return f["w1_b"][0].numel()

    @property
    def is_zero(self) -> bool:
        """True when the change is exactly nothing (an untrained module: a zero factor and no DoRA)."""
        return self.magnitude is None and any(t.count_nonzero() == 0 for t in self.factors.values())

    def _w1_rows(self) -> int:
        return self.factors["w1"].shape[0] if "w1" in self.factors else self.factors["w1_a"].shape[0]

    def dense_delta(self, shape: torch.Size, device: Optional[torch.device] = None) -> torch.Tensor:
        """scale · (product of the factors), float32, shaped like the target weight `shape`."""
        f = {k: v.to(device=device, dtype=torch.float32) for k, v in self.factors.items()}
        out, rest = shape[0], int(math.prod(shape[1:]))
        if self.kind == "lora":
            rank = f["down"].shape[0]
            product = f["up"].reshape(out, rank) @ f["down"].reshape(rank, rest)
        elif self.kind == "lokr":
            w1 = f["w1"] if "w1" in f else f["w1_a"] @ f["w1_b"]
            w2 = f["w2"] if "w2" in f else f["w2_a"] @ f["w2_b"].reshape(f["w2_b"].shape[0], -1)
            # The kernel dims of a conv sit on w2 only: w1 gets unit dims so the Kronecker product keeps them.
            w2 = w2.reshape(w2.shape[0], shape[1] // w1.shape[1], *shape[2:])
            product = torch.kron(w1.reshape(*w1.shape, *[1] * (len(shape) - 2)), w2)
        else:
            rank1, rank2 = f["w1_b"].shape[0], f["w2_b"].shape[0]
            product = ((f["w1_a"] @ f["w1_b"].reshape(rank1, -1)) * (f["w2_a"] @ f["w2_b"].reshape(rank2, -1)))
        return (product * self.scale).reshape(shape)

    def effective_delta(self, weight: torch.Tensor) -> torch.Tensor:
        """What this module adds to `weight` at scale 1, float32 (DoRA: magnitude·(W+ΔW)/‖W+ΔW‖ − W)."""
        delta = self.dense_delta(weight.shape, weight.device)
        if self.magnitude is None:
            return delta
        base = weight.float()
        merged = base + delta
        magnitude = self.magnitude.to(device=weight.device, dtype=torch.float32)
        if self.magnitude_axis == "out":
            norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (merged.dim() - 1))
        else:
            norm = merged.norm(dim=0, keepdim=True)
        return merged * (magnitude.reshape(norm.shape) / norm) - base


@dataclass(frozen=True)
class Adapter:
    """A parsed adapter file or folder: what it is and the change it makes to each module.

    `modules` maps module paths from the model root (`decoder.layers.0.self_attn.q_proj`) to their deltas.
    `config` is `adapter_config.json` (PEFT) or the JSON settings found in the file's metadata; `notes` are
    facts a user should know (an alpha that had to be assumed, untrained modules).
    """

    name: str
    path: Path
    format: str
    key_style: str
    modules: Mapping[str, ModuleDelta]
    config: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({d.kind for d in self.modules.values()}))

    @property
    def is_dora(self) -> bool:
        return any(d.magnitude is not None for d in self.modules.values())

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({d.rank for d in self.modules.values() if d.rank is not None}))

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(sorted({d.alpha for d in self.modules.values() if d.alpha is not None}))

    @property
    def target_modules(self) -> tuple[str, ...]:
        """Leaf names of the modules changed (`q_proj`, `k_proj`, …), as in PEFT's `target_modules`."""
        return tuple(sorted({leaf_name(name) for name in self.modules}))

    @property
    def base_model(self) -> Optional[str]:
        value = self.config.get("base_model_name_or_path")
        return value if isinstance(value, str) and value else None


def split_key(key: str) -> Optional[tuple[str, str]]:
    """`(module as written, part)` for an adapter key, or None when the key is not an adapter key.

    Accepted tails: `<part>` and `<part>.weight` and `<part>.<adapter name>.weight` (raw PEFT state dicts).
    """
    tokens = key.split(".")
    for index in range(len(tokens) - 1, 0, -1):
        part = tokens[index]
        if part not in ALL_PARTS:
            continue
        tail = tokens[index + 1:]
        weighted = part in LORA_PARTS or part == "lora_magnitude_vector"
        if not tail or (weighted and (tail == ["weight"] or (len(tail) == 2 and tail[1] == "weight"))):
            return ".".join(tokens[:index]), part
        return None
    return None


def canonical_module(written: str) -> tuple[str, str]:
    """(module path from the model root, key style) for a module name as written in a file."""
    name, styles = written, []
    changed = True
    while changed:
        changed = False
        for prefix in DOTTED_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
                styles.append(prefix)
    for prefix in FLAT_PREFIXES:
        if name.startswith(prefix):
            name = unflatten(name[len(prefix):])
            styles.append(prefix)
            break
    if name.split(".", 1)[0] not in MODEL_ROOTS:
        name = "decoder." + name
    return name, "+".join(dict.fromkeys(styles)) or "plain"


def unflatten(flat: str) -> str:
    """`layers_0_self_attn_q_proj` → `layers.0.self_attn.q_proj` (longest known segment first)."""
    tokens, parts, index = flat.split("_"), [], 0
    while index < len(tokens):
        for width in (3, 2, 1):
            candidate = "_".join(tokens[index:index + width])
            if width == 1 or candidate in FLAT_SEGMENTS:
                parts.append(candidate)
                index += width
                break
    return ".".join(parts)


def leaf_name(module: str) -> str:
    """The last named segment of a module path (`decoder.proj_in.1` → `proj_in`)."""
    return next(part for part in reversed(module.split(".")) if not part.isdigit())


def lora_scale(alpha: Optional[float], rank: int, rslora: bool) -> float:
    """alpha/r (alpha/√r with rsLoRA); 1 when no alpha is stored, as ComfyUI and LyCORIS read such files."""
    if alpha is None:
        return 1.0
    return alpha / (math.sqrt(rank) if rslora else rank)
