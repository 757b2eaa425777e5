"""ACE-Step LM Planner: the 5 Hz LM plans songs (metadata, caption, lyrics, audio codes) → ACESTEP_BLUEPRINT.

One node for the planner's modes (`acestep_core.planner.plan`):
- think: CoT metadata (phase 1), then exactly `duration·5` audio codes (phase 2) per item;
- simple: a short description → caption, lyrics and metadata (the official "create sample");
- rewrite: caption and lyrics → a richer caption, metadata and formatted lyrics ("format");
- understand: audio (a LATENT turned into codes by the DiT's audio tokenizer) or audio codes → metadata,
  caption and lyrics; the codes stay in the plan, so the DiT can remake the song from them;
- random: the LM invents a song ("random example").

Metadata widgets follow Text Encode: 0 or "auto" leaves a value to the LM. Each item gets its own seed
(the first is the node's seed, the others are drawn from it, as the DiT Sampler does), so an item can be
planned again alone. The progress bar follows the tokens; Cancel stops within one chunk of tokens.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Optional

import torch
from comfy_api.latest import io, ui

from acestep_core.errors import AceStepError
from acestep_core.planner import (
    Blueprint, PlannerSettings, PlanRequest, latent_codes, plan_format, plan_sample, plan_song, plan_understand, random_example,
)
from acestep_core.planner.values import (
    BPM_MAX, DURATION_MAX, KEYSCALES, LANGUAGES, TIME_SIGNATURES, UNKNOWN_LANGUAGE, check_bpm, check_duration,
    check_keyscale, check_language, check_timesignature,
)
from acestep_core.tasks import MAX_BATCH

from .common import CATEGORY, interrupted, stage_progress, user_errors
from .lm_handle import LM_TYPE, LMHandle
from .model_handles import DIT_TYPE, DitHandle
from .source_audio import SEED_MAX

BLUEPRINT_TYPE = io.Custom("ACESTEP_BLUEPRINT")
DISPLAY_NAME = "ACE-Step LM Planner"
AUTO = "auto"
MODES = ("think", "simple", "rewrite", "understand", "random")
_DEFAULTS = PlannerSettings()
MODE_TOOLTIP = (
    "think: the LM writes the metadata it leaves open (auto), then the audio codes of the song. simple: 'caption' "
    "is a short description; the LM writes caption, lyrics and metadata. rewrite: the LM rewrites caption and "
    "lyrics and fills the metadata. understand: the LM describes audio (connect latent + dit, or audio_codes). "
    "random: the LM invents a song.")


def _choice(value: Optional[str]) -> Optional[str]:
    return None if value is None or value == AUTO else value


def checked_metadata(bpm: Any, keyscale: Any, timesignature: Any, duration: Any, language: Any) -> dict[str, Any]:
    """The metadata inputs in the planner's terms (unset: None / '' / unknown); a value the LM cannot write
    (bpm outside 30-300, an unknown key, ...) raises an error that names the input, in every mode."""
    return dict(bpm=check_bpm(bpm), keyscale=check_keyscale(_choice(keyscale)) or "",
                timesignature=check_timesignature(_choice(timesignature)) or "", duration=check_duration(duration),
                language=check_language(_choice(language)) or UNKNOWN_LANGUAGE)


def _audio_codes(latent: Optional[dict[str, Any]], dit: Optional[DitHandle], audio_codes: str) -> Any:
    """The codes understand mode reads: the `audio_codes` text, else the latent's first item tokenized by the DiT."""
    if audio_codes.strip():
        return audio_codes
    if latent is None or dit is None:
        raise AceStepError("mode understand needs audio: connect 'latent' (ACE-Step Source Audio Encode) and 'dit' "
                           "(its audio tokenizer turns the latent into codes), or connect 'audio_codes'; mode "
                           "random plans a song without audio.")
    samples = latent.get("samples")
    if not isinstance(samples, torch.Tensor) or samples.ndim != 3:
        raise AceStepError("latent: expected an audio LATENT [batch, channels, frames] from ACE-Step Source Audio "
                           "Encode.")
    models = dit.loaded_models()
    return latent_codes(models.dit, samples, models.silence_latent)


