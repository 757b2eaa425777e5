"""ACE-Step Text Encode: caption, lyrics, metadata and task → ACESTEP_CONDITIONING.

The DiT reads two prompts (the caption prompt with an instruction per task and four metadata lines, and
the lyrics prompt). A few of their characters depend on things the sampler decides: the duration line
follows the source length for the source tasks, and a cover strength below 1 adds a second caption
prompt. So the conditioning carries the request (what the user asked for) and the text encoder, and
caches encodings by prompt: this node encodes the prompts it expects (exactly right when its optional
`latent` is the one the sampler gets), and the sampler encodes any other prompts on first use. Either
way the DiT sees the prompts the `acestep` pipeline would build.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import comfy.model_management
import torch
from comfy_api.latest import io

from acestep_core.errors import AceStepError
from acestep_core.planner.blueprint import Blueprint, PlanItem
from acestep_core.planner.handoff import blueprint_request, item_prompts
from acestep_core.planner.values import BPM_MAX, BPM_MIN, KEYSCALES, LANGUAGES, TIME_SIGNATURES
from acestep_core.task_inputs import TaskPlan, plan_task, text_request
from acestep_core.tasks import (
    ALL_TASKS, CODE_TASKS, MAX_BATCH, MAX_DURATION, MIN_DURATION, GenerationRequest, check_request,
)
from acestep_core.text.encoder import TextConditioning
from acestep_core.text.prompts import TRACK_NAMES, PromptBatch, TextPrompts, build_prompts

from .common import CATEGORY, user_errors
from .model_handles import TEXT_ENCODER_TYPE, TextEncoderHandle
from .planner import BLUEPRINT_TYPE
from .source_audio import latent_plan, request_audio_fields

CONDITIONING_TYPE = io.Custom("ACESTEP_CONDITIONING")
AUTO = "auto"
NO_TRACK = "none"
DISPLAY_NAME = "ACE-Step Text Encode"


def expand(text: TextConditioning, batch: int) -> TextConditioning:
    """One item's encoding repeated for a batch (every item of a batch shares its prompts)."""
    values = {f.name: getattr(text, f.name) for f in dataclasses.fields(text)}
    return TextConditioning(**{name: value.expand(batch, *value.shape[1:]) if value is not None else None
                               for name, value in values.items()})


def _to_device(text: TextConditioning, device: torch.device) -> TextConditioning:
    values = {f.name: getattr(text, f.name) for f in dataclasses.fields(text)}
    return TextConditioning(**{name: value.to(device) if value is not None else None for name, value in values.items()})


def song_prompts(request: GenerationRequest, plan: TaskPlan) -> TextPrompts:
    """The prompts of one item, as the pipeline builds them; an unset duration is the plan's length."""
    text = text_request(request, plan)
    if request.duration is None:
        text = dataclasses.replace(text, duration=plan.seconds)
    batch: PromptBatch = build_prompts(dataclasses.replace(text, batch_size=1))
    return batch.items[0]


@dataclass(eq=False)
class AceStepConditioning:
    """ACESTEP_CONDITIONING: the text and task part of a `GenerationRequest`, the text encoder, and the
    encodings made so far (on ComfyUI's intermediate device), keyed by prompt: one item for a batch that
    shares its prompts, the whole batch when the items differ (a blueprint's plans, `plans`)."""

    request: GenerationRequest
    encoder: TextEncoderHandle
    encoded: dict[Any, TextConditioning] = field(default_factory=dict)
    plans: tuple[PlanItem, ...] = ()

    def _encode(self, key: Any, prompts: list[TextPrompts]) -> TextConditioning:
        if key not in self.encoded:
            encoding = self.encoder.loaded_encoder().encode(prompts)
            self.encoded[key] = _to_device(encoding, comfy.model_management.intermediate_device())
        return self.encoded[key]

    def text(self, prompts: TextPrompts, batch: int) -> TextConditioning:
        """The encoding of `prompts` for a batch, encoding them now if no node did yet."""
        return expand(self._encode(prompts, [prompts]), batch)

    def batch_text(self, prompts: tuple[TextPrompts, ...]) -> TextConditioning:
        """The encoding of one prompt per item; items sharing one prompt are encoded once, as `text` does,
        different ones together (right-padded and masked, as the engine encodes a batch)."""
        if len(set(prompts)) == 1:
            return self.text(prompts[0], len(prompts))
        return self._encode(prompts, list(prompts))

    def prompts(self, request: GenerationRequest, plan: TaskPlan) -> tuple[TextPrompts, ...]:
        """Each item's prompts for a resolved request and its plan."""
        if self.plans:
            return item_prompts(request, plan, self.plans)
        return (song_prompts(request, plan),) * request.batch_size


