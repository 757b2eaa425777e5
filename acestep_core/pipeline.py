"""A whole song in one call, built from stage functions that the ComfyUI nodes call one per node.

Stages, in the official order (tasks.md §2, §9):
`load_audio_inputs` (source and reference files → 48 kHz stereo) → `plan_task` (lengths, padding,
region) → `encode_text` (prompts → Qwen3 states) → `encode_source` (VAE / audio codes → target
latents) and `encode_references` (timbre clips) → `sample_latents` (DiT) → `decode_audio` (VAE) →
`postprocess` (anti-clip, repaint splice, normalisation, fades). `generate` runs them all and returns
the audio with everything needed to make it again (resolved request and seeds, schedule, model ids).

Randomness: the DiT noise comes from the per-item seeds exactly as in the official code. The official
VAE encode and reference-clip offsets are unseeded; here they are drawn from generators derived from
the first seed ("seeded" encode mode) or the posterior mean is used ("mean"), so a seed always gives
the same song. The SDE re-noising is likewise seeded from the first seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from acestep_core.audio import (
    Cancelled, anti_clip, apply_fades, decode_latents, encode_latents, is_silent_input, load_audio, normalize_peak,
    reference_clips, to_model_audio,
)
from acestep_core.constants import SAMPLE_RATE
from acestep_core.diffusion import Retake, run_dit
from acestep_core.errors import AceStepError
from acestep_core.pipeline_models import Models
from acestep_core.sampling import Schedule, StepInfo, base_schedule, turbo_schedule
from acestep_core.task_inputs import (
    TaskPlan, TaskTensors, build_dit_inputs, pack_references, pad_source, plan_task, target_latents, text_request,
)
from acestep_core.task_seams import RepaintSeams, repaint_seams, splice_waveform
from acestep_core.tasks import AudioData, AudioInput, GenerationRequest, resolve_request, sampler_settings
from acestep_core.text.encoder import TextConditioning
from acestep_core.text.prompts import PromptBatch, build_prompts

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]

# Salts that turn the first seed into independent streams for the encode, the reference pieces and SDE.
ENCODE_SALT, REFERENCE_SALT, _SDE_SALT = 0x5EED_E0C0, 0x5EED_0EF0, 0x5EED_05DE
_SEED_MASK = 2**63 - 1


def derived_seed(seed: int, salt: int) -> int:
    """A second seed from `seed`, so that the extra random streams never repeat the DiT noise."""
    return (seed * 6364136223846793005 + salt) & _SEED_MASK


@dataclass(frozen=True)
class AudioInputs:
    """Source audio `[2, N]` (None without one) and 30 s reference clips `[2, 1_440_000]`, all at 48 kHz."""

    source: Optional[torch.Tensor]
    references: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class GenerationResult:
    """The song and its recipe: audio `[B, 2, N]` float32 at 48 kHz, final latents `[B, T, C]`, and what made them.

    `request` is the resolved request (explicit seeds and steps): `generate(result.request, …)` with the
    same models, device and dtype gives the same audio.
    """

    audio: torch.Tensor
    sample_rate: int
    latents: torch.Tensor
    seeds: tuple[int, ...]
    schedule: Schedule
    model_ids: dict[str, str]
    request: GenerationRequest
    plan: TaskPlan
    prompts: PromptBatch


def _read(audio: AudioInput, name: str) -> torch.Tensor:
    if isinstance(audio, AudioData):
        return to_model_audio(audio.waveform, audio.sample_rate, name)
    waveform, rate = load_audio(audio)
    return to_model_audio(waveform, rate, f"{name} '{audio}'")


def load_audio_inputs(request: GenerationRequest) -> AudioInputs:
    """Read the source and reference audio of a resolved request (its first seed picks the reference pieces).

    A silent source is allowed (it becomes silence latents, as officially); a silent reference is refused.
    """
    source = _read(request.src_audio, "source audio") if request.src_audio is not None else None
    clips = []
    rng = random.Random(derived_seed(request.seeds[0], REFERENCE_SALT))
    for index, reference in enumerate(request.reference_audio):
        waveform = _read(reference, f"reference audio {index + 1}")
        if bool(is_silent_input(waveform)):
            raise AceStepError(f"Reference audio {index + 1} is silent; give audio with sound in it or drop it.")
        clips.append(reference_clips(waveform, rng))
    return AudioInputs(source, tuple(clips))


def make_schedule(request: GenerationRequest, models: Models) -> Schedule:
    """The timestep schedule of a resolved request for the loaded DiT's family."""
    if models.family == "turbo":
        return turbo_schedule(request.shift, infer_steps=request.steps, timesteps=request.timesteps,
                              dtype=models.dtype)
    return base_schedule(request.steps, request.shift, timesteps=request.timesteps, dtype=models.dtype)


