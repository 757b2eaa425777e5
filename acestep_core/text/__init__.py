"""The DiT's text side: prompt templates (`prompts`), the Qwen tokenizer and the Qwen3 text encoder."""

from acestep_core.text.encoder import TextConditioning, TextEncoder, TokenBatch, build_qwen3_config, pad_right
from acestep_core.text.prompts import (
    TRACK_NAMES,
    PromptBatch,
    TextPrompts,
    TextRequest,
    build_prompts,
    caption_prompt,
    extract_caption,
    lyrics_prompt,
    metas_block,
    task_instruction,
)
from acestep_core.text.tokenizer import TextTokenizer, load_tokenizer

__all__ = [
    "TRACK_NAMES",
    "PromptBatch",
    "TextConditioning",
    "TextEncoder",
    "TextPrompts",
    "TextRequest",
    "TextTokenizer",
    "TokenBatch",
    "build_prompts",
    "build_qwen3_config",
    "caption_prompt",
    "extract_caption",
    "load_tokenizer",
    "lyrics_prompt",
    "metas_block",
    "pad_right",
    "task_instruction",
]