def _choice(value: str) -> Optional[str]:
    return None if value == AUTO else value


def _bpm(bpm: int) -> Optional[int]:
    if bpm == 0:
        return None
    if not BPM_MIN <= bpm <= BPM_MAX:
        raise AceStepError(f"bpm is {bpm}; give {BPM_MIN}-{BPM_MAX} beats per minute, or 0 for auto.")
    return bpm


def _duration(seconds: float) -> Optional[float]:
    if seconds == 0:
        return None
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise AceStepError(f"duration is {seconds} s; give {MIN_DURATION:g}-{MAX_DURATION:g} s, or 0 for auto "
                           "(the latent's length).")
    return float(seconds)


def _track_name(track_name: str, task: str) -> Optional[str]:
    if track_name == NO_TRACK:
        return None
    if task not in ("lego", "extract"):
        raise AceStepError(f"track_name is {track_name}, but only the lego and extract tasks use it (task is {task}); "
                           "set track_name to none or choose lego or extract.")
    return track_name


def _track_classes(text: str, task: str) -> tuple[str, ...]:
    names = tuple(part.strip().lower() for part in text.replace(";", ",").split(",") if part.strip())
    unknown = [name for name in names if name not in TRACK_NAMES]
    if unknown:
        raise AceStepError(f"track_classes: {', '.join(unknown)} unknown; use names from {', '.join(TRACK_NAMES)}, "
                           "separated by commas.")
    if names and task != "complete":
        raise AceStepError(f"track_classes is set, but only the complete task uses it (task is {task}); clear it "
                           "or choose complete.")
    return names


def expected_prompts(conditioning: AceStepConditioning, latent: Optional[dict[str, Any]]
                     ) -> Optional[tuple[TextPrompts, ...]]:
    """The prompts the sampler will most likely need (exact when `latent` is the sampler's), or None when
    the request cannot be planned yet (e.g. a source task without its latent)."""
    request = conditioning.request
    try:
        if latent is None:
            check_request(request)
            return conditioning.prompts(request, plan_task(request, None))
        planned = dataclasses.replace(request, **request_audio_fields(latent))
        check_request(planned)
        return conditioning.prompts(planned, latent_plan(planned, latent))
    except AceStepError:
        return None


def with_blueprint(request: GenerationRequest, blueprint: Blueprint) -> GenerationRequest:
    """The request with the blueprint's text, metadata and (for the tasks that take them) audio codes.

    Codes turn text2music into a cover of them, as in the pipeline; the tasks that keep their source
    (repaint, lego, extract, complete, ...) take the plans' text only.
    """
    if blueprint.batch_size > MAX_BATCH:
        raise AceStepError(f"blueprint holds {blueprint.batch_size} plans; ACE-Step makes 1 to {MAX_BATCH} songs "
                           "per run.")
    planned = blueprint_request(request, blueprint)
    if request.task not in CODE_TASKS:
        planned = dataclasses.replace(planned, audio_codes=None)
    return dataclasses.replace(planned, seeds=None)


