"""The planner's public entry points: a request in, a `Blueprint` (one plan per batch item) out.

`plan_song` is "thinking" (CoT metadata, then audio codes), `plan_sample` the simple mode, `plan_format`
the rewrite of caption and lyrics, `plan_understand` reads audio codes back into a description (no codes:
a random example song). User values are checked first (an unknown key, a bpm outside 30–300, …
raise `AceStepError`), then the modes of `modes.py` run on any `Runner` (normally a `PlannerLM`).

What reaches the DiT per item (`PlanItem`): bpm, key, time signature and duration from the user where
given, else from the LM; the LM's caption when `use_cot_caption`; the user's lyrics (the text modes: the
LM's); the language: the user's, else the LM's. The official pipeline never passes the LM's language on
(lm-text-vae.md §8.1, a key mismatch); we do, because the LM chose it for these lyrics.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence, Union

from acestep_core.errors import AceStepError
from acestep_core.planner import modes
from acestep_core.planner.blueprint import Blueprint, PlanItem
from acestep_core.planner.calls import CancelFn, Runner
from acestep_core.planner.cot import codes_to_text, parse_codes
from acestep_core.planner.modes import PlannerSettings, StageProgress
from acestep_core.planner.values import (
    UNKNOWN_LANGUAGE, check_bpm, check_duration, check_keyscale, check_language, check_timesignature,
)
from acestep_core.sampling.noise import resolve_seeds

Seeds = Union[int, str, Sequence[int], None]
# Tasks whose inputs come from source audio: the LM would only get in the way (tasks.md §2, §13).
NO_LM_TASKS = frozenset({"cover", "cover-nofsq", "repaint", "extract"})
# Tasks that keep their source: metadata at most, never codes that would replace the source.
COT_ONLY_TASKS = frozenset({"lego", "complete"})


@dataclass(frozen=True)
class PlanRequest:
    """A think request. Empty/None user values are left to the LM; `write_codes` is the official `thinking`."""

    caption: str = ""
    lyrics: str = ""
    bpm: Optional[int] = None
    keyscale: str = ""
    timesignature: str = ""
    duration: Optional[float] = None
    language: str = UNKNOWN_LANGUAGE
    write_codes: bool = True
    use_cot_metas: bool = True
    use_cot_caption: bool = True
    use_cot_language: bool = True
    batch_size: int = 1
    seeds: Seeds = None


def planner_phases(task: str, thinking: bool, use_cot: bool, has_codes: bool) -> tuple[bool, bool]:
    """(run the CoT phase, run the codes phase) for a DiT task, as the official pipeline decides, except that
    lego and complete never get codes (the official code lets LM codes replace their source, a bug)."""
    if task in NO_LM_TASKS:
        return False, False
    codes = thinking and not has_codes and task not in COT_ONLY_TASKS
    return (use_cot or codes), codes


def _seeds(batch_size: int, seeds: Seeds, rng: Optional[random.Random]) -> list[int]:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AceStepError(f"batch_size must be a whole number ≥ 1, got {batch_size!r}.")
    return resolve_seeds(batch_size, seeds, rng or random.Random())


def _settings(settings: PlannerSettings) -> dict[str, Any]:
    return asdict(settings)


def plan_song(runner: Runner, request: PlanRequest, settings: PlannerSettings = PlannerSettings(), *,
              rng: Optional[random.Random] = None, progress: Optional[StageProgress] = None,
              cancel: Optional[CancelFn] = None) -> Blueprint:
    """Think: CoT metadata and (with `write_codes`) exactly `int(duration·5)` audio codes per item."""
    bpm = check_bpm(request.bpm)
    keyscale = check_keyscale(request.keyscale)
    timesignature = check_timesignature(request.timesignature)
    duration = check_duration(request.duration, settings.max_duration)
    language = check_language(request.language)
    seeds = _seeds(request.batch_size, request.seeds, rng)
    given = {"bpm": bpm, "keyscale": keyscale, "timesignature": timesignature,
             "duration": int(duration) if duration is not None else None}
    user_metadata = {key: value for key, value in given.items() if value is not None}
    outcomes = modes.think(runner, request.caption, request.lyrics, seeds, settings,
                           user_metadata=user_metadata or None, target_duration=duration,
                           write_codes=request.write_codes, use_cot_metas=request.use_cot_metas,
                           use_cot_caption=request.use_cot_caption, use_cot_language=request.use_cot_language,
                           progress=progress, cancel=cancel)
    items = []
    for seed, outcome in zip(seeds, outcomes):
        lm = modes.plain_fields(outcome.metadata)
        caption = lm["caption"] if request.use_cot_caption and lm["caption"] else request.caption
        items.append(PlanItem(
            seed=seed, caption=caption, lyrics=request.lyrics,
            language=language or (lm["language"] if request.use_cot_language and lm["language"] else UNKNOWN_LANGUAGE),
            bpm=bpm if bpm is not None else lm["bpm"], keyscale=keyscale or lm["keyscale"],
            timesignature=timesignature or lm["timesignature"], duration=duration if duration is not None
            else lm["duration"], codes=parse_codes(outcome.codes), metadata=outcome.metadata, cot=outcome.cot,
            lm_text=outcome.cot_output))
    inputs = asdict(request) | {"seeds": seeds}
    return Blueprint("think", tuple(items), inputs, _settings(settings))


def _text_items(seeds: Sequence[int], outcomes: Sequence[modes.TextOutcome], codes: Sequence[int] = ()
                ) -> tuple[PlanItem, ...]:
    items = []
    for seed, outcome in zip(seeds, outcomes):
        fields = outcome.fields
        items.append(PlanItem(seed=seed, caption=fields["caption"], lyrics=fields["lyrics"],
                              language=fields["language"] or UNKNOWN_LANGUAGE, bpm=fields["bpm"],
                              keyscale=fields["keyscale"], timesignature=fields["timesignature"],
                              duration=fields["duration"], codes=tuple(codes), metadata=outcome.metadata,
                              lm_text=outcome.output))
    return tuple(items)


def plan_sample(runner: Runner, query: str, *, instrumental: bool = False, language: str = UNKNOWN_LANGUAGE,
                batch_size: int = 1, seeds: Seeds = None, settings: PlannerSettings = PlannerSettings(top_p=1.0),
                rng: Optional[random.Random] = None, progress: Optional[StageProgress] = None,
                cancel: Optional[CancelFn] = None) -> Blueprint:
    """Simple mode ("create sample"): a short description → caption, lyrics and metadata per item."""
    checked = check_language(language)
    resolved = _seeds(batch_size, seeds, rng)
    outcomes = modes.create_sample(runner, query, resolved, settings, instrumental=instrumental, language=checked,
                                   progress=progress, cancel=cancel)
    inputs = {"query": query, "instrumental": instrumental, "language": language, "seeds": resolved}
    return Blueprint("sample", _text_items(resolved, outcomes), inputs, _settings(settings))


def plan_format(runner: Runner, caption: str, lyrics: str, *, bpm: Optional[int] = None, keyscale: str = "",
                timesignature: str = "", duration: Optional[float] = None, language: str = UNKNOWN_LANGUAGE,
                batch_size: int = 1, seeds: Seeds = None, settings: PlannerSettings = PlannerSettings(top_p=1.0),
                rng: Optional[random.Random] = None, progress: Optional[StageProgress] = None,
                cancel: Optional[CancelFn] = None) -> Blueprint:
    """Format mode: caption and lyrics → a richer caption, metadata and formatted lyrics; given values kept."""
    checked_duration = check_duration(duration, settings.max_duration)
    user_metadata = {"bpm": check_bpm(bpm), "keyscale": check_keyscale(keyscale),
                     "timesignature": check_timesignature(timesignature),
                     "duration": int(checked_duration) if checked_duration is not None else None,
                     "language": check_language(language)}
    resolved = _seeds(batch_size, seeds, rng)
    outcomes = modes.format_sample(runner, caption, lyrics, resolved, settings, user_metadata=user_metadata,
                                   progress=progress, cancel=cancel)
    inputs = {"caption": caption, "lyrics": lyrics} | user_metadata | {"seeds": resolved}
    return Blueprint("format", _text_items(resolved, outcomes), inputs, _settings(settings))


def plan_understand(runner: Runner, codes: Union[str, Sequence[int], None], *, batch_size: int = 1,
                    seeds: Seeds = None, settings: PlannerSettings = PlannerSettings(top_p=1.0),
                    rng: Optional[random.Random] = None, progress: Optional[StageProgress] = None,
                    cancel: Optional[CancelFn] = None) -> Blueprint:
    """Understand: audio codes → caption, lyrics and metadata (the codes stay in the plan, so the DiT can
    remake the song from them with the new text). No codes: the LM invents a random example song."""
    values = parse_codes(codes) if isinstance(codes, str) else tuple(int(c) for c in codes or ())
    if any(not 0 <= value < 64000 for value in values):
        raise AceStepError("Audio codes must be 0 … 63999 (as the 5 Hz LM and the audio tokenizer write them).")
    resolved = _seeds(batch_size, seeds, rng)
    outcomes = modes.understand(runner, codes_to_text(values), resolved, settings, progress=progress, cancel=cancel)
    inputs = {"codes": list(values), "seeds": resolved}
    return Blueprint("understand", _text_items(resolved, outcomes, values), inputs, _settings(settings))


def random_example(runner: Runner, **kwargs: Any) -> Blueprint:
    """The UI's "random example": understand mode with no codes."""
    return plan_understand(runner, None, **kwargs)
