"""What a checkpoint is: DiT family (2B / XL) and variant (turbo / sft / base), configs inferred from weights.

The rules are those of shared/spec/dit.md §1.3:
- 2B vs XL is a fact of the weights (XL ⇔ the decoder is wider than the condition encoder), so it is read from
  the config that fits the weights and is never guessed from a name.
- turbo vs not comes from `is_turbo` in `config.json` (the field the official handler reads); without it, from
  name tokens ("turbo", "sft", "base" bounded by start/end or one of `/ \\ . _ -`, as the official UI matches
  them) of the model folder or file, then from `model_version` in the config. Nothing in the weights tells
  turbo, sft and base apart, so when no source says, the variant stays unknown and `describe()` says so.
- Without `config.json` (ComfyUI files) the config is rebuilt from tensor shapes; the values weights cannot
  hold (sliding window, layer types, RoPE theta, RMSNorm eps, FSQ levels) take the `AceStepConfig` defaults,
  which are the released models' values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from acestep_core.constants import FSQ_LEVELS
from acestep_core.errors import AceStepError

Shapes = Mapping[str, tuple[int, ...]]

VARIANTS = ("turbo", "sft", "base")
TURBO_FLAVOURS = ("shift1", "shift3", "continuous")
_TOKEN_SPLIT = re.compile(r"[/\\._\-\s]+")
_FAMILY_NAMES = {"2b": "2B", "xl": "XL"}
_KIND_NAMES = {"dit": "DiT", "vae": "VAE", "text_encoder": "text encoder (Qwen3-Embedding)", "lm": "5 Hz LM",
               "qwen": "Qwen3 model (text encoder or LM, role unknown)"}

QWEN_ROPE_THETA = 1_000_000.0
QWEN_RMS_NORM_EPS = 1e-6
QWEN_MAX_POSITIONS = {"text_encoder": 32768, "lm": 40960}


@dataclass(frozen=True)
class DitVariant:
    """Family and variant of a DiT checkpoint, and which source decided the variant.

    `variant` is "turbo", "sft", "base" or None (unknown); `is_turbo` can be known when sft vs base is not
    (a config with `is_turbo: false` in a folder whose name says neither). `flavour` names the turbo
    re-releases ("shift1", "shift3", "continuous"); they share the turbo network and sampler.
    """

    family: str
    variant: Optional[str]
    is_turbo: Optional[bool]
    flavour: Optional[str] = None
    source: str = "unknown"

    def describe(self) -> str:
        family = _FAMILY_NAMES.get(self.family, self.family)
        if self.variant is not None:
            what = self.variant + (f" ({self.flavour})" if self.flavour else "")
        elif self.is_turbo is False:
            what = "sft or base (not turbo)"
        else:
            what = "variant unknown (turbo/sft/base)"
        return f"ACE-Step 1.5 {family} {what}"


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded network came from and what it is, for logs, node outputs and error messages."""

    kind: str
    path: Path
    weights: tuple[Path, ...]
    layout: str
    stored_dtype: str
    config_source: str
    config: Any = None
    dit: Optional[DitVariant] = None
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        what = self.dit.describe() if self.dit is not None else f"ACE-Step 1.5 {_KIND_NAMES.get(self.kind, self.kind)}"
        files = f"{len(self.weights)} shards" if len(self.weights) > 1 else self.weights[0].name
        text = (f"{what} from {self.path} ({self.layout} layout, {files}, stored {self.stored_dtype}, "
                f"config: {self.config_source})")
        if self.dit is not None and self.dit.variant is not None:
            text += f"; variant from {self.dit.source}"
        return text + "".join(f"; {note}" for note in self.notes)


def name_tokens(*names: str) -> set[str]:
    """Lower-case tokens of folder/file names split on `/ \\ . _ -` and spaces."""
    return {token for name in names for token in _TOKEN_SPLIT.split(name.lower()) if token}


