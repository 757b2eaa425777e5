"""The 5 Hz LM's chat prompts for every mode, byte for byte as the official planner renders them.

The LM was trained on Qwen's ChatML layout: a system turn `# Instruction\n{instruction}\n\n`, a user
turn, then an open assistant turn (lm-text-vae.md §2.3). The official code renders these with the
tokenizer's chat template; the template only concatenates, so we concatenate the same pieces and do
not depend on a template file (the golden prompts in tests/fixtures are the final word). Inputs go in
raw: mode functions (`modes.py`) decide what replaces empty inputs.
"""

from __future__ import annotations

GENERATE_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
UNDERSTAND_INSTRUCTION = "Understand the given musical conditions and describe the audio semantics accordingly:"
INSPIRE_INSTRUCTION = "Expand the user's input into a more detailed and specific musical description:"
REWRITE_INSTRUCTION = "Format the user's input into a more detailed and specific musical description:"
NO_USER_INPUT = "NO USER INPUT"
EMPTY_COT = "<think>\n\n</think>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def chat_prompt(instruction: str, user_content: str) -> str:
    """System and user turns, then the opening of the assistant turn the LM continues."""
    return (f"{IM_START}system\n# Instruction\n{instruction}\n\n{IM_END}\n"
            f"{IM_START}user\n{user_content}{IM_END}\n"
            f"{IM_START}assistant\n")


def has_negative_prompt(negative_prompt: str | None) -> bool:
    """Whether a negative prompt says something: empty text and `NO USER INPUT` mean "none"."""
    return bool(negative_prompt and negative_prompt.strip() and negative_prompt.strip() != NO_USER_INPUT)


def _caption_and_lyrics(caption: str, lyrics: str) -> str:
    return f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"


def think_prompt(caption: str, lyrics: str) -> str:
    """Phase 1 (the CoT metadata), conditional."""
    return chat_prompt(GENERATE_INSTRUCTION, _caption_and_lyrics(caption, lyrics))


def think_uncond_prompt(lyrics: str, negative_prompt: str = NO_USER_INPUT) -> str:
    """Phase 1, unconditional: the negative prompt takes the caption's place, or the caption is dropped."""
    if has_negative_prompt(negative_prompt):
        return chat_prompt(GENERATE_INSTRUCTION, _caption_and_lyrics(negative_prompt, lyrics))
    return chat_prompt(GENERATE_INSTRUCTION, f"# Lyric\n{lyrics}\n")


def codes_prompt(caption: str, lyrics: str, cot: str) -> str:
    """Phase 2 (audio codes): the CoT is the start of the open assistant turn; codes follow `</think>\n\n`."""
    return think_prompt(caption, lyrics) + cot + "\n\n"


def codes_uncond_prompt(caption: str, lyrics: str, negative_prompt: str = NO_USER_INPUT,
                        legacy: bool = False) -> str:
    """Phase 2, unconditional: only the negative prompt (or `NO USER INPUT`) and an empty CoT, as in training.

    `legacy` restores the official A/B option `use_legacy_cfg_prompt`: the caption/lyrics wrapper with the
    negative prompt or else the original caption.
    """
    if legacy:
        shown = negative_prompt if has_negative_prompt(negative_prompt) else caption
        return think_prompt(shown, lyrics) + EMPTY_COT + "\n\n"
    user = negative_prompt if has_negative_prompt(negative_prompt) else NO_USER_INPUT
    return chat_prompt(GENERATE_INSTRUCTION, user) + EMPTY_COT + "\n\n"


def understand_prompt(codes: str) -> str:
    """Understand: audio codes (one token each) → metadata and lyrics; `NO USER INPUT` asks for a random song."""
    return chat_prompt(UNDERSTAND_INSTRUCTION, codes)


def sample_prompt(query: str, instrumental: bool) -> str:
    """Simple mode / create sample: a short description and the instrumental flag → a whole song spec."""
    return chat_prompt(INSPIRE_INSTRUCTION, f"{query}\n\ninstrumental: {'true' if instrumental else 'false'}")


def format_prompt(caption: str, lyrics: str) -> str:
    """Format / rewrite: caption and lyrics → richer caption, metadata, formatted lyrics (no newline at the end)."""
    return chat_prompt(REWRITE_INSTRUCTION, f"# Caption\n{caption}\n\n# Lyric\n{lyrics}")


def plain_uncond_prompt(instruction: str, negative_prompt: str | None) -> str:
    """The unconditional prompt of the modes without CFG (understand, sample, format): the raw negative or nothing.

    The official builders make it though the pipeline never uses it; kept so every builder has its twin.
    """
    return chat_prompt(instruction, negative_prompt if negative_prompt and negative_prompt.strip() else "")