def encode_text(models: Models, request: GenerationRequest, plan: TaskPlan) -> tuple[PromptBatch, TextConditioning]:
    """Caption and lyrics prompts of every item, and their Qwen3 encodings."""
    prompts = build_prompts(text_request(request, plan))
    return prompts, models.text_encoder.encode(prompts.items)


def _encode_generator(request: GenerationRequest, salt: int) -> Optional[torch.Generator]:
    return torch.Generator().manual_seed(derived_seed(request.seeds[0], salt))


def decode_codes(models: Models, plan: TaskPlan) -> list[Optional[torch.Tensor]]:
    """25 Hz hints `[5N, C]` per item with audio codes (quantizer → detokenizer), None for the others."""
    hints: list[Optional[torch.Tensor]] = []
    cache: dict[tuple[int, ...], torch.Tensor] = {}
    for codes in plan.codes:
        if codes is None:
            hints.append(None)
            continue
        if codes not in cache:
            ids = torch.tensor(codes, dtype=torch.long, device=models.device)[None, :, None]
            with torch.no_grad():
                cache[codes] = models.dit.codes_to_hints(ids)[0].to(models.dtype)
        hints.append(cache[codes])
    return hints


def encode_source(models: Models, request: GenerationRequest, plan: TaskPlan, source: Optional[torch.Tensor],
                  progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None
                  ) -> tuple[torch.Tensor, bool, Optional[torch.Tensor], list[Optional[torch.Tensor]]]:
    """Target latents `[B, T, C]`, whether the target is audible, the padded source `[2, M]`, and the hints.

    The padded source is VAE-encoded once for the whole batch (posterior sample from the seeded
    generator, or the mean); a silent one becomes silence latents without encoding.
    """
    hints = decode_codes(models, plan)
    padded = pad_source(source, plan) if source is not None and plan.source_samples is not None else None
    latents = None
    audible = padded is not None and bool(padded.abs().sum() > 1e-6)
    if padded is not None and not bool(is_silent_input(padded)):
        on_window = (lambda done, total: progress("encode", done, total)) if progress is not None else None
        encoded = encode_latents(models.vae, padded[None], sample=request.encode_mode == "seeded",
                                 generator=_encode_generator(request, ENCODE_SALT), progress=on_window,
                                 cancel=cancel)
        latents = encoded[0].transpose(0, 1).to(device=models.device, dtype=models.dtype)
    target = target_latents(plan, models.silence_latent, latents, hints)
    return target, audible, padded, hints