def _variant_in(tokens: set[str]) -> Optional[str]:
    """turbo beats sft beats base (`acestep-v15-base-sft-fix-inst` is an sft model in the official table)."""
    return next((v for v in VARIANTS if v in tokens), None)


def identify_dit(family: str, config_json: Optional[Mapping[str, Any]], names: tuple[str, ...],
                 override: Optional[str] = None) -> DitVariant:
    """Variant of a DiT with the given family from its `config.json` dict (if any) and folder/file names."""
    tokens = name_tokens(*names)
    flavour = next((f for f in TURBO_FLAVOURS if f in tokens), None)
    if override is not None:
        if override not in VARIANTS:
            raise AceStepError(f"DiT variant {override!r} is not one of {', '.join(VARIANTS)}.")
        return DitVariant(family, override, override == "turbo", flavour if override == "turbo" else None, "given")
    config_json = config_json or {}
    is_turbo = config_json.get("is_turbo")
    is_turbo = is_turbo if isinstance(is_turbo, bool) else None
    from_names = _variant_in(tokens)
    version = config_json.get("model_version")
    from_version = _variant_in(name_tokens(version)) if isinstance(version, str) else None
    if is_turbo is True:
        return DitVariant(family, "turbo", True, flavour, "config.json")
    if is_turbo is False:
        for variant, source in ((from_names, "name"), (from_version, "config.json model_version")):
            if variant in ("sft", "base"):
                return DitVariant(family, variant, False, None, f"config.json + {source}")
        return DitVariant(family, None, False, None, "config.json")
    for variant, source in ((from_names, "name"), (from_version, "config.json model_version")):
        if variant is not None:
            return DitVariant(family, variant, variant == "turbo", flavour if variant == "turbo" else None, source)
    return DitVariant(family, None, None, None, "unknown")


