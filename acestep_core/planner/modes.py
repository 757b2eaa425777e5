"""The planner's modes as the official LM handler runs them: which calls, in which order, parsed how.

- think (`think`): phase 1 writes the CoT metadata (no guidance, user values injected, stop before
  `</think>`), phase 2 writes the audio codes from the CoT (guidance with the negative prompt, exactly
  `int(duration·5)` codes). Phase 1 is skipped when bpm, key, time signature and duration are all given.
- simple mode (`create_sample`): a short description → metadata, caption and lyrics.
- format (`format_sample`): caption and lyrics → richer caption, metadata, formatted lyrics.
- understand (`understand`): audio codes → metadata, caption and lyrics; no codes gives a random song.

Each item gets its own calls and seed (phase 2 and the single-call modes draw from the item's seed
itself, as the official batch path seeds item i; phase 1 from a seed derived from it), so an item can be
made again alone. `share_cot=True` runs phase 1 once for the whole batch (from the first item's seed),
as the official batch path does. Deviations, both deliberate: every item's machine is its own, and a
language given to format mode is injected (the official code drops the field instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Optional, Sequence

from acestep_core.errors import AceStepError
from acestep_core.planner.calls import CODES_PER_SECOND, CancelFn, LMCall, Runner, token_budget
from acestep_core.planner.constraint import ConstraintSpec
from acestep_core.planner.cot import code_tokens, extract_lyrics, format_cot, parse_metadata
from acestep_core.planner.prompts import (
    NO_USER_INPUT, codes_prompt, codes_uncond_prompt, format_prompt, sample_prompt, think_prompt, understand_prompt,
)
from acestep_core.planner.sampling import Sampling
from acestep_core.planner.values import DURATION_MAX, DURATION_MIN, FIELD_ORDER, NOT_AVAILABLE, UNKNOWN_LANGUAGE

INSTRUMENTAL = "[Instrumental]"
ALL_METAS = ("bpm", "keyscale", "timesignature", "duration")
_COT_SEED_SALT = 0xC07_5EED
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PlannerSettings:
    """Sampling and behaviour of the planner (official defaults; `top_p` ≥ 1, `top_k` 0, `min_p` 0 = off).

    `cfg_scale` only applies to the codes phase (phase 1 and the text modes never use guidance, as in the
    official code). `constrained=False` is the official unconstrained option. `max_duration` bounds the
    durations the LM may write (the official code lowers it on small GPUs). `share_cot` see module doc.
    `max_text_tokens` caps the CoT and text-mode calls (lyrics can be long); None keeps the official 3500.
    """

    temperature: float = 0.85
    cfg_scale: float = 2.0
    top_k: int = 0
    top_p: float = 0.9
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    negative_prompt: str = NO_USER_INPUT
    constrained: bool = True
    legacy_cfg_prompt: bool = False
    share_cot: bool = False
    max_duration: int = DURATION_MAX
    max_text_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if not DURATION_MIN <= self.max_duration <= DURATION_MAX:
            raise AceStepError(f"max_duration {self.max_duration!r} must be within {DURATION_MIN}–{DURATION_MAX} s.")
        if self.max_text_tokens is not None and self.max_text_tokens < 1:
            raise AceStepError(f"max_text_tokens must be at least 1 (or None), got {self.max_text_tokens!r}.")
        try:
            self.sampling(True)
        except ValueError as error:
            raise AceStepError(f"LM sampling settings: {error}.") from None

    def text_budget(self, phase: str) -> int:
        """Tokens for a CoT or text-mode call: the official budget, or `max_text_tokens` when smaller."""
        budget = token_budget(phase, None, self.max_duration)
        return min(budget, self.max_text_tokens) if self.max_text_tokens else budget

    def sampling(self, guided: bool) -> Sampling:
        return Sampling(self.temperature, self.cfg_scale if guided else 1.0, self.top_k,
                        self.top_p if self.top_p is not None else 1.0, self.min_p, self.repetition_penalty)


@dataclass(frozen=True)
class ThinkOutcome:
    """One item of a think run: the metadata (parsed CoT, or the user's when phase 1 was skipped), the CoT
    text phase 2 saw, the codes string (empty without phase 2) and the raw LM texts of both phases."""

    metadata: dict[str, Any]
    cot: str
    codes: str = ""
    cot_output: str = ""
    codes_output: str = ""


@dataclass(frozen=True)
class TextOutcome:
    """One item of a sample/format/understand run: parsed metadata (with `lyrics` when written) and output."""

    metadata: dict[str, Any]
    output: str
    fields: dict[str, Any] = field(default_factory=dict)


def cot_seed(seed: int) -> int:
    """The phase-1 seed of an item: a separate stream, so editing the CoT and re-running phase 2 with the
    item's seed gives the codes of that seed."""
    return (seed * 6364136223846793005 + _COT_SEED_SALT) & (2**63 - 1)


def _stage(progress: Optional[StageProgress], name: str) -> Optional[Callable[[int, int], None]]:
    return (lambda done, total: progress(name, done, total)) if progress is not None else None


def cot_fields(skip_caption: bool, skip_language: bool, skip_genres: bool) -> tuple[str, ...]:
    skipped = {"caption": skip_caption, "language": skip_language, "genres": skip_genres}
    return tuple(name for name in FIELD_ORDER if not skipped.get(name, False))


def user_values(metadata: Optional[Mapping[str, Any]]) -> dict[str, str]:
    """User metadata as the text the decoder injects (fields of the CoT only, None left out)."""
    return {key: str(value) for key, value in (metadata or {}).items() if key in FIELD_ORDER and value is not None}


def phase1_call(caption: str, lyrics: str, settings: PlannerSettings, seed: int,
                user_metadata: Optional[Mapping[str, Any]] = None, use_cot_caption: bool = True,
                use_cot_language: bool = True) -> LMCall:
    constraint = ConstraintSpec("cot", True, cot_fields(not use_cot_caption, not use_cot_language, True),
                                user_values(user_metadata), enabled=settings.constrained,
                                max_duration=settings.max_duration)
    return LMCall(think_prompt(caption, lyrics), None, settings.sampling(False), constraint,
                  settings.text_budget("cot"), seed)


def phase2_call(caption: str, lyrics: str, cot: str, settings: PlannerSettings, seed: int,
                target_duration: Optional[float]) -> LMCall:
    target = int(target_duration * CODES_PER_SECOND) if target_duration is not None and target_duration > 0 else None
    constraint = ConstraintSpec("codes", False, (), {}, target, settings.max_duration * CODES_PER_SECOND,
                                settings.constrained, settings.max_duration)
    sampling = settings.sampling(True)
    uncond = codes_uncond_prompt(caption, lyrics, settings.negative_prompt, settings.legacy_cfg_prompt) \
        if sampling.uses_cfg else None
    return LMCall(codes_prompt(caption, lyrics, cot), uncond, sampling, constraint,
                  token_budget("codes", target_duration, settings.max_duration), seed)


def _cot_duration(metadata: Mapping[str, Any]) -> Optional[float]:
    try:
        seconds = float(metadata.get("duration") or 0)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def think(runner: Runner, caption: str, lyrics: str, seeds: Sequence[int],
          settings: PlannerSettings = PlannerSettings(), *, user_metadata: Optional[Mapping[str, Any]] = None,
          target_duration: Optional[float] = None,
          write_codes: bool = True, use_cot_metas: bool = True, use_cot_caption: bool = True,
          use_cot_language: bool = True, progress: Optional[StageProgress] = None,
          cancel: Optional[CancelFn] = None) -> list[ThinkOutcome]:
    """The two-phase plan of `len(seeds)` items (the official `generate_with_stop_condition`)."""
    metadata_given = user_metadata or {}
    texts = [""] * len(seeds)
    if all(key in metadata_given for key in ALL_METAS) or not use_cot_metas:
        metadatas = [{k: v for k, v in metadata_given.items() if v is not None} for _ in seeds]
    else:
        cot_seeds = [cot_seed(seeds[0])] if settings.share_cot else [cot_seed(seed) for seed in seeds]
        calls = [phase1_call(caption, lyrics, settings, seed, user_metadata, use_cot_caption, use_cot_language)
                 for seed in cot_seeds]
        texts = runner.run(calls, _stage(progress, "plan-cot"), cancel)
        if settings.share_cot:
            texts = texts * len(seeds)
        metadatas = [parse_metadata(text) for text in texts]
    results = [ThinkOutcome(metadata, format_cot(metadata) if write_codes else "", cot_output=text)
               for metadata, text in zip(metadatas, texts)]
    if not write_codes:
        return results
    calls = []
    for outcome, seed in zip(results, seeds):
        target = target_duration if target_duration is not None and target_duration > 0 \
            else _cot_duration(outcome.metadata)
        calls.append(phase2_call(caption, lyrics, outcome.cot, settings, seed, target))
    texts = runner.run(calls, _stage(progress, "plan-codes"), cancel)
    return [replace(outcome, codes=code_tokens(text), codes_output=text) for outcome, text in zip(results, texts)]


def _text_call(prompt: str, settings: PlannerSettings, seed: int, values: Mapping[str, str],
               skip_language: bool = False) -> LMCall:
    constraint = ConstraintSpec("understand", False, cot_fields(False, skip_language, False), dict(values),
                                enabled=settings.constrained, max_duration=settings.max_duration)
    return LMCall(prompt, None, settings.sampling(False), constraint, settings.text_budget("understand"), seed)


def plain_fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The official result fields of the text modes: bpm int or None, duration float or None, `N/A` → ''."""
    def number(key: str, kind: type) -> Any:
        value = metadata.get(key)
        if value is None or value in (NOT_AVAILABLE, ""):
            return None
        try:
            return kind(value)
        except (TypeError, ValueError):
            return None

    def text(key: str) -> str:
        value = metadata.get(key, "")
        return "" if value == NOT_AVAILABLE else value

    fields = {"caption": metadata.get("caption", ""), "lyrics": metadata.get("lyrics", ""),
              "bpm": number("bpm", int), "duration": number("duration", float), "keyscale": text("keyscale"),
              "language": text("language"), "timesignature": text("timesignature")}
    if "instrumental" in metadata:
        fields["instrumental"] = metadata["instrumental"]
    return fields


def _run_text(runner: Runner, calls: list[LMCall], finish: Callable[[str, dict[str, Any]], None],
              progress: Optional[StageProgress], cancel: Optional[CancelFn]) -> list[TextOutcome]:
    outcomes = []
    for text in runner.run(calls, _stage(progress, "plan-text"), cancel):
        metadata = parse_metadata(text)
        finish(text, metadata)
        outcomes.append(TextOutcome(metadata, text, plain_fields(metadata)))
    return outcomes


def create_sample(runner: Runner, query: str, seeds: Sequence[int], settings: PlannerSettings = PlannerSettings(),
                  *, instrumental: bool = False, language: Optional[str] = None,
                  progress: Optional[StageProgress] = None, cancel: Optional[CancelFn] = None) -> list[TextOutcome]:
    """Simple mode: a description (empty = `NO USER INPUT`) → metadata, caption and lyrics per item."""
    query = query if query and query.strip() else NO_USER_INPUT
    language = language.strip() if language and language.strip() else None
    values = {"language": language} if language and language.lower() != UNKNOWN_LANGUAGE else {}
    calls = [_text_call(sample_prompt(query, instrumental), settings, seed, values) for seed in seeds]

    def finish(text: str, metadata: dict[str, Any]) -> None:
        lyrics = extract_lyrics(text)
        if lyrics or instrumental:
            metadata["lyrics"] = lyrics or INSTRUMENTAL
        metadata["instrumental"] = instrumental

    return _run_text(runner, calls, finish, progress, cancel)


def format_values(user_metadata: Optional[Mapping[str, Any]]) -> dict[str, str]:
    """The user metadata format mode injects: positive whole bpm and duration, non-empty key, time, language."""
    values: dict[str, str] = {}
    for key, value in (user_metadata or {}).items():
        if value is None:
            continue
        if key in ("bpm", "duration"):
            try:
                number = int(value)
            except (TypeError, ValueError):
                continue
            if number > 0:
                values[key] = str(number)
        elif key in ("keyscale", "timesignature", "language") and value:
            values[key] = str(value)
    return values


def format_sample(runner: Runner, caption: str, lyrics: str, seeds: Sequence[int],
                  settings: PlannerSettings = PlannerSettings(), *, user_metadata: Optional[Mapping[str, Any]] = None,
                  progress: Optional[StageProgress] = None, cancel: Optional[CancelFn] = None) -> list[TextOutcome]:
    """Format mode: caption (empty = `NO USER INPUT`) and lyrics (empty = `[Instrumental]`) rewritten."""
    caption = caption if caption and caption.strip() else NO_USER_INPUT
    lyrics = lyrics if lyrics and lyrics.strip() else INSTRUMENTAL
    calls = [_text_call(format_prompt(caption, lyrics), settings, seed, format_values(user_metadata))
             for seed in seeds]

    def finish(text: str, metadata: dict[str, Any]) -> None:
        metadata["lyrics"] = extract_lyrics(text) or lyrics

    return _run_text(runner, calls, finish, progress, cancel)


def understand(runner: Runner, codes: str, seeds: Sequence[int], settings: PlannerSettings = PlannerSettings(),
               *, progress: Optional[StageProgress] = None, cancel: Optional[CancelFn] = None) -> list[TextOutcome]:
    """Understand: a `<|audio_code_N|>…` string → metadata, caption and lyrics; no codes → a random song."""
    codes = codes if codes and codes.strip() else NO_USER_INPUT
    calls = [_text_call(understand_prompt(codes), settings, seed, {}) for seed in seeds]

    def finish(text: str, metadata: dict[str, Any]) -> None:
        lyrics = extract_lyrics(text)
        if lyrics:
            metadata["lyrics"] = lyrics

    return _run_text(runner, calls, finish, progress, cancel)
