"""The CoT ("blueprint") text: writing metadata as the LM's YAML, and reading the LM's output back.

The LM thinks in YAML with sorted keys between `<think>` and `</think>` (lm-text-vae.md §2.4). For the
codes phase the official code serialises the phase-1 metadata with PyYAML (`allow_unicode=True,
sort_keys=True`); PyYAML's line wrapping at 80 columns and its quoting (`'no'` for Norwegian) are part
of what the LM sees, so we call PyYAML the same way instead of imitating it. Parsing follows the
official line rules, including its tolerance for a missing `</think>` (phase 1 stops before writing it).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import yaml

from acestep_core.constants import NUM_AUDIO_CODES

# Fields the codes phase sees in its CoT (never `genres`), in YAML's sorted order.
COT_FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
_CODE_TOKEN = re.compile(r"<\|audio_code_(\d+)\|>")
_REASONING = (re.compile(r"<think>(.*?)</think>", re.DOTALL), re.compile(r"<reasoning>(.*?)</reasoning>", re.DOTALL))
_LYRICS_HEADER = re.compile(r"^#\s*Lyri[c|cs]?\s*\n", re.IGNORECASE)
_TRAILING_EOS = re.compile(r"<\|im_end\|>\s*$")
_INT_FIELDS = ("bpm", "duration")
_CAPTION_FIELD = "caption"
_TEXT_FIELDS = ("genres", "keyscale", "language", "timesignature")


def format_cot(metadata: Mapping[str, Any]) -> str:
    """`<think>\n{yaml}\n</think>` of the CoT fields present (not None); `x/4` becomes `x`, digit strings ints."""
    items: dict[str, Any] = {}
    for key in COT_FIELDS:
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature" and isinstance(value, str) and value.endswith("/4"):
            value = value.split("/")[0]
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        items[key] = value
    body = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{body}\n</think>"


def join_caption(text: str) -> str:
    """A YAML caption spread over lines, as one line: each line stripped, empty lines dropped, single spaces."""
    if not text:
        return text
    return " ".join(line.strip() for line in text.split("\n") if line.strip())


def _reasoning_text(output: str) -> str:
    for pattern in _REASONING:
        match = pattern.search(output)
        if match:
            if match.group(1).strip():
                return match.group(1).strip()
            break
    # No closed (or an empty) CoT: everything before the first audio code; phase 1 stops before `</think>`.
    return output.split("<|audio_code_")[0].strip()


def _typed(key: str, lines: list[str]) -> Any:
    value = "\n".join(lines)
    if key in _INT_FIELDS:
        try:
            return int(value.strip())
        except ValueError:
            return value.strip()
    if key == _CAPTION_FIELD:
        return join_caption(value)
    return value.strip()


def parse_metadata(output: str) -> dict[str, Any]:
    """The CoT fields of an LM output: bpm/duration as ints when they read as ints, the caption on one line.

    A line that starts without whitespace and holds `:` starts a field, an indented line continues the
    previous one, lines starting with `<` (tags) and unknown keys are ignored.
    """
    metadata: dict[str, Any] = {}
    key, lines = None, []

    def save() -> None:
        if key in _INT_FIELDS + (_CAPTION_FIELD,) + _TEXT_FIELDS and lines:
            metadata[key] = _typed(key, lines)

    for line in _reasoning_text(output).split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            save()
            name, first = line.split(":", 1)
            key, lines = name.strip().lower(), ([first] if first.strip() else [])
        elif line.startswith((" ", "\t")) and key:
            lines.append(line)
    save()
    return metadata


def code_tokens(output: str) -> str:
    """Every `<|audio_code_N|>` token of the output, concatenated (the official codes string)."""
    return "".join(match.group(0) for match in _CODE_TOKEN.finditer(output))


def parse_codes(text: str) -> tuple[int, ...]:
    """The code values of a `<|audio_code_N|>…` string, as written (not clamped)."""
    return tuple(int(value) for value in _CODE_TOKEN.findall(text))


def codes_to_text(codes: Iterable[int]) -> str:
    """Codes as the LM writes them: one `<|audio_code_N|>` token each, no separators."""
    return "".join(f"<|audio_code_{int(code)}|>" for code in codes)


def clamp_codes(codes: Iterable[int]) -> tuple[int, ...]:
    """Codes limited to the codebook, 0 … 63999, as the official hand-off to the DiT does."""
    return tuple(min(max(int(code), 0), NUM_AUDIO_CODES - 1) for code in codes)


def extract_lyrics(output: str) -> str:
    """The text after the first `</think>`, without a `# Lyric` header or a trailing `<|im_end|>`; '' if none."""
    _, found, after = output.partition("</think>")
    if not found:
        return ""
    text = _LYRICS_HEADER.sub("", after.strip())
    return _TRAILING_EOS.sub("", text).strip()
