"""What a user asks for: the generation request, its checks, and its defaults per DiT variant.

`GenerationRequest` holds every knob of one song (text, task, audio inputs, sampler, seeds, batch).
`check_request` refuses what cannot work with one clear `AceStepError` per problem, before any model
runs; `resolve_request` fills the defaults that depend on the model (steps, shift, guidance) and draws
the random seeds, so the resolved request is a complete recipe that reproduces the song.
Turning a request into DiT inputs lives in `task_inputs`, repaint seams in `task_seams`
(spec: shared/spec/tasks.md; dit.md §4.16).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from acestep_core.errors import AceStepError
from acestep_core.sampling import DcwSettings, SamplerSettings, resolve_seeds
from acestep_core.text.prompts import TASKS, TRACK_NAMES

MIN_DURATION = 10.0
MAX_DURATION = 600.0
DEFAULT_DURATION = 120.0  # official length when no duration is known (the metas then say 30 seconds)
MAX_BATCH = 8
TURBO_MAX_STEPS = 20
BASE_MAX_STEPS = 200
# "extend" is our name for a repaint whose range reaches past either end of the source (outpaint).
ALL_TASKS = (*TASKS, "extend")
BASE_ONLY_TASKS = frozenset({"lego", "extract", "complete"})
SOURCE_TASKS = frozenset({"cover", "cover-nofsq", "repaint", "extend", "lego", "extract"})  # source or codes needed
REGION_TASKS = frozenset({"repaint", "extend", "lego"})  # tasks with a start/end region (and outpaint padding)
CODE_TASKS = frozenset({"text2music", "cover", "cover-nofsq"})  # tasks that may take audio codes
REPAINT_MODES = ("conservative", "balanced", "aggressive")
CHUNK_MASK_MODES = ("auto", "explicit")
ENCODE_MODES = ("seeded", "mean")
# Per-variant defaults (official Gradio UI): turbo 8 steps, sft 50, base 32; shift 3 everywhere.
DEFAULT_STEPS = {"turbo": 8, "sft": 50, "base": 32}
DEFAULT_SHIFT = 3.0
OFFICIAL_TURBO_STEPS = 8  # the official service clamps turbo steps to this; we allow up to 20 (dit.md §7 bug 7)

Seeds = Union[int, str, Sequence[int], None]


@dataclass(frozen=True)
class AudioData:
    """Audio already in memory: `waveform` [channels, samples] (any rate, any channel count)."""

    waveform: torch.Tensor
    sample_rate: int


AudioInput = Union[str, os.PathLike, AudioData]


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: text, task, audio inputs, sampler settings, seeds and batch size.

    Field meanings follow the official `GenerationParams` (tasks.md §1.1) with these differences:
    `repaint_end` None (or -1) means "end of the source" and 0 means 0 s; `steps`/`shift` None mean
    "the variant's default"; `instruction` None derives it from the task (as the official UI does);
    `encode_mode` "seeded" samples the VAE posterior (and picks reference pieces) from the first seed,
    "mean" uses the posterior mean: the official encode is unseeded, so neither is bit-identical to it,
    but both make a seed reproduce its song. `reference_audio` holds one or more timbre clips shared by
    every batch item; `audio_codes` is one `<|audio_code_N|>…` string for every item or one per item.
    """

    caption: str = ""
    lyrics: str = ""
    language: str = "unknown"
    bpm: Optional[int] = None
    keyscale: str = ""
    timesignature: str = ""
    duration: Optional[float] = None
    task: str = "text2music"
    src_audio: Optional[AudioInput] = None
    reference_audio: tuple[AudioInput, ...] = ()
    audio_codes: Union[str, tuple[Optional[str], ...], None] = None
    track_name: Optional[str] = None
    track_classes: tuple[str, ...] = ()
    instruction: Optional[str] = None
    repaint_start: float = 0.0
    repaint_end: Optional[float] = None
    repaint_mode: str = "balanced"
    repaint_strength: float = 0.5
    chunk_mask_mode: str = "auto"
    audio_cover_strength: float = 1.0
    cover_noise_strength: float = 0.0
    steps: Optional[int] = None
    shift: Optional[float] = None
    timesteps: Optional[tuple[float, ...]] = None
    guidance_scale: float = 7.0
    use_adg: bool = False
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    infer_method: str = "ode"
    sampler_mode: str = "euler"
    velocity_norm_threshold: float = 0.0
    velocity_ema_factor: float = 0.0
    dcw: DcwSettings = field(default_factory=DcwSettings)
    seeds: Seeds = None
    batch_size: int = 1
    retake_seeds: Seeds = None
    retake_variance: float = 0.0
    encode_mode: str = "seeded"
    latent_shift: float = 0.0
    latent_rescale: float = 1.0
    normalize: bool = True
    normalization_db: float = -1.0
    fade_in: float = 0.0
    fade_out: float = 0.0

    def codes_per_item(self) -> tuple[Optional[str], ...]:
        """The codes string of each batch item (None = no codes), broadcast as the official handler does."""
        codes = self.audio_codes
        if codes is None or (isinstance(codes, str) and not codes.strip()):
            return (None,) * self.batch_size
        if isinstance(codes, str):
            return (codes,) * self.batch_size
        items = [c if c and c.strip() else None for c in codes]
        if len(items) == 1:
            return (items[0],) * self.batch_size
        return tuple(items[: self.batch_size]) + (None,) * max(0, self.batch_size - len(items))

    @property
    def has_codes(self) -> bool:
        return any(c is not None for c in self.codes_per_item())