def plan(lm: LMHandle, mode: str, caption: str, lyrics: str, instrumental: bool, metadata: dict[str, Any],
         write_codes: bool, use_lm_caption: bool, settings: PlannerSettings, seed: int, batch_size: int,
         codes: Any = None) -> Blueprint:
    """Run one mode of the planner on the loaded LM (item seeds resolved from `seed` like the sampler's)."""
    runner = lm.loaded_planner()
    rng, progress = random.Random(seed), stage_progress()
    if mode == "think":
        request = PlanRequest(caption=caption, lyrics=lyrics, write_codes=write_codes,
                              use_cot_caption=use_lm_caption, batch_size=batch_size, seeds=seed, **metadata)
        return plan_song(runner, request, settings, rng=rng, progress=progress, cancel=interrupted)
    common = dict(batch_size=batch_size, seeds=seed, settings=settings, rng=rng, progress=progress,
                  cancel=interrupted)
    if mode == "simple":
        sample = plan_sample(runner, caption, instrumental=instrumental, language=metadata["language"], **common)
        return keep_given(sample, {"language": metadata["language"]})
    if mode == "rewrite":
        return keep_given(plan_format(runner, caption, lyrics, **metadata, **common), metadata)
    if mode == "understand":
        return plan_understand(runner, codes, **common)
    if mode == "random":
        return random_example(runner, **common)
    raise AceStepError(f"mode {mode!r} is not one of {', '.join(MODES)}.")


def keep_given(blueprint: Blueprint, metadata: dict[str, Any]) -> Blueprint:
    """The plans with the metadata the user gave, also where the LM's text stopped before writing it (a
    capped `max_text_tokens`), so a given value always reaches the DiT."""
    given = {key: value for key, value in metadata.items() if value not in (None, "", UNKNOWN_LANGUAGE)}
    items = tuple(dataclasses.replace(item, **given) for item in blueprint.items)
    return dataclasses.replace(blueprint, items=items)


def summary(blueprint: Blueprint) -> str:
    """One line per item: seed, metadata and the length the codes describe, for the node's preview."""
    lines = []
    for index, item in enumerate(blueprint.items):
        values = [f"bpm {item.bpm}" if item.bpm else "", item.keyscale, f"{item.timesignature}/4"
                  if item.timesignature else "", f"{item.duration:g} s" if item.duration else "",
                  item.language if item.language != "unknown" else "",
                  f"{len(item.codes)} codes ({item.seconds:g} s)" if item.codes else "no codes"]
        lines.append(f"#{index + 1} seed {item.seed}: " + ", ".join(v for v in values if v))
        if item.caption:
            lines.append(f"   {item.caption}")
    return "\n".join(lines)


def _metadata_inputs() -> list[io.Input]:
    return [
        io.Int.Input("bpm", default=0, min=0, max=BPM_MAX,
                     tooltip="Tempo, 30-300 beats per minute; 0 = auto (the LM chooses)."),
        io.Combo.Input("keyscale", options=[AUTO, *KEYSCALES], default=AUTO,
                       tooltip="Key and scale, e.g. 'C major'; auto = the LM chooses."),
        io.Combo.Input("timesignature", options=[AUTO, *TIME_SIGNATURES], default=AUTO,
                       tooltip="Beats per bar: 2, 3, 4 or 6 (2/4, 3/4, 4/4, 6/8); auto = the LM chooses."),
        io.Float.Input("duration", default=0.0, min=0.0, max=float(DURATION_MAX), step=1.0,
                       tooltip=("Song length in seconds, 10-600; 0 = auto (the LM chooses). In think mode the LM "
                                "writes exactly 5 codes per second of it.")),
        io.Combo.Input("language", options=[AUTO, *(code for code in LANGUAGES if code != "unknown")],
                       default=AUTO, tooltip="Language of the vocals; auto = the LM chooses."),
    ]


def _sampling_inputs() -> list[io.Input]:
    return [
        io.Float.Input("temperature", default=_DEFAULTS.temperature, min=0.0, max=2.0, step=0.01,
                       tooltip="Randomness of the LM's choices (0 = always the most likely token)."),
        io.Float.Input("cfg_scale", default=_DEFAULTS.cfg_scale, min=1.0, max=10.0, step=0.1,
                       tooltip="Guidance of the audio codes towards caption and lyrics (1 = off); think mode only."),
        io.Int.Input("top_k", default=0, min=0, max=1000, tooltip="Keep only the k most likely tokens (0 = off)."),
        io.Float.Input("top_p", default=_DEFAULTS.top_p, min=0.0, max=1.0, step=0.01,
                       tooltip="Keep the most likely tokens up to this total probability (1 = off)."),
        io.Float.Input("min_p", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Drop tokens less likely than this fraction of the best one (0 = off)."),
        io.Float.Input("repetition_penalty", default=1.0, min=0.1, max=3.0, step=0.01,
                       tooltip="Penalise tokens already written (1 = off)."),
        io.Int.Input("max_text_tokens", default=0, min=0, max=4000,
                     tooltip=("Cap on the tokens of the metadata and text each plan writes (0 = the official "
                              "3500); the audio codes always get 5 per second.")),
        io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                     tooltip="Seed of plan 1; the other plans get seeds drawn from it, so a seed gives the same batch."),
        io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH,
                     tooltip="Plans to make, one per song of the batch (each with its own seed)."),
    ]


