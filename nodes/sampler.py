"""ACE-Step DiT Sampler: conditioning + latent canvas → song latents, through the pipeline's stage functions.

The node assembles the engine's `GenerationRequest` from its three sources (the conditioning's text and
task, the LATENT's source and repaint range, its own sampler settings), checks and resolves it with the
engine's rules (variant defaults, base-only tasks, seeds), and then runs the stages `pipeline.generate`
runs: plan → prompts → target latents and task tensors → `sample_latents`. What differs is only where
the inputs come from: the source and reference latents were encoded by their own nodes, and an empty
latent sets the song length.

The output LATENT records the resolved request, the plan and the repaint seams, so VAE Decode can
finish the song as the pipeline does (repaint splice, normalisation, fades).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Optional

import comfy.model_management
import torch
from comfy_api.latest import io

from acestep_core.audio import is_silent_input
from acestep_core.constants import VAE_HOP
from acestep_core.errors import AceStepError
from acestep_core.pipeline import decode_codes, make_schedule, sample_latents, seams_for
from acestep_core.sampling import SamplerSettings
from acestep_core.task_inputs import TaskPlan, build_dit_inputs, pack_references, pad_source, target_latents
from acestep_core.task_seams import RepaintSeams
from acestep_core.tasks import (
    BASE_MAX_STEPS, DEFAULT_SHIFT, MAX_BATCH, SOURCE_TASKS, GenerationRequest, resolve_request,
)
from acestep_core.text.encoder import TextConditioning

from .common import CATEGORY, interrupted, stage_progress, user_errors
from .model_handles import DIT_TYPE, DitHandle
from .source_audio import REFERENCE_TYPE, SEED_MAX, ReferenceAudio, latent_plan, latent_source, request_audio_fields
from .text_encode import CONDITIONING_TYPE, AceStepConditioning

SONG_KEY = "acestep_song"
DISPLAY_NAME = "ACE-Step DiT Sampler"
_DEFAULTS = SamplerSettings()


@dataclass(frozen=True, eq=False)
class SongRecord:
    """What VAE Decode needs to finish a sampled song: the resolved request, its plan, the padded source
    waveform `[2, M]` (None without a source) and the repaint seams (None without a range)."""

    request: GenerationRequest
    plan: TaskPlan
    padded_source: Optional[torch.Tensor]
    seams: Optional[RepaintSeams]


def build_request(conditioning: AceStepConditioning, latent: dict[str, Any], settings: dict[str, Any]
                  ) -> GenerationRequest:
    """The request of one sampler run: conditioning, then the latent's audio fields, then the node's settings."""
    samples = latent.get("samples")
    if not isinstance(samples, torch.Tensor) or samples.ndim != 3:
        raise AceStepError("latent: expected an audio LATENT with samples [batch, channels, frames]; connect "
                           "ACE-Step Empty Latent or ACE-Step Source Audio Encode.")
    batch = int(samples.shape[0])
    if not 1 <= batch <= MAX_BATCH:
        raise AceStepError(f"latent holds a batch of {batch}; ACE-Step makes 1 to {MAX_BATCH} songs per run.")
    plans = len(conditioning.plans)
    if plans and batch not in (1, plans):
        raise AceStepError(f"latent holds a batch of {batch} but the blueprint has {plans} plans: set the latent's "
                           f"batch to {plans} (or 1, which makes one song per plan).")
    batch = plans or batch
    task = conditioning.request.task
    if task in SOURCE_TASKS and latent_source(latent) is None and not conditioning.request.has_codes:
        raise AceStepError(f"Task {task} starts from a recording: connect the LATENT of ACE-Step Source Audio "
                           "Encode (or choose text2music in the Text Encode node).")
    return dataclasses.replace(conditioning.request, **request_audio_fields(latent), **settings, batch_size=batch)


def _check_source_latent(latent: dict[str, Any], plan: TaskPlan, dit: DitHandle) -> None:
    source = latent_source(latent)
    if source is None or plan.source_samples is None:
        return
    samples = latent["samples"]
    if samples.shape[1] != dit.latent_channels:
        raise AceStepError(f"latent has {samples.shape[1]} channels but this DiT works on {dit.latent_channels}: "
                           "encode the source with the VAE that belongs to the DiT.")
    if (plan.pad_left, plan.pad_right) != (source.pad_left, source.pad_right):
        raise AceStepError("latent: its repaint range does not fit the task. An extend range needs task repaint "
                           "or extend in the Text Encode node; for other tasks remove the Repaint Mask.")
    if samples.shape[-1] != plan.padded_samples // VAE_HOP:
        raise AceStepError(f"latent has {samples.shape[-1]} frames but its recording needs "
                           f"{plan.padded_samples // VAE_HOP}; use the LATENT straight from Source Audio Encode or "
                           "Repaint Mask.")


def task_tensors(models: Any, request: GenerationRequest, plan: TaskPlan, latent: dict[str, Any],
                 text: TextConditioning, reference: Optional[ReferenceAudio]) -> tuple[Any, Optional[torch.Tensor]]:
    """The DiT inputs and the padded source waveform, as `pipeline.prepare_inputs` makes them, from the
    latents the encode nodes made (a silent source becomes silence latents, as in the pipeline)."""
    source = latent_source(latent)
    padded = pad_source(source.waveform, plan) if source is not None and plan.source_samples is not None else None
    audible = padded is not None and bool(padded.abs().sum() > 1e-6)
    source_latents = None
    if padded is not None and not bool(is_silent_input(padded)):
        source_latents = latent["samples"][0].transpose(0, 1).to(device=models.device, dtype=models.dtype)
    hints = decode_codes(models, plan)
    target = target_latents(plan, models.silence_latent, source_latents, hints)
    clips = [clip.to(device=models.device, dtype=models.dtype) for clip in (reference.clips if reference else ())]
    references = pack_references(clips, request.batch_size, models.silence_latent)
    tensors = build_dit_inputs(plan, text, target, audible, hints, references, models.silence_latent)
    return tensors, padded


class AceStepDitSampler(io.ComfyNode):
    """Sample song latents with the DiT."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepDitSampler", display_name=DISPLAY_NAME, category=CATEGORY,
            description=("Generates song latents with the ACE-Step DiT for the task chosen in Text Encode: from an "
                         "empty latent (text2music) or a source latent (cover, repaint, extend, lego, extract, "
                         "complete). Decode the result with ACE-Step VAE Decode."),
            inputs=[
                DIT_TYPE.Input("dit", tooltip="The DiT (Load ACE-Step DiT)."),
                CONDITIONING_TYPE.Input("conditioning", tooltip="Caption, lyrics and task (ACE-Step Text Encode)."),
                io.Latent.Input("latent", tooltip=("The canvas: ACE-Step Empty Latent for text2music (its length and "
                                                   "batch set the songs'), or a source LATENT for the other tasks.")),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip=("Noise seed. Take 1 uses it; the other takes get seeds drawn from it, so a "
                                      "seed always gives the same batch.")),
                io.Int.Input("steps", default=0, min=0, max=BASE_MAX_STEPS,
                             tooltip="Denoising steps; 0 = the model's default (turbo 8, sft 50, base 32). Turbo "
                                     "takes at most 20."),
                io.Float.Input("shift", default=DEFAULT_SHIFT, min=1.0, max=5.0, step=0.1,
                               tooltip="Timestep shift (1-5): higher spends more steps on the overall structure."),
                io.Float.Input("guidance_scale", default=_DEFAULTS.guidance_scale, min=1.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance for sft/base models (1 = off); turbo ignores it."),
                io.Boolean.Input("use_adg", default=False,
                                 tooltip="sft/base: adaptive guidance (ADG) instead of the default APG."),
                io.Float.Input("cfg_interval_start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="sft/base: guidance applies from this fraction of the schedule ..."),
                io.Float.Input("cfg_interval_end", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="... up to this fraction (0-1)."),
                io.Combo.Input("infer_method", options=["ode", "sde"], default="ode",
                               tooltip="ode: deterministic flow steps; sde: re-noise at each step (seeded)."),
                io.Combo.Input("sampler", options=["euler", "heun"], default="euler",
                               tooltip="Step rule: euler (one model call per step) or heun (two, smoother)."),
                io.Float.Input("audio_cover_strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip=("cover: how long the source's structure guides the song (1 = all steps; "
                                        "lower lets the caption take over for the last steps).")),
                io.Float.Input("cover_noise_strength", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip=("cover: start from the source with this much noise instead of pure noise "
                                        "(0 = pure noise); keeps more of the original.")),
                REFERENCE_TYPE.Input("reference", optional=True,
                                     tooltip="Optional timbre reference (ACE-Step Reference Audio)."),
            ],
            outputs=[io.Latent.Output(tooltip="Song LATENT [batch, channels, frames] for ACE-Step VAE Decode.")],
        )

    @classmethod
    def execute(cls, dit: DitHandle, conditioning: AceStepConditioning, latent: dict[str, Any], seed: int,
                steps: int, shift: float, guidance_scale: float, use_adg: bool, cfg_interval_start: float,
                cfg_interval_end: float, infer_method: str, sampler: str, audio_cover_strength: float,
                cover_noise_strength: float, reference: Optional[ReferenceAudio] = None) -> io.NodeOutput:
        settings = dict(seeds=seed, steps=steps or None, shift=shift, guidance_scale=guidance_scale, use_adg=use_adg,
                        cfg_interval_start=cfg_interval_start, cfg_interval_end=cfg_interval_end,
                        infer_method=infer_method, sampler_mode=sampler, audio_cover_strength=audio_cover_strength,
                        cover_noise_strength=cover_noise_strength)
        with user_errors(DISPLAY_NAME):
            request = resolve_request(build_request(conditioning, latent, settings), dit.variant, random.Random(seed))
            plan = latent_plan(request, latent)
            _check_source_latent(latent, plan, dit)
            if reference is not None and reference.clips and reference.clips[0].shape[-1] != dit.latent_channels:
                raise AceStepError("reference was encoded by a VAE that does not belong to this DiT; use the "
                                   "DiT's VAE in ACE-Step Reference Audio.")
            text = conditioning.batch_text(conditioning.prompts(request, plan))  # before the DiT loads
            models = dit.loaded_models()
            tensors, padded = task_tensors(models, request, plan, latent, text, reference)
            seams = seams_for(request, plan)
            latents = sample_latents(models, request, tensors, make_schedule(request, models), seams,
                                     stage_progress(), interrupted)
        samples = latents.transpose(1, 2).float().to(comfy.model_management.intermediate_device())
        record = SongRecord(request, plan, padded, seams)
        return io.NodeOutput({"samples": samples, "type": "audio", SONG_KEY: record})


SAMPLER_NODES: list[type[io.ComfyNode]] = [AceStepDitSampler]
