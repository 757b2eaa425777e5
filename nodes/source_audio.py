"""Audio that steers a song: Source Audio Encode, Repaint Mask and Reference Audio, and the LATENT extras.

A source LATENT is ComfyUI's standard audio latent (`samples` `[B, C, T]`, `type` "audio") plus the
recording behind it (`acestep_source`), because the tasks need more than latents: the sampler checks
whether the source is silent, a repaint splices the source waveform back after decoding, and an extend
(a repaint range past either end) must VAE-encode the zero-padded recording, as the official pipeline
does, rather than pad latents. Repaint Mask adds `acestep_region`, the range to regenerate.

Seeds: the engine samples the VAE posterior and picks the reference pieces from generators derived from
the song's seed. These nodes run before the sampler, so each takes its own `seed`; set it to the
sampler's seed to get exactly the song the `acestep` command line makes from the same settings.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Optional

import comfy.model_management
import torch
from comfy_api.latest import io

from acestep_core.audio import encode_latents, is_silent_input, reference_clips, to_model_audio
from acestep_core.constants import SAMPLE_RATE, VAE_HOP
from acestep_core.errors import AceStepError
from acestep_core.pipeline import ENCODE_SALT, REFERENCE_SALT, derived_seed, encode_clips
from acestep_core.task_inputs import MIN_FRAMES, TaskPlan, pad_source, plan_task
from acestep_core.tasks import ENCODE_MODES, MAX_DURATION, REPAINT_MODES, AudioData, GenerationRequest, check_request

from .common import CATEGORY, interrupted, progress_bar, user_errors
from .model_handles import VAE_TYPE, VaeHandle

SOURCE_KEY = "acestep_source"
REGION_KEY = "acestep_region"
REFERENCE_TYPE = io.Custom("ACESTEP_REFERENCE")
MAX_BATCH = 8
SEED_MAX = 2**32 - 1
SEED_TOOLTIP = ("Seed of the VAE posterior sample{extra}. Use the DiT Sampler's seed to match the acestep "
                "command line exactly.")
ENCODE_MODE_TOOLTIP = ("seeded: sample the VAE posterior from the seed, like the official pipeline (which leaves "
                       "it unseeded); mean: the posterior mean, no randomness.")


@dataclass(frozen=True, eq=False)
class SourceAudio:
    """The recording behind a source LATENT.

    `waveform` is the unpadded source, 48 kHz stereo `[2, N]` float32 on the CPU; `vae`, `encode_mode`
    and `seed` made the latent (and re-encode it for an extend); `pad_left`/`pad_right` are the outpaint
    zero samples the latent's `samples` include.
    """

    waveform: torch.Tensor
    vae: VaeHandle
    encode_mode: str
    seed: int
    pad_left: int = 0
    pad_right: int = 0


@dataclass(frozen=True)
class RepaintRegion:
    """The range a Repaint Mask asks to regenerate, in seconds of the source (end None = its end)."""

    start: float
    end: Optional[float]
    mode: str
    strength: float


@dataclass(frozen=True, eq=False)
class ReferenceAudio:
    """ACESTEP_REFERENCE: encoded 30 s timbre clips, one `[750, C]` float32 CPU tensor per reference."""

    clips: tuple[torch.Tensor, ...]


def encode_source_waveform(vae: VaeHandle, waveform: torch.Tensor, encode_mode: str, seed: int) -> torch.Tensor:
    """`[2, N]` 48 kHz → float32 CPU latents `[C, N // 1920]`, tiled, as the pipeline's source encode does."""
    generator = torch.Generator().manual_seed(derived_seed(seed, ENCODE_SALT))
    latents = encode_latents(vae.load(), waveform[None], sample=encode_mode == "seeded", generator=generator,
                             progress=progress_bar(), cancel=interrupted)
    return latents[0].float().cpu()


def _batch_latent(latent: torch.Tensor, batch: int) -> torch.Tensor:
    return latent[None].repeat(batch, 1, 1).to(comfy.model_management.intermediate_device())


def model_audio(audio: dict[str, Any], field: str) -> list[torch.Tensor]:
    """Every clip of an AUDIO input as 48 kHz stereo `[2, N]`, with the input's name in errors."""
    waveform, rate = audio.get("waveform"), audio.get("sample_rate")
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or not isinstance(rate, int):
        raise AceStepError(f"{field}: expected AUDIO {{waveform [batch, channels, samples], sample_rate}}; "
                           "connect a Load Audio node or another audio output.")
    return [to_model_audio(item, rate, f"{field} (item {index + 1})") for index, item in enumerate(waveform)]


def latent_source(latent: dict[str, Any]) -> Optional[SourceAudio]:
    return latent.get(SOURCE_KEY)