class AceStepLMPlanner(io.ComfyNode):
    """Plan songs with the 5 Hz LM."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLMPlanner", display_name=DISPLAY_NAME, category=CATEGORY,
            description=("The ACE-Step 5 Hz LM plans songs: metadata (bpm, key, time signature, length, "
                         "language), caption, lyrics and audio codes, one plan per batch item. Connect the "
                         "blueprint to ACE-Step Text Encode, or save it with Save ACE-Step Blueprint."),
            inputs=[
                LM_TYPE.Input("lm", tooltip="The 5 Hz LM (Load ACE-Step LM)."),
                io.Combo.Input("mode", options=list(MODES), default="think", tooltip=MODE_TOOLTIP),
                io.String.Input("caption", multiline=True, default="",
                                tooltip=("think/rewrite: what the music sounds like. simple: a short description "
                                         "of the song ('a sad piano ballad about rain').")),
                io.String.Input("lyrics", multiline=True, default="",
                                tooltip="think/rewrite: lyrics with section tags; empty = instrumental."),
                io.Boolean.Input("instrumental", default=False, tooltip="simple: a song without vocals."),
                *_metadata_inputs(),
                io.Boolean.Input("write_codes", default=True,
                                 tooltip=("think: also write the audio codes (the song's outline, which the DiT "
                                          "follows); off = metadata only.")),
                io.Boolean.Input("use_lm_caption", default=True,
                                 tooltip="think: use the LM's rewritten caption; off = keep yours."),
                *_sampling_inputs(),
                io.Latent.Input("latent", optional=True,
                                tooltip="understand: the audio to describe (ACE-Step Source Audio Encode)."),
                DIT_TYPE.Input("dit", optional=True,
                               tooltip="understand: the DiT whose audio tokenizer turns the latent into codes."),
                io.String.Input("audio_codes", optional=True, force_input=True,
                                tooltip="understand: audio codes (<|audio_code_N|>...) instead of a latent."),
            ],
            outputs=[
                BLUEPRINT_TYPE.Output(display_name="blueprint",
                                      tooltip="The plans (one per batch item), for Text Encode or Save Blueprint."),
                io.String.Output(display_name="caption", tooltip="The first plan's caption."),
                io.String.Output(display_name="lyrics", tooltip="The first plan's lyrics."),
            ],
        )

    @classmethod
    def execute(cls, lm: LMHandle, mode: str, caption: str, lyrics: str, instrumental: bool, bpm: int,
                keyscale: str, timesignature: str, duration: float, language: str, write_codes: bool,
                use_lm_caption: bool, temperature: float, cfg_scale: float, top_k: int, top_p: float, min_p: float,
                repetition_penalty: float, max_text_tokens: int, seed: int, batch_size: int,
                latent: Optional[dict[str, Any]] = None, dit: Optional[DitHandle] = None,
                audio_codes: Optional[str] = None) -> io.NodeOutput:
        with user_errors(DISPLAY_NAME):
            metadata = checked_metadata(bpm, keyscale, timesignature, duration, language)
            settings = PlannerSettings(temperature=temperature, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p,
                                       min_p=min_p, repetition_penalty=repetition_penalty,
                                       max_text_tokens=max_text_tokens or None)
            codes = _audio_codes(latent, dit, audio_codes or "") if mode == "understand" else None
            blueprint = plan(lm, mode, caption, lyrics, instrumental, metadata, write_codes, use_lm_caption,
                             settings, seed, batch_size, codes)
        first = blueprint.items[0]
        return io.NodeOutput(blueprint, first.caption, first.lyrics, ui=ui.PreviewText(summary(blueprint)))


PLANNER_NODES: list[type[io.ComfyNode]] = [AceStepLMPlanner]
