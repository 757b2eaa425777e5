"""The value tables of the 5 Hz LM's metadata and the checks on values a user gives.

The LM writes (and the constrained decoder only allows) bpm 30–300, durations 10 s up to the limit,
time signatures 2/3/4/6, the 70 key/scale strings and the 51 language codes (lm-text-vae.md §7). The
official code passes user values on unchecked; we reject a value the LM could never have written with
an error that names the field and lists what is valid, so a typo cannot silently steer the plan.
"""

from __future__ import annotations

from typing import Optional, Union

from acestep_core.errors import AceStepError

BPM_MIN, BPM_MAX = 30, 300
DURATION_MIN, DURATION_MAX = 10, 600
TIME_SIGNATURES = ("2", "3", "4", "6")
# Written forms a user may give for each time signature (the UI shows 2/4, 3/4, 4/4 and 6/8).
TIME_SIGNATURE_ALIASES = {"2/4": "2", "3/4": "3", "4/4": "4", "6/8": "6"}
KEY_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEY_ACCIDENTALS = ("", "#", "b", "♯", "♭")
KEY_MODES = ("major", "minor")
KEYSCALES = tuple(f"{note}{accidental} {mode}" for note in KEY_NOTES for accidental in KEY_ACCIDENTALS
                  for mode in KEY_MODES)
LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hr", "ht",
    "hu", "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro", "ru", "sa",
    "sk", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
)
UNKNOWN_LANGUAGE = "unknown"
# The order in which the CoT lists its fields (YAML with sorted keys), which the decoder enforces.
FIELD_ORDER = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")
NOT_AVAILABLE = "N/A"

Number = Union[int, float, str, None]


def is_blank(value: object) -> bool:
    """None, empty or whitespace text, and `N/A` all mean "not given"."""
    if value is None:
        return True
    text = str(value).strip()
    return not text or text.upper() == NOT_AVAILABLE


def check_bpm(value: Number) -> Optional[int]:
    """A whole bpm in 30–300, or None when not given (None, 0, blank)."""
    if is_blank(value) or value == 0:
        return None
    number = _number(value, "bpm", f"a whole number from {BPM_MIN} to {BPM_MAX}")
    if number != int(number) or not BPM_MIN <= number <= BPM_MAX:
        raise AceStepError(f"bpm {value!r} is outside what the 5 Hz LM knows: give a whole number from {BPM_MIN} "
                           f"to {BPM_MAX}, or leave it empty to let the LM choose.")
    return int(number)


def check_duration(value: Number, max_duration: int = DURATION_MAX) -> Optional[float]:
    """Seconds in [10, max_duration], or None when not given (None, ≤ 0, blank)."""
    if is_blank(value):
        return None
    number = _number(value, "duration", f"seconds from {DURATION_MIN} to {max_duration}")
    if number <= 0:
        return None
    if not DURATION_MIN <= number <= max_duration:
        raise AceStepError(f"duration {value!r} s is outside {DURATION_MIN}–{max_duration} s, the range the 5 Hz LM "
                           "plans for: give a duration in that range, or leave it empty to let the LM choose.")
    return float(number)


def check_keyscale(value: Optional[str]) -> Optional[str]:
    """One of the 70 key/scale strings (note letter and mode case are forgiven), or None when not given."""
    if is_blank(value):
        return None
    text = " ".join(str(value).split())
    parts = text.split(" ")
    if len(parts) == 2 and parts[0]:
        text = f"{parts[0][0].upper()}{parts[0][1:]} {parts[1].lower()}"
    if text not in KEYSCALES:
        raise AceStepError(
            f"keyscale {value!r} is not a key the 5 Hz LM knows: write a note A–G, an optional #, b, ♯ or ♭, a "
            "space and major or minor (e.g. 'C major', 'F# minor', 'B♭ major'), or leave it empty.")
    return text


def check_timesignature(value: Optional[str]) -> Optional[str]:
    """'2', '3', '4' or '6' (also accepted as 2/4, 3/4, 4/4, 6/8), or None when not given."""
    if is_blank(value):
        return None
    text = str(value).strip()
    text = TIME_SIGNATURE_ALIASES.get(text, text)
    if text not in TIME_SIGNATURES:
        raise AceStepError(f"timesignature {value!r} is not one the 5 Hz LM knows: give 2, 3, 4 or 6 (for 2/4, 3/4, "
                           "4/4 and 6/8), or leave it empty.")
    return text


def check_language(value: Optional[str]) -> Optional[str]:
    """A language code of the LM's list, or None when not given or `unknown`."""
    if is_blank(value):
        return None
    text = str(value).strip().lower()
    if text not in LANGUAGES:
        raise AceStepError(f"language {value!r} is not one the 5 Hz LM knows: use one of {', '.join(LANGUAGES)}.")
    return None if text == UNKNOWN_LANGUAGE else text


def _number(value: Number, field: str, expected: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AceStepError(f"{field} {value!r} is not a number: give {expected}.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise AceStepError(f"{field} {value!r} is not a finite number: give {expected}.")
    return number
