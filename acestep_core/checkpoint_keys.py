"""Finding the networks inside a checkpoint file and renaming their tensors to the official names.

This is the only place where layouts other than the official one are understood (design.md): our modules carry
the official names, and every other spelling is mapped here, once, by name and shape only (no tensor is read):

- DiT: the official file and ComfyUI's `diffusion_models/acestep_v1.5_*.safetensors` have no prefix; inside a
  ComfyUI checkpoint (all-in-one) the DiT sits under `model.diffusion_model.` (ComfyUI's save prefix for every
  diffusion model, `comfy/supported_models_base.py`).
- VAE: diffusers names (`decoder.block.0.conv_t1.weight_g`) or ComfyUI's / Stable Audio Tools' sequential names
  (`decoder.layers.1.layers.1.weight_g`), with weight norm stored as `weight_g`/`weight_v` or as
  `parametrizations.weight.original0`/`original1`, and snake parameters as `[1, C, 1]` or `[C]`. Inside an
  all-in-one checkpoint it sits under `vae.` (ComfyUI's `ACEStep15.vae_key_prefix`).
- Qwen3 stacks (text encoder and 5 Hz LM): the official files have no prefix, ComfyUI's text-encoder files and
  Hugging Face's causal-LM saves use `model.`, an all-in-one checkpoint `text_encoders.<name>.transformer.model.`
  with `<name>` = `qwen3_06b` for the text encoder and `qwen3_2b` / `qwen3_4b` for the LM
  (`comfy/text_encoders/ace15.py`).

Prefixes are not hard-coded: each network is found by a marker tensor whose name ends the same way in every
layout, and whatever stands before the marker is the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from acestep_core.checkpoint_io import CheckpointFiles, TensorRef
from acestep_core.constants import NUM_AUDIO_CODES

DIT = "dit"
VAE = "vae"
QWEN = "qwen"

TEXT_ENCODER = "text_encoder"
LM = "lm"
QWEN_TEXT_VOCAB = 151669
COMFY_TEXT_ENCODER_NAME = "qwen3_06b"

_DIT_MARKERS = ("null_condition_emb", "decoder.proj_in.1.weight", "decoder.condition_embedder.weight")
_VAE_DIFFUSERS_MARKERS = ("decoder.conv1.weight_v", "decoder.conv1.parametrizations.weight.original1")
_VAE_COMFY_MARKERS = ("decoder.layers.0.weight_v", "decoder.layers.0.parametrizations.weight.original1")
_QWEN_MARKER = "embed_tokens.weight"
_DERIVED_BUFFER = "rotary_emb.inv_freq"

_WEIGHT_NORM_NAMES = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
_COMFY_VAE_TOP = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_COMFY_VAE_SUB = re.compile(r"^layers\.(\d+)\.(.+)$")
_RESIDUAL_PARTS = ("snake1", "conv1", "snake2", "conv2")


@dataclass(frozen=True)
class Component:
    """One network found in a checkpoint, its tensors keyed by the official names.

    `layout` says how it was stored: "official" (the names of the official files: no prefix, diffusers names
    for the VAE), "comfyui" (ComfyUI's VAE names), "comfyui-checkpoint" (inside an all-in-one file),
    "transformers" (a Qwen3 stack under `model.`, as transformers and ComfyUI save it) or "prefixed";
    `name` is ComfyUI's sub-model name inside an all-in-one checkpoint (e.g. "qwen3_06b"), else "".
    """

    kind: str
    prefix: str
    layout: str
    refs: dict[str, TensorRef]
    name: str = ""

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: ref.shape for key, ref in self.refs.items()}

    def describe(self) -> str:
        what = {DIT: "an ACE-Step DiT", VAE: "an Oobleck VAE", QWEN: "a Qwen3 text encoder/LM"}[self.kind]
        where = f" under '{self.prefix}'" if self.prefix else ""
        return f"{what} ({self.layout} layout{where})"


def find_components(files: CheckpointFiles) -> list[Component]:
    """Every DiT, VAE and Qwen3 stack in the checkpoint, in that order."""
    keys = files.tensors
    found = [_dit(files, p) for p in _prefixes(keys, _DIT_MARKERS)]
    found += [_vae_diffusers(files, p) for p in _prefixes(keys, _VAE_DIFFUSERS_MARKERS)]
    found += [_vae_comfy(files, p) for p in _prefixes(keys, _VAE_COMFY_MARKERS)
              if f"{p}decoder.layers.1.layers.0.alpha" in keys or f"{p}decoder.layers.1.layers.0.beta" in keys]
    found += [_qwen(files, p) for p in _prefixes(keys, (_QWEN_MARKER,))
              if f"{p}embed_tokens.bias" not in keys and f"{p}norm.weight" in keys
              and f"{p}layers.0.input_layernorm.weight" in keys]
    return found


def _prefixes(keys: dict[str, TensorRef], markers: tuple[str, ...]) -> list[str]:
    out = []
    for key in keys:
        for marker in markers:
            if key.endswith(marker):
                prefix = key[: -len(marker)]
                if (prefix == "" or prefix.endswith(".")) and prefix not in out:
                    out.append(prefix)
    return sorted(out)


def _under(files: CheckpointFiles, prefix: str) -> dict[str, TensorRef]:
    return {key[len(prefix):]: ref for key, ref in files.tensors.items() if key.startswith(prefix)}


def _layout(prefix: str, plain: str) -> str:
    if prefix == "":
        return plain
    return "comfyui-checkpoint" if prefix in ("model.diffusion_model.", "vae.") else "prefixed"


def _dit(files: CheckpointFiles, prefix: str) -> Component:
    refs = {k: r for k, r in _under(files, prefix).items() if not k.endswith(_DERIVED_BUFFER)}
    return Component(DIT, prefix, _layout(prefix, "official"), refs)


def _vae_diffusers(files: CheckpointFiles, prefix: str) -> Component:
    refs = {_weight_norm_name(k): _snake_shape(k, r) for k, r in _under(files, prefix).items()}
    return Component(VAE, prefix, _layout(prefix, "official"), refs)


def _vae_comfy(files: CheckpointFiles, prefix: str) -> Component:
    stored = _under(files, prefix)
    blocks = {side: _comfy_block_count(stored, side) for side in ("encoder", "decoder")}
    refs = {}
    for key, ref in stored.items():
        name = _comfy_vae_name(key, blocks)
        refs[name or key] = _snake_shape(key, ref)
    return Component(VAE, prefix, _layout(prefix, "comfyui"), refs)


def _comfy_block_count(stored: dict[str, TensorRef], side: str) -> int:
    """Blocks between the input conv (layer 0) and the final snake + conv (the last two layers)."""
    indices = [int(m.group(2)) for m in map(_COMFY_VAE_TOP.match, stored) if m and m.group(1) == side]
    return max(indices, default=2) - 2


def _comfy_vae_name(key: str, blocks: dict[str, int]) -> Optional[str]:
    """diffusers name of a Stable-Audio-Tools VAE tensor, or None when the name fits no known position."""
    top = _COMFY_VAE_TOP.match(key)
    if top is None:
        return None
    side, index, tail = top.group(1), int(top.group(2)), _weight_norm_name(top.group(3))
    count = blocks[side]
    if index == 0:
        return f"{side}.conv1.{tail}"
    if index == count + 1:
        return f"{side}.snake1.{tail}"
    if index == count + 2:
        return f"{side}.conv2.{tail}"
    sub = _COMFY_VAE_SUB.match(tail)
    if sub is None or index > count:
        return None
    block = f"{side}.block.{index - 1}"
    position, inner = int(sub.group(1)), sub.group(2)
    # encoder block: res units 0-2, snake 3, strided conv 4; decoder block: snake 0, transposed conv 1, res units 2-4
    named = {3: "snake1", 4: "conv1"} if side == "encoder" else {0: "snake1", 1: "conv_t1"}
    if position in named:
        return f"{block}.{named[position]}.{inner}"
    unit = position + 1 if side == "encoder" else position - 1
    part = _COMFY_VAE_SUB.match(inner)
    if not 1 <= unit <= 3 or part is None or int(part.group(1)) >= len(_RESIDUAL_PARTS):
        return None
    return f"{block}.res_unit{unit}.{_RESIDUAL_PARTS[int(part.group(1))]}.{part.group(2)}"


def _weight_norm_name(key: str) -> str:
    for new_style, old_style in _WEIGHT_NORM_NAMES.items():
        if key.endswith(new_style):
            return key[: -len(new_style)] + old_style
    return key


def _snake_shape(key: str, ref: TensorRef) -> TensorRef:
    """Snake `alpha`/`beta` stored as `[C]` are delivered as the `[1, C, 1]` our module holds."""
    if key.endswith((".alpha", ".beta")) and len(ref.stored_shape) == 1:
        return ref.reshaped((1, ref.stored_shape[0], 1))
    return ref


def _qwen(files: CheckpointFiles, prefix: str) -> Component:
    refs = {k: r for k, r in _under(files, prefix).items() if not k.endswith(_DERIVED_BUFFER)}
    if prefix.endswith("model."):
        head = files.tensors.get(prefix[: -len("model.")] + "lm_head.weight")
        if head is not None:
            refs["lm_head.weight"] = head
    match = re.match(r"^text_encoders\.([^.]+)\.", prefix)
    layouts = {"": "official", "model.": "transformers"}
    layout = layouts.get(prefix, "comfyui-checkpoint" if match else "prefixed")
    return Component(QWEN, prefix, layout, refs, name=match.group(1) if match else "")


def qwen_role(component: Component) -> Optional[str]:
    """TEXT_ENCODER or LM when the stack says which it is, else None.

    ComfyUI's sub-model name decides inside an all-in-one checkpoint; otherwise the vocabulary does: the
    Qwen3-Embedding text encoder has 151669 rows, the 5 Hz LMs add 65535 audio-code tokens; a plain Qwen3
    vocabulary (151936) is neither.
    """
    if component.name:
        return TEXT_ENCODER if component.name == COMFY_TEXT_ENCODER_NAME else LM
    vocab = component.refs["embed_tokens.weight"].shape[0]
    if vocab == QWEN_TEXT_VOCAB:
        return TEXT_ENCODER
    return LM if vocab >= QWEN_TEXT_VOCAB + NUM_AUDIO_CODES else None