def dit_task_name(task: str) -> str:
    """The official task a request task runs as: extend is a repaint over the padded source."""
    return "repaint" if task == "extend" else task


def _finite(value: float, name: str) -> None:
    if not math.isfinite(float(value)):
        raise AceStepError(f"{name} is {value}; give a finite number.")


def _check_range(value: float, low: float, high: float, name: str, hint: str = "") -> None:
    _finite(value, name)
    if not low <= value <= high:
        raise AceStepError(f"{name} is {value}; it must be between {low:g} and {high:g}.{hint}")


def _check_text_and_task(r: GenerationRequest) -> None:
    if r.task not in ALL_TASKS:
        raise AceStepError(f"Task '{r.task}' is unknown; choose one of {', '.join(ALL_TASKS)}.")
    for name, value in (("caption", r.caption), ("lyrics", r.lyrics), ("language", r.language),
                        ("keyscale", r.keyscale), ("timesignature", r.timesignature)):
        if not isinstance(value, str):
            raise AceStepError(f"{name} must be text, got {type(value).__name__}.")
    if r.bpm is not None and (isinstance(r.bpm, bool) or not isinstance(r.bpm, int) or r.bpm < 0):
        raise AceStepError(f"bpm is {r.bpm!r}; give a whole number of beats per minute (e.g. 120) or leave it empty.")
    names = ((r.track_name,) if r.track_name else ()) + tuple(r.track_classes)
    for name in names:
        if name.lower() not in TRACK_NAMES:
            raise AceStepError(f"Track name '{name}' is unknown; choose one of {', '.join(TRACK_NAMES)}.")
    if r.track_name and r.task not in ("lego", "extract"):
        raise AceStepError(f"A track name is used by the lego and extract tasks, not by {r.task}; drop it.")
    if r.track_classes and r.task != "complete":
        raise AceStepError(f"Track classes are used by the complete task, not by {r.task}; drop them.")


