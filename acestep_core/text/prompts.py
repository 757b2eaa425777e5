"""The two text prompts the DiT is conditioned on: the caption prompt and the lyrics prompt.

The DiT was trained on these exact strings, so every character matters: the instruction per task, the
four metadata lines (with their `N/A` rules and a truncated duration), the language header of the
lyrics and the `<|endoftext|>` markers. The rules follow the official ACE-Step 1.5 handler
(shared/spec/lm-text-vae.md §1.3–1.4, shared/spec/tasks.md §3.6–3.7, §4.0); the prompt golden file is
the final word. Everything here is pure string work; tokenizing and encoding live in `encoder.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from acestep_core.constants import SAMPLE_RATE
from acestep_core.errors import AceStepError

TRACK_NAMES = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion",
    "keyboard", "guitar", "bass", "drums", "backing_vocals", "vocals",
)
TASKS = ("text2music", "cover", "cover-nofsq", "repaint", "extract", "lego", "complete")
# Tasks whose output length is locked to the source audio: a requested duration never reaches the metas.
SOURCE_LOCKED_TASKS = frozenset({"cover", "cover-nofsq", "repaint", "lego", "extract"})

TEXT2MUSIC_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
COVER_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
REPAINT_INSTRUCTION = "Repaint the mask area based on the given conditions:"
EXTRACT_INSTRUCTION = "Extract the {track} track from the audio:"
EXTRACT_ANY_INSTRUCTION = "Extract the track from the audio:"
LEGO_INSTRUCTION = "Generate the {track} track based on the audio context:"
LEGO_ANY_INSTRUCTION = "Generate the track based on the audio context:"
COMPLETE_INSTRUCTION = "Complete the input track with {tracks}:"
COMPLETE_ANY_INSTRUCTION = "Complete the input track:"

CAPTION_TEMPLATE = "# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}<|endoftext|>\n"
LYRICS_TEMPLATE = "# Languages\n{language}\n\n# Lyric\n{lyrics}<|endoftext|>"
NOT_AVAILABLE = "N/A"
# What the metas say when no duration is known (the generated length is decided elsewhere).
DEFAULT_METAS_SECONDS = 30

# A caption that is itself a whole caption prompt: keep only the text between "# Caption" and "# Metas".
_SFT_CAPTION = re.compile(r"#\s*Caption\s*\n(.*?)(?:\n\s*#\s*Metas|$)", re.DOTALL)

Bpm = Union[int, float, str, None]


def task_instruction(task: str, track_name: Optional[str] = None, track_classes: Sequence[str] = ()) -> str:
    """The instruction line for a task; extract/lego name one track, complete lists the tracks to add."""
    if task == "text2music":
        return TEXT2MUSIC_INSTRUCTION
    if task in ("cover", "cover-nofsq"):
        return COVER_INSTRUCTION
    if task == "repaint":
        return REPAINT_INSTRUCTION
    if task == "extract":
        return EXTRACT_INSTRUCTION.format(track=track_name.upper()) if track_name else EXTRACT_ANY_INSTRUCTION
    if task == "lego":
        return LEGO_INSTRUCTION.format(track=track_name.upper()) if track_name else LEGO_ANY_INSTRUCTION
    if task == "complete":
        if track_classes:
            return COMPLETE_INSTRUCTION.format(tracks=" | ".join(name.upper() for name in track_classes))
        return COMPLETE_ANY_INSTRUCTION
    raise AceStepError(f"Unknown task {task!r}: choose one of {', '.join(TASKS)}.")


def format_instruction(instruction: str) -> str:
    """The prompt always shows the instruction ending with a colon."""
    return instruction if instruction.endswith(":") else instruction + ":"


def extract_caption(caption: str) -> str:
    """The caption itself, or the caption part of a whole caption prompt pasted in as the caption."""
    if "# Instruction" in caption and "# Caption" in caption:
        match = _SFT_CAPTION.search(caption)
        if match:
            return match.group(1).strip()
    return caption


def metas_seconds(
    task: str, duration: Optional[float], source_samples: Optional[int], has_audio_codes: bool
) -> Optional[float]:
    """The duration the metas report, before truncation; None when unknown.

    A used source audio wins (its unpadded length), then the requested duration unless the task is
    locked to its source. Text2music ignores a source, and audio codes replace it.
    """
    if source_samples is not None and task != "text2music" and not has_audio_codes:
        return source_samples / SAMPLE_RATE
    if task in SOURCE_LOCKED_TASKS:
        return None
    if duration is not None and float(duration) > 0:
        return float(duration)
    return None


def metas_block(bpm: Bpm, timesignature: Optional[str], keyscale: Optional[str], seconds: Optional[float]) -> str:
    """The four metadata lines; missing values read `N/A`, the duration is truncated to whole seconds.

    Values are written as given (a key with spaces around it keeps them, a time signature `3/4` stays
    `3/4`), because that is what the official encoder side does.
    """
    bpm_text = bpm if bpm else NOT_AVAILABLE
    keyscale_text = keyscale if keyscale and keyscale.strip() else NOT_AVAILABLE
    ts = timesignature or ""
    ts_text = ts if ts.strip() and ts != NOT_AVAILABLE else NOT_AVAILABLE
    whole_seconds = int(seconds) if seconds is not None else DEFAULT_METAS_SECONDS
    return (
        f"- bpm: {bpm_text}\n"
        f"- timesignature: {ts_text}\n"
        f"- keyscale: {keyscale_text}\n"
        f"- duration: {whole_seconds} seconds\n"
    )


def lego_sft_caption(caption: str, global_caption: str, instruction: str, chunk_mask_mode: str) -> str:
    """Caption block of the lego-SFT (stems) checkpoint: song description, stem description, mask flag.

    A chunk-mode instruction ("... a segment ...") drops the global line, as in that model's training.
    """
    mask_control = "Mask Control: false" if chunk_mask_mode == "auto" else "Mask Control: true"
    if "a segment" in instruction.lower():
        return f"Local: {caption}\n{mask_control}"
    return f"Global: {global_caption or ''}\nLocal: {caption}\n{mask_control}"


def caption_prompt(instruction: str, caption: str, metas: str) -> str:
    """The caption prompt (the DiT's "text" branch)."""
    return CAPTION_TEMPLATE.format(instruction=format_instruction(instruction), caption=caption, metas=metas)


def lyrics_prompt(lyrics: str, language: str) -> str:
    """The lyrics prompt (the DiT's "lyric" branch): a language header, then the lyrics unchanged."""
    return LYRICS_TEMPLATE.format(language=language, lyrics=lyrics)


@dataclass(frozen=True)
class TextRequest:
    """What the text side needs from a generation request (after the planner filled in its part).

    `source_samples` is the unpadded source length at 48 kHz, `duration` the requested seconds (None
    or <= 0 = unknown), `has_audio_codes` whether any batch item carries 5 Hz codes (user's or LM's).
    `instruction` overrides the one derived from the task; leave it None to derive it.
    `lego_sft` is the `is_lego_sft` flag of the DiT's config (the stems checkpoint).
    """

    task: str = "text2music"
    caption: str = ""
    lyrics: str = ""
    language: str = "unknown"
    bpm: Bpm = None
    keyscale: str = ""
    timesignature: str = ""
    duration: Optional[float] = None
    source_samples: Optional[int] = None
    has_audio_codes: bool = False
    track_name: Optional[str] = None
    track_classes: Sequence[str] = ()
    instruction: Optional[str] = None
    audio_cover_strength: float = 1.0
    batch_size: int = 1
    global_caption: str = ""
    lego_sft: bool = False
    chunk_mask_mode: str = "auto"


@dataclass(frozen=True)
class TextPrompts:
    """The prompts of one batch item; `non_cover_caption` only when audio_cover_strength < 1."""

    caption: str
    lyrics: str
    non_cover_caption: Optional[str] = None


@dataclass(frozen=True)
class PromptBatch:
    """Prompts per batch item plus the resolved pieces they were built from (for display and tests)."""

    items: tuple[TextPrompts, ...]
    task: str
    instruction: str
    caption: str
    metas: str
    language: str


def resolve_task_and_instruction(request: TextRequest) -> tuple[str, str]:
    """Task and instruction the DiT sees: text2music with audio codes becomes a cover of those codes."""
    if request.task == "text2music" and request.has_audio_codes:
        return "cover", COVER_INSTRUCTION
    if request.instruction is not None:
        if request.task not in TASKS:
            raise AceStepError(f"Unknown task {request.task!r}: choose one of {', '.join(TASKS)}.")
        return request.task, request.instruction
    return request.task, task_instruction(request.task, request.track_name, request.track_classes)


def build_prompts(request: TextRequest) -> PromptBatch:
    """Caption, lyrics and (for audio_cover_strength < 1) non-cover caption prompts for every item."""
    if request.batch_size < 1:
        raise AceStepError(f"batch_size must be at least 1, got {request.batch_size}.")
    task, instruction = resolve_task_and_instruction(request)
    instruction = format_instruction(instruction)
    caption = extract_caption(request.caption)
    seconds = metas_seconds(request.task, request.duration, request.source_samples, request.has_audio_codes)
    metas = metas_block(request.bpm, request.timesignature, request.keyscale, seconds)
    shown_caption = caption
    if request.lego_sft:
        shown_caption = lego_sft_caption(caption, request.global_caption, instruction, request.chunk_mask_mode)
    non_cover = None
    if request.audio_cover_strength < 1.0:
        non_cover = caption_prompt(TEXT2MUSIC_INSTRUCTION, caption, metas)
    item = TextPrompts(
        caption=caption_prompt(instruction, shown_caption, metas),
        lyrics=lyrics_prompt(request.lyrics, request.language),
        non_cover_caption=non_cover,
    )
    return PromptBatch(items=(item,) * request.batch_size, task=task, instruction=instruction,
                       caption=caption, metas=metas, language=request.language)