def _need(shapes: Shapes, key: str, source: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise AceStepError(
            f"{source}: cannot infer the {what} configuration from the weights: tensor {key!r} is missing. "
            "Put the config.json shipped with the model next to the file, or use a complete checkpoint."
        )
    return shapes[key]


def _count(shapes: Shapes, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max((int(m.group(1)) for m in map(pattern.match, shapes) if m), default=-1)


def infer_dit_config(shapes: Shapes, source: str) -> dict[str, Any]:
    """`config.json` values of a DiT rebuilt from its official-named tensor shapes (dit.md §1.3)."""
    def need(key: str) -> tuple[int, ...]:
        return _need(shapes, key, source, "DiT")

    hidden = need("decoder.norm_out.weight")[0]
    head_dim = need("decoder.layers.0.self_attn.q_norm.weight")[0]
    in_channels, patch = need("decoder.proj_in.1.weight")[1:3]
    levels, fsq_dim = need("tokenizer.quantizer.project_in.weight")
    if levels != len(FSQ_LEVELS):
        raise AceStepError(
            f"{source}: the audio tokenizer quantizes {levels} dimensions; only the released FSQ levels "
            f"{list(FSQ_LEVELS)} can be assumed without a config.json. Put the model's config.json next to the file."
        )
    pooler_layers = _count(shapes, "tokenizer.attention_pooler.layers.")
    if _count(shapes, "detokenizer.layers.") != pooler_layers:
        raise AceStepError(
            f"{source}: the detokenizer has {_count(shapes, 'detokenizer.layers.')} layers but the attention pooler "
            f"{pooler_layers}; one config value sets both. The file is not a released ACE-Step 1.5 DiT."
        )
    decoder = {
        "hidden_size": hidden,
        "intermediate_size": need("decoder.layers.0.mlp.gate_proj.weight")[0],
        "num_attention_heads": need("decoder.layers.0.self_attn.q_proj.weight")[0] // head_dim,
        "num_key_value_heads": need("decoder.layers.0.self_attn.k_proj.weight")[0] // head_dim,
    }
    encoder_layer = "encoder.lyric_encoder.layers.0."
    encoder = {
        "hidden_size": need("decoder.condition_embedder.weight")[1],
        "intermediate_size": need(encoder_layer + "mlp.gate_proj.weight")[0],
        "num_attention_heads": need(encoder_layer + "self_attn.q_proj.weight")[0] // head_dim,
        "num_key_value_heads": need(encoder_layer + "self_attn.k_proj.weight")[0] // head_dim,
    }
    config: dict[str, Any] = {
        **decoder,
        "num_hidden_layers": _count(shapes, "decoder.layers."),
        "head_dim": head_dim,
        "in_channels": in_channels,
        "patch_size": patch,
        "audio_acoustic_hidden_dim": need("decoder.proj_out.1.weight")[1],
        "text_hidden_dim": need("encoder.text_projector.weight")[1],
        "timbre_hidden_dim": need("encoder.timbre_encoder.embed_tokens.weight")[1],
        "num_lyric_encoder_hidden_layers": _count(shapes, "encoder.lyric_encoder.layers."),
        "num_timbre_encoder_hidden_layers": _count(shapes, "encoder.timbre_encoder.layers."),
        "num_attention_pooler_hidden_layers": pooler_layers,
        "pool_window_size": need("detokenizer.special_tokens")[1],
        "fsq_dim": fsq_dim,
    }
    if encoder != decoder:
        config.update({f"encoder_{key}": value for key, value in encoder.items()})
    return config


def infer_qwen_config(shapes: Shapes, role: str, source: str) -> dict[str, Any]:
    """A Qwen3 `config.json` dict rebuilt from an official-named (un-prefixed) stack's tensor shapes.

    RoPE theta, RMSNorm eps and the context length are not in the weights; they take the values every
    ACE-Step Qwen3 model uses (lm-text-vae.md §1.1, §2.1). Embeddings are tied unless `lm_head.weight` exists.
    """
    def need(key: str) -> tuple[int, ...]:
        return _need(shapes, key, source, "Qwen3")

    vocab, hidden = need("embed_tokens.weight")
    head_dim = need("layers.0.self_attn.q_norm.weight")[0]
    return {
        "architectures": ["Qwen3ForCausalLM" if role == "lm" else "Qwen3Model"],
        "model_type": "qwen3",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": need("layers.0.mlp.gate_proj.weight")[0],
        "num_hidden_layers": _count(shapes, "layers."),
        "num_attention_heads": need("layers.0.self_attn.q_proj.weight")[0] // head_dim,
        "num_key_value_heads": need("layers.0.self_attn.k_proj.weight")[0] // head_dim,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "attention_bias": False,
        "rms_norm_eps": QWEN_RMS_NORM_EPS,
        "rope_theta": QWEN_ROPE_THETA,
        "max_position_embeddings": QWEN_MAX_POSITIONS.get(role, QWEN_MAX_POSITIONS["text_encoder"]),
        "tie_word_embeddings": "lm_head.weight" not in shapes,
    }


def infer_vae_config(shapes: Shapes, source: str) -> dict[str, Any]:
    """Oobleck `config.json` values rebuilt from diffusers-named tensor shapes (the sample rate is not in the
    weights and keeps the 48 kHz default)."""
    def need(key: str) -> tuple[int, ...]:
        return _need(shapes, key, source, "VAE")

    width, audio_channels, _ = need("encoder.conv1.weight_v")
    blocks = _count(shapes, "encoder.block.")
    outs = [need(f"encoder.block.{i}.conv1.weight_v") for i in range(blocks)]
    return {
        "audio_channels": audio_channels,
        "channel_multiples": [out // width for out, _, _ in outs],
        "decoder_channels": need("decoder.conv2.weight_v")[1],
        "decoder_input_channels": need("decoder.conv1.weight_v")[1],
        "downsampling_ratios": [kernel // 2 for _, _, kernel in outs],
        "encoder_hidden_size": width,
    }