def _check_audio_inputs(r: GenerationRequest) -> None:
    codes = r.audio_codes
    if codes is not None and not (isinstance(codes, str) or (
            isinstance(codes, (tuple, list)) and all(c is None or isinstance(c, str) for c in codes))):
        raise AceStepError("audio_codes must be a string of <|audio_code_N|> tokens or one such string per item.")
    has_source = r.src_audio is not None
    if r.has_codes and r.task not in CODE_TASKS:
        raise AceStepError(
            f"Audio codes can drive text2music, cover or cover-nofsq, not {r.task}: "
            f"{r.task} works on source audio; drop the codes.")
    if r.has_codes and has_source:
        raise AceStepError("Give either source audio or audio codes, not both: codes replace the source.")
    if r.task in SOURCE_TASKS and not (has_source or r.has_codes):
        raise AceStepError(f"Task {r.task} needs source audio: give src_audio (--src FILE).")
    if r.task == "text2music" and has_source:
        raise AceStepError("text2music does not use source audio; choose cover, repaint, lego, extract or "
                           "complete, or drop the source.")


def _check_region(r: GenerationRequest) -> None:
    _finite(r.repaint_start, "repaint start")
    if r.repaint_end is not None:
        _finite(r.repaint_end, "repaint end")
        if r.repaint_end < 0 and r.repaint_end != -1:
            raise AceStepError(f"Repaint end is {r.repaint_end} s; give a time ≥ 0 s, or -1 / nothing for the "
                               "end of the source.")
        if 0 <= r.repaint_end <= r.repaint_start:
            raise AceStepError(f"Repaint range {r.repaint_start:g}–{r.repaint_end:g} s is empty; the end must be "
                               "after the start.")
    if r.repaint_mode not in REPAINT_MODES:
        raise AceStepError(f"Repaint mode '{r.repaint_mode}' is unknown; choose one of {', '.join(REPAINT_MODES)}.")
    _check_range(r.repaint_strength, 0.0, 1.0, "repaint strength")
    if r.chunk_mask_mode not in CHUNK_MASK_MODES:
        raise AceStepError(f"Chunk mask mode '{r.chunk_mask_mode}' is unknown; choose 'auto' or 'explicit'.")


def _check_sampler(r: GenerationRequest) -> None:
    if r.steps is not None and (isinstance(r.steps, bool) or not isinstance(r.steps, int) or r.steps < 1):
        raise AceStepError(f"steps is {r.steps!r}; give a whole number ≥ 1.")
    if r.shift is not None:
        _check_range(r.shift, 1.0, 5.0, "shift", " The official UI offers 1.0–5.0 (3.0 is the usual choice).")
    _check_range(r.guidance_scale, 1.0, 30.0, "guidance scale")
    _check_range(r.cfg_interval_start, 0.0, 1.0, "CFG interval start")
    _check_range(r.cfg_interval_end, 0.0, 1.0, "CFG interval end")
    _check_range(r.audio_cover_strength, 0.0, 1.0, "audio cover strength")
    _check_range(r.cover_noise_strength, 0.0, 1.0, "cover noise strength")
    _check_range(r.retake_variance, 0.0, 1.0, "retake variance")
    _check_range(r.velocity_norm_threshold, 0.0, 10.0, "velocity norm threshold")
    _check_range(r.velocity_ema_factor, 0.0, 0.99, "velocity EMA factor")
    _finite(r.latent_shift, "latent shift")
    _finite(r.latent_rescale, "latent rescale")
    _check_range(r.normalization_db, -60.0, 0.0, "normalization level (dBFS)")
    _check_range(r.fade_in, 0.0, MAX_DURATION, "fade-in (s)")
    _check_range(r.fade_out, 0.0, MAX_DURATION, "fade-out (s)")
    if r.cover_noise_strength > 0 and r.task == "text2music" and not r.has_codes:
        raise AceStepError("Cover noise strength starts from the source audio, and text2music has none; set it to "
                           "0 or choose a task with source audio.")
    if r.encode_mode not in ENCODE_MODES:
        raise AceStepError(f"Encode mode '{r.encode_mode}' is unknown; choose 'seeded' or 'mean'.")
    # SamplerSettings checks the method and sampler names with their own messages.
    SamplerSettings(infer_method=r.infer_method, sampler_mode=r.sampler_mode)