class AceStepTextEncode(io.ComfyNode):
    """Encode caption, lyrics and metadata for the DiT Sampler."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepTextEncode", display_name=DISPLAY_NAME, category=CATEGORY,
            description=("Turns caption, lyrics, metadata and the task into the DiT's conditioning (Qwen3 text "
                         "encoder). Metadata left on auto is written as unknown (N/A)."),
            inputs=[
                TEXT_ENCODER_TYPE.Input("text_encoder", tooltip="The text encoder (Load ACE-Step Text Encoder)."),
                io.String.Input("caption", multiline=True, default="",
                                tooltip="What the music sounds like: genre, mood, instruments, voice, production."),
                io.String.Input("lyrics", multiline=True, default="",
                                tooltip=("Lyrics with section tags ([verse], [chorus], ...); '[Instrumental]' or "
                                         "empty for music without vocals.")),
                io.Combo.Input("language", options=[AUTO, *(code for code in LANGUAGES if code != "unknown")],
                               default=AUTO, tooltip="Language of the lyrics (auto: unknown)."),
                io.Int.Input("bpm", default=0, min=0, max=300,
                             tooltip="Tempo in beats per minute, 30-300; 0 = auto (not stated in the prompt)."),
                io.Combo.Input("keyscale", options=[AUTO, *KEYSCALES], default=AUTO,
                               tooltip="Key and scale, e.g. 'C major'; auto = not stated."),
                io.Combo.Input("timesignature", options=[AUTO, *TIME_SIGNATURES], default=AUTO,
                               tooltip="Beats per bar: 2, 3, 4 or 6 (for 2/4, 3/4, 4/4, 6/8); auto = not stated."),
                io.Float.Input("duration", default=0.0, min=0.0, max=600.0, step=0.1,
                               tooltip=("Seconds the prompt states (10-600); 0 = auto: the latent's length. The song "
                                        "length itself is always the latent's (or the source's).")),
                io.Combo.Input("task", options=list(ALL_TASKS), default="text2music",
                               tooltip=("text2music: from an empty latent. cover: restyle a source. repaint: redo a "
                                        "range (Repaint Mask). extend: a repaint range past an end. lego, extract, "
                                        "complete (base models): add, isolate or complete tracks of a source.")),
                io.Combo.Input("track_name", options=[NO_TRACK, *TRACK_NAMES], default=NO_TRACK,
                               tooltip="lego and extract: the track to generate or isolate."),
                io.String.Input("track_classes", default="",
                                tooltip="complete: tracks to add, comma-separated (e.g. 'drums, bass'); empty = any."),
                io.Latent.Input("latent", optional=True,
                                tooltip=("Optional: the latent the sampler gets. With it the prompts are encoded "
                                         "here (right length and source); without it the sampler encodes them.")),
                BLUEPRINT_TYPE.Input("blueprint", optional=True,
                                     tooltip=("Optional: plans of the ACE-Step LM Planner (or Load Blueprint). Their "
                                              "caption, lyrics, language and metadata replace the widgets above, one "
                                              "plan per song of the batch; their audio codes make text2music a "
                                              "cover of the plan.")),
            ],
            outputs=[CONDITIONING_TYPE.Output(display_name="conditioning",
                                              tooltip="Text conditioning and task, for the DiT Sampler.")],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoderHandle, caption: str, lyrics: str, language: str, bpm: int,
                keyscale: str, timesignature: str, duration: float, task: str, track_name: str,
                track_classes: str, latent: Optional[dict[str, Any]] = None,
                blueprint: Optional[Blueprint] = None) -> io.NodeOutput:
        with user_errors(DISPLAY_NAME):
            request = GenerationRequest(
                caption=caption, lyrics=lyrics, language=_choice(language) or "unknown", bpm=_bpm(bpm),
                keyscale=_choice(keyscale) or "", timesignature=_choice(timesignature) or "",
                duration=_duration(duration), task=task,
                track_name=_track_name(track_name, task), track_classes=_track_classes(track_classes, task))
            plans: tuple[PlanItem, ...] = ()
            if blueprint is not None:
                request, plans = with_blueprint(request, blueprint), blueprint.items
            conditioning = AceStepConditioning(request, text_encoder, plans=plans)
            prompts = expected_prompts(conditioning, latent)
            if prompts is not None:
                conditioning.batch_text(prompts)
        return io.NodeOutput(conditioning)


TEXT_NODES: list[type[io.ComfyNode]] = [AceStepTextEncode]
