"""Configuration of the ACE-Step 1.5 DiT checkpoint (decoder, condition encoder, tokenizer, detokenizer).

Field names and defaults are those of the official `config.json`, so a checkpoint's file loads as it is.
The XL family keeps 2B-sized encoders; `encoder_view()` gives the config those sub-networks are built from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

SLIDING = "sliding_attention"
FULL = "full_attention"


@dataclass
class AceStepConfig:
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: Optional[int] = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    attention_bias: bool = False
    use_sliding_window: bool = True
    sliding_window: Optional[int] = 128
    layer_types: Optional[list[str]] = None
    in_channels: int = 192
    patch_size: int = 2
    audio_acoustic_hidden_dim: int = 64
    text_hidden_dim: int = 1024
    timbre_hidden_dim: int = 64
    num_lyric_encoder_hidden_layers: int = 8
    num_timbre_encoder_hidden_layers: int = 4
    num_attention_pooler_hidden_layers: int = 2
    pool_window_size: int = 5
    fsq_dim: int = 2048
    fsq_input_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    fsq_input_num_quantizers: int = 1
    encoder_hidden_size: Optional[int] = None
    encoder_intermediate_size: Optional[int] = None
    encoder_num_attention_heads: Optional[int] = None
    encoder_num_key_value_heads: Optional[int] = None
    is_turbo: Optional[bool] = None
    model_version: Optional[str] = None
    lyric_alignment_layers_config: Optional[dict] = None

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if not self.use_sliding_window:
            self.sliding_window = None
        if self.layer_types is None:
            self.layer_types = [SLIDING if i % 2 == 0 else FULL for i in range(self.num_hidden_layers)]
        self.layer_types = list(self.layer_types)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AceStepConfig":
        """Build from a `config.json` dict; keys the network does not use are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def encoder_width(self) -> int:
        return self.encoder_hidden_size or self.hidden_size

    @property
    def is_xl(self) -> bool:
        """XL behaviour (timbre special token, float32 quantizer) follows from a wider decoder than encoder."""
        return self.encoder_hidden_size is not None and self.encoder_hidden_size != self.hidden_size

    @property
    def family(self) -> str:
        return "xl" if self.is_xl else "2b"

    def encoder_view(self) -> "AceStepConfig":
        """The config the encoder, tokenizer, detokenizer and null embedding are built from."""
        return dataclasses.replace(
            self,
            hidden_size=self.encoder_width,
            intermediate_size=self.encoder_intermediate_size or self.intermediate_size,
            num_attention_heads=self.encoder_num_attention_heads or self.num_attention_heads,
            num_key_value_heads=self.encoder_num_key_value_heads or self.num_key_value_heads,
        )

    def window_for_layer(self, index: int) -> Optional[int]:
        """Sliding-window half width of layer `index` of any stack, or None for full attention."""
        return self.sliding_window if self.layer_types[index] == SLIDING else None