def request_audio_fields(latent: dict[str, Any]) -> dict[str, Any]:
    """The `GenerationRequest` fields a LATENT decides: its source audio and repaint range, if any."""
    fields: dict[str, Any] = {}
    source = latent_source(latent)
    if source is not None:
        fields.update(src_audio=AudioData(source.waveform, SAMPLE_RATE), encode_mode=source.encode_mode)
    region: Optional[RepaintRegion] = latent.get(REGION_KEY)
    if region is not None:
        fields.update(repaint_start=region.start, repaint_end=region.end, repaint_mode=region.mode,
                      repaint_strength=region.strength)
    return fields


def latent_plan(request: GenerationRequest, latent: dict[str, Any]) -> TaskPlan:
    """The engine's task plan for a checked request, with the song length taken from an empty LATENT.

    The pipeline derives a text2music length from the requested duration; in ComfyUI the latent is the
    canvas, so its frame count wins (a source or audio codes still decide, as in the pipeline).
    """
    source = latent_source(latent)
    plan = plan_task(request, source.waveform.shape[-1] if source is not None and request.src_audio is not None
                     else None)
    if plan.source_samples is None and all(codes is None for codes in plan.codes):
        frames = int(latent["samples"].shape[-1])
        plan = dataclasses.replace(plan, frames=max(MIN_FRAMES, frames), item_frames=(frames,) * plan.batch_size)
    return plan


def _check_length(waveform: torch.Tensor, field: str) -> None:
    seconds = waveform.shape[-1] / SAMPLE_RATE
    if waveform.shape[-1] < VAE_HOP:
        raise AceStepError(f"{field} is {seconds:.3f} s long, shorter than one latent frame (0.04 s); give longer "
                           "audio.")
    if seconds > MAX_DURATION:
        raise AceStepError(f"{field} is {seconds:.1f} s long; ACE-Step takes at most {MAX_DURATION:g} s. Trim it "
                           "first (e.g. with Trim Audio Duration).")


def _seed_input(extra: str = "") -> io.Int.Input:
    return io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=False,
                        tooltip=SEED_TOOLTIP.format(extra=extra))


def _mode_input() -> io.Combo.Input:
    return io.Combo.Input("encode_mode", options=list(ENCODE_MODES), default="seeded", tooltip=ENCODE_MODE_TOOLTIP)


class AceStepSourceAudioEncode(io.ComfyNode):
    """Encode a recording for cover, repaint, extend, lego, extract and complete."""

    DISPLAY_NAME = "ACE-Step Source Audio Encode"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepSourceAudioEncode", display_name=cls.DISPLAY_NAME, category=CATEGORY,
            description=("Encodes a recording with the VAE (in 30 s tiles) into a source LATENT for the tasks "
                         "that start from audio: cover, repaint, extend, lego, extract, complete."),
            inputs=[
                VAE_TYPE.Input("vae", tooltip="The ACE-Step VAE (Load ACE-Step VAE)."),
                io.Audio.Input("audio", tooltip=("The source recording, any rate and channel count (mono is doubled, "
                                                 "extra channels dropped); resampled to 48 kHz stereo. One clip.")),
                _mode_input(),
                _seed_input(),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH,
                             tooltip="How many takes the sampler makes from this source (each gets its own noise)."),
            ],
            outputs=[io.Latent.Output(tooltip=("Audio LATENT [batch, channels, frames] at 25 frames/s, carrying the "
                                               "recording for the sampler and Repaint Mask."))],
        )

    @classmethod
    def execute(cls, vae: VaeHandle, audio: dict[str, Any], encode_mode: str, seed: int,
                batch_size: int) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            clips = model_audio(audio, "audio")
            if len(clips) != 1:
                raise AceStepError(f"audio holds a batch of {len(clips)} clips; the source is one recording. "
                                   "Pick one clip (e.g. split the batch) and use batch_size for several takes.")
            _check_length(clips[0], "audio")
            if not 1 <= batch_size <= MAX_BATCH:
                raise AceStepError(f"batch_size is {batch_size}; set it between 1 and {MAX_BATCH}.")
            latent = encode_source_waveform(vae, clips[0], encode_mode, seed)
        source = SourceAudio(clips[0].cpu(), vae, encode_mode, seed)
        return io.NodeOutput({"samples": _batch_latent(latent, batch_size), "type": "audio", SOURCE_KEY: source})