def check_request(request: GenerationRequest) -> None:
    """Raise one `AceStepError` naming the first bad input; checks that need no model and no audio.

    Checks against the model (`check_for_model`) and against the source length (`task_inputs.plan_task`)
    come later, when those are known.
    """
    r = request
    if isinstance(r.batch_size, bool) or not isinstance(r.batch_size, int) or not 1 <= r.batch_size <= MAX_BATCH:
        raise AceStepError(f"Batch size is {r.batch_size!r}; it must be a whole number from 1 to {MAX_BATCH}.")
    if r.duration is not None:
        _check_range(r.duration, MIN_DURATION, MAX_DURATION, "duration (s)",
                     " Leave it empty for the official default of 120 s.")
    _check_text_and_task(r)
    _check_audio_inputs(r)
    _check_region(r)
    _check_sampler(r)


def check_for_model(request: GenerationRequest, variant: Optional[str]) -> None:
    """Refuse what the loaded DiT cannot do: lego/extract/complete need a base model; step limits per family.

    `variant` is "turbo", "sft", "base" or None when the checkpoint does not tell (then nothing is refused).
    """
    if request.task in BASE_ONLY_TASKS and variant in ("turbo", "sft"):
        raise AceStepError(
            f"Task {request.task} needs an ACE-Step 1.5 base model (acestep-v15-base or xl-base); the loaded DiT "
            f"is {variant}, which was not trained for it. Load a base model or choose another task.")
    if request.steps is not None:
        limit = TURBO_MAX_STEPS if variant == "turbo" else BASE_MAX_STEPS
        if request.steps > limit:
            raise AceStepError(f"steps is {request.steps}; a {variant or 'base'} model takes 1–{limit} steps.")


def resolve_request(request: GenerationRequest, variant: Optional[str], rng: random.Random) -> GenerationRequest:
    """The request with every default filled in and explicit per-item seeds: the recipe the song records.

    Turbo models get guidance 1.0 (they have no CFG path, as the official handler forces), 8 steps
    unless asked otherwise (1–20 accepted; the official service would have clamped to 8), shift 3.
    Missing seeds come from `rng` following the official rules (a single seed fixes only item 0).
    """
    check_request(request)
    check_for_model(request, variant)
    family_key = variant if variant in DEFAULT_STEPS else "base"
    turbo = variant == "turbo"
    seeds = resolve_seeds(request.batch_size, request.seeds, rng)
    retake = resolve_seeds(request.batch_size, request.retake_seeds, rng) if request.retake_variance > 0 else None
    return dataclasses.replace(
        request,
        steps=request.steps if request.steps is not None else DEFAULT_STEPS[family_key],
        shift=request.shift if request.shift is not None else DEFAULT_SHIFT,
        guidance_scale=1.0 if turbo else request.guidance_scale,
        seeds=tuple(seeds),
        retake_seeds=tuple(retake) if retake is not None else None,
        track_name=request.track_name.lower() if request.track_name else None,
        track_classes=tuple(name.lower() for name in request.track_classes),
    )


def sampler_settings(request: GenerationRequest, injection_ratio: float, crossfade_frames: int) -> SamplerSettings:
    """The sampler options of a resolved request, with the repaint seam values of its mode."""
    return SamplerSettings(
        guidance_scale=request.guidance_scale, use_adg=request.use_adg,
        cfg_interval_start=request.cfg_interval_start, cfg_interval_end=request.cfg_interval_end,
        infer_method=request.infer_method, sampler_mode=request.sampler_mode,
        velocity_norm_threshold=request.velocity_norm_threshold, velocity_ema_factor=request.velocity_ema_factor,
        dcw=request.dcw, audio_cover_strength=request.audio_cover_strength,
        cover_noise_strength=request.cover_noise_strength,
        repaint_injection_ratio=injection_ratio, repaint_crossfade_frames=crossfade_frames)