def encode_references(models: Models, request: GenerationRequest, clips: Sequence[torch.Tensor],
                      cancel: Optional[CancelFn] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed timbre latents `[N, 750, C]` and the item index of each clip (all items share the clips)."""
    encoded = encode_clips(models.vae, clips, sample=request.encode_mode == "seeded",
                           generator=_encode_generator(request, REFERENCE_SALT), cancel=cancel)
    latents = [latent.to(device=models.device, dtype=models.dtype) for latent in encoded]
    return pack_references(latents, request.batch_size, models.silence_latent)


def encode_clips(vae: torch.nn.Module, clips: Sequence[torch.Tensor], *, sample: bool,
                 generator: Optional[torch.Generator], cancel: Optional[CancelFn] = None,
                 on_clip: Optional[Callable[[int, int], None]] = None) -> list[torch.Tensor]:
    """VAE latents `[T, C]` of reference clips `[2, N]`, in order; an identical clip is encoded once, as the
    official handler does, so the seeded posterior draws line up with the official ones."""
    encoded: list[torch.Tensor] = []
    for index, clip in enumerate(clips):
        same = next((j for j in range(index) if torch.equal(clips[j], clip)), None)
        if same is not None:
            encoded.append(encoded[same])
        else:
            latent = encode_latents(vae, clip[None], sample=sample, generator=generator, cancel=cancel)
            encoded.append(latent[0].transpose(0, 1))
        if on_clip is not None:
            on_clip(index + 1, len(clips))
    return encoded


def prepare_inputs(models: Models, request: GenerationRequest, plan: TaskPlan, audio: AudioInputs,
                   text: TextConditioning, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None
                   ) -> tuple[TaskTensors, Optional[torch.Tensor]]:
    """Everything the sampler needs, plus the padded source waveform the repaint splice uses."""
    target, audible, padded, hints = encode_source(models, request, plan, audio.source, progress, cancel)
    references = encode_references(models, request, audio.references, cancel)
    return build_dit_inputs(plan, text, target, audible, hints, references, models.silence_latent), padded


def seams_for(request: GenerationRequest, plan: TaskPlan) -> Optional[RepaintSeams]:
    """The repaint seam settings when the plan has a region (repaint, lego), else None."""
    return repaint_seams(request.repaint_mode, request.repaint_strength) if plan.region is not None else None


def sample_latents(models: Models, request: GenerationRequest, tensors: TaskTensors, schedule: Schedule,
                   seams: Optional[RepaintSeams], progress: Optional[ProgressFn] = None,
                   cancel: Optional[CancelFn] = None) -> torch.Tensor:
    """Run the DiT and return the final latents `[B, T, C]` after `latent·rescale + shift`."""
    settings = sampler_settings(request, seams.injection_ratio if seams else 0.0,
                                seams.latent_crossfade_frames if seams else 0)

    def on_step(info: StepInfo) -> None:
        if progress is not None:
            progress("sample", info.step + 1, info.num_steps)
        if cancel is not None and cancel():
            raise Cancelled(f"Generation cancelled after step {info.step + 1} of {info.num_steps}.")

    retake = Retake(request.retake_variance, list(request.retake_seeds)) if request.retake_variance > 0 else None
    sde = None
    if request.infer_method == "sde":
        sde = torch.Generator(device=models.device).manual_seed(derived_seed(request.seeds[0], _SDE_SALT))
    latents = run_dit(models.dit, tensors.dit, schedule, settings, list(request.seeds), retake=retake,
                      repaint=tensors.repaint, sde_generator=sde, callback=on_step)
    return latents * request.latent_rescale + request.latent_shift


def decode_audio(models: Models, latents: torch.Tensor, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFn] = None) -> torch.Tensor:
    """DiT latents `[B, T, C]` → float32 CPU audio `[B, 2, T·1920]` (tiled decode, not yet clipped)."""
    on_window = (lambda done, total: progress("decode", done, total)) if progress is not None else None
    return decode_latents(models.vae, latents.transpose(1, 2), progress=on_window, cancel=cancel)


def postprocess(audio: torch.Tensor, request: GenerationRequest, plan: TaskPlan, padded_source: Optional[torch.Tensor],
                seams: Optional[RepaintSeams]) -> torch.Tensor:
    """Anti-clip per item, splice the source back around a repaint, −1 dBFS peak normalisation, fades (§9)."""
    audio = anti_clip(audio)
    if seams is not None and seams.splice and padded_source is not None and plan.region is not None:
        audio = splice_waveform(audio, padded_source, plan.region.start, plan.region.end, seams.wav_crossfade_samples)
    if request.normalize:
        audio = normalize_peak(audio, request.normalization_db)
    if request.fade_in > 0 or request.fade_out > 0:
        audio = apply_fades(audio, SAMPLE_RATE, request.fade_in, request.fade_out)
    return audio


def _check_cancel(cancel: Optional[CancelFn], stage: str) -> None:
    if cancel is not None and cancel():
        raise Cancelled(f"Generation cancelled before {stage}.")


def generate(request: GenerationRequest, models: Models, device: Union[str, torch.device, None] = None,
             dtype: Union[str, torch.dtype, None] = None, progress: Optional[ProgressFn] = None,
             cancel: Optional[CancelFn] = None, rng: Optional[random.Random] = None) -> GenerationResult:
    """Make the songs of `request` with `models` (moved to `device`/`dtype` if given).

    `progress(stage, done, total)` is called with stages "encode", "sample" and "decode"; `cancel()`
    returning True stops at the next step or window with `Cancelled`. `rng` picks missing seeds
    (a fresh unseeded one by default). Every user error is an `AceStepError` raised before any output.
    """
    models = models.to(device, dtype)
    request = resolve_request(request, models.variant, rng or random.Random())
    audio_inputs = load_audio_inputs(request)
    plan = plan_task(request, audio_inputs.source.shape[-1] if audio_inputs.source is not None else None)
    schedule = make_schedule(request, models)
    seams = seams_for(request, plan)
    _check_cancel(cancel, "text encoding")
    prompts, text = encode_text(models, request, plan)
    _check_cancel(cancel, "audio encoding")
    tensors, padded = prepare_inputs(models, request, plan, audio_inputs, text, progress, cancel)
    _check_cancel(cancel, "sampling")
    latents = sample_latents(models, request, tensors, schedule, seams, progress, cancel)
    audio = decode_audio(models, latents, progress, cancel)
    audio = postprocess(audio, request, plan, padded, seams)
    return GenerationResult(audio, SAMPLE_RATE, latents.float().cpu(), tuple(request.seeds), schedule,
                            dict(models.ids), request, plan, prompts)