class AceStepRepaintMask(io.ComfyNode):
    """Mark the range of a source to regenerate; past either end it extends the song."""

    DISPLAY_NAME = "ACE-Step Repaint Mask"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepRepaintMask", display_name=cls.DISPLAY_NAME, category=CATEGORY,
            description=("Marks the part of a source to regenerate (repaint task). A start below 0 or an end past "
                         "the source extends the song there (the recording is padded with silence and re-encoded)."),
            inputs=[
                io.Latent.Input("latent", tooltip="A source LATENT from ACE-Step Source Audio Encode."),
                io.Float.Input("repaint_start", default=0.0, min=-MAX_DURATION, max=MAX_DURATION, step=0.1,
                               tooltip=("Start of the range in seconds of the source. Below 0 adds that much new "
                                        "music before the song (extend).")),
                io.Float.Input("repaint_end", default=-1.0, min=-1.0, max=MAX_DURATION, step=0.1,
                               tooltip=("End of the range in seconds; -1 means the end of the source. Past the end "
                                        "adds new music after the song (extend).")),
                io.Combo.Input("mode", options=list(REPAINT_MODES), default="balanced",
                               tooltip=("How the new part joins the rest: conservative keeps the most of the source "
                                        "at the seams, aggressive lets the model decide, balanced sits between "
                                        "(set by strength).")),
                io.Float.Input("strength", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Balanced mode only: 0 joins like conservative, 1 like aggressive."),
            ],
            outputs=[io.Latent.Output(tooltip="The source LATENT with the range (longer when it extends the song).")],
        )

    @classmethod
    def execute(cls, latent: dict[str, Any], repaint_start: float, repaint_end: float, mode: str,
                strength: float) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            source = latent_source(latent)
            if source is None:
                raise AceStepError("latent has no recording: Repaint Mask works on the LATENT of ACE-Step Source "
                                   "Audio Encode; connect one.")
            end = None if repaint_end == -1 else repaint_end
            request = GenerationRequest(task="repaint", src_audio=AudioData(source.waveform, SAMPLE_RATE),
                                        repaint_start=repaint_start, repaint_end=end, repaint_mode=mode,
                                        repaint_strength=strength)
            check_request(request)
            plan = plan_task(request, source.waveform.shape[-1])
            samples = latent["samples"]
            if (plan.pad_left, plan.pad_right) != (source.pad_left, source.pad_right):
                encoded = encode_source_waveform(source.vae, pad_source(source.waveform, plan), source.encode_mode,
                                                 source.seed)
                samples = _batch_latent(encoded, samples.shape[0])
                source = dataclasses.replace(source, pad_left=plan.pad_left, pad_right=plan.pad_right)
        region = RepaintRegion(float(repaint_start), end, mode, float(strength))
        return io.NodeOutput({**latent, "samples": samples, SOURCE_KEY: source, REGION_KEY: region})


class AceStepReferenceAudio(io.ComfyNode):
    """Encode timbre references: the sampler borrows their sound (instruments, voice colour)."""

    DISPLAY_NAME = "ACE-Step Reference Audio"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepReferenceAudio", display_name=cls.DISPLAY_NAME, category=CATEGORY,
            description=("Encodes reference recordings whose timbre the song should borrow. Each clip becomes a "
                         "30 s reference: three 10 s pieces, one from each third (short clips are looped)."),
            inputs=[
                VAE_TYPE.Input("vae", tooltip="The ACE-Step VAE (Load ACE-Step VAE)."),
                io.Audio.Input("audio", tooltip=("Reference recording(s): each clip of the batch is one reference; any "
                                                 "rate and channel count. Silent clips are refused.")),
                _mode_input(),
                _seed_input(" and of where the 10 s pieces are taken"),
            ],
            outputs=[REFERENCE_TYPE.Output(display_name="reference",
                                           tooltip="Timbre reference for the DiT Sampler's reference input.")],
        )

    @classmethod
    def execute(cls, vae: VaeHandle, audio: dict[str, Any], encode_mode: str, seed: int) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            rng = random.Random(derived_seed(seed, REFERENCE_SALT))
            clips = []
            for index, waveform in enumerate(model_audio(audio, "audio")):
                if bool(is_silent_input(waveform)):
                    raise AceStepError(f"audio item {index + 1} is silent; give a reference with sound in it.")
                clips.append(reference_clips(waveform, rng))
            network = vae.load()
            generator = torch.Generator().manual_seed(derived_seed(seed, REFERENCE_SALT))
            encoded = encode_clips(network, clips, sample=encode_mode == "seeded", generator=generator,
                                   cancel=interrupted, on_clip=progress_bar())
        return io.NodeOutput(ReferenceAudio(tuple(latent.float().cpu() for latent in encoded)))


SOURCE_NODES: list[type[io.ComfyNode]] = [AceStepSourceAudioEncode, AceStepRepaintMask, AceStepReferenceAudio]
