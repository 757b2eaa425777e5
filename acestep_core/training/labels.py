"""Fill a dataset's missing captions and metadata with the planner's understand mode.

The official dataset builder labels a song by encoding it to audio codes (VAE latents → the DiT's audio
tokenizer) and asking the 5 Hz LM to describe those codes (temperature 0.7, constrained decoding). We do
the same with `plan_understand`. Values the user already gave are kept; only empty fields are filled, and
lyrics only when asked (`transcribe_lyrics`), because the LM's lyrics are a guess.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Sequence

import torch

from acestep_core.audio import encode_latents, load_audio, to_model_audio
from acestep_core.errors import AceStepError
from acestep_core.models.acestep import AceStepModel
from acestep_core.models.vae import OobleckVAE
from acestep_core.planner.calls import Runner
from acestep_core.planner.modes import PlannerSettings
from acestep_core.planner.plan import plan_understand
from acestep_core.training.dataset import Dataset, Sample
from acestep_core.vae_tiling import Cancelled

LABEL_SETTINGS = PlannerSettings(temperature=0.7, top_p=1.0)
LABEL_FIELDS = ("caption", "bpm", "keyscale", "timesignature", "language")
ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], Optional[bool]]


def audio_codes(dit: AceStepModel, vae: OobleckVAE, silence_latent: torch.Tensor, waveform: torch.Tensor,
                sample_rate: int, name: str = "audio") -> list[int]:
    """Audio `[C, N]` → the 5 Hz codes the LM reads (VAE mean latents → the DiT's tokenizer)."""
    audio = to_model_audio(waveform, sample_rate, name).unsqueeze(0).to(device=vae.device, dtype=vae.dtype)
    latents = encode_latents(vae, audio, sample=False).transpose(1, 2)
    parameter = next(dit.parameters())
    latents = latents.to(device=parameter.device, dtype=parameter.dtype)
    mask = torch.ones(latents.shape[:2], device=latents.device, dtype=torch.bool)
    with torch.no_grad():
        _, codes, _ = dit.tokenize(latents, silence_latent.to(latents), mask)
    return [int(c) for c in codes.flatten().tolist()]


def label_dataset(dataset: Dataset, runner: Runner, dit: AceStepModel, vae: OobleckVAE,
                  silence_latent: torch.Tensor, *, fields: Sequence[str] = LABEL_FIELDS,
                  transcribe_lyrics: bool = False, overwrite: bool = False, seed: int = 0,
                  settings: PlannerSettings = LABEL_SETTINGS, progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelFn] = None) -> Dataset:
    """A copy of `dataset` with empty `fields` (all of them with `overwrite`) filled by the LM.

    Songs with nothing to fill are skipped without running any model. Song i is labelled with seed
    `seed + i`, so one song's label does not depend on the others.
    """
    unknown = sorted(set(fields) - set(LABEL_FIELDS))
    if unknown:
        raise AceStepError(f"Cannot auto-label {', '.join(unknown)}; choose from {', '.join(LABEL_FIELDS)}.")
    wanted = tuple(fields) + (("lyrics",) if transcribe_lyrics else ())
    samples = list(dataset.samples)
    todo = [i for i, s in enumerate(samples) if overwrite or _empty_fields(s, wanted)]
    for done, index in enumerate(todo):
        if cancel is not None and cancel():
            raise Cancelled(f"Auto-label cancelled after {done} of {len(todo)} songs.")
        sample = samples[index]
        if progress is not None:
            progress(done, len(todo), sample.name)
        waveform, rate = load_audio(dataset.audio_path(sample))
        codes = audio_codes(dit, vae, silence_latent, waveform, rate, sample.name)
        plan = plan_understand(runner, codes, seeds=[seed + index], settings=settings, cancel=cancel)
        samples[index] = _merge(sample, plan.items[0], wanted, overwrite)
    if progress is not None:
        progress(len(todo), len(todo), "")
    return dataset.with_samples(tuple(samples))


def _empty_fields(sample: Sample, fields: Sequence[str]) -> list[str]:
    return [name for name in fields if getattr(sample, name) in (None, "")]


def _merge(sample: Sample, item: object, fields: Sequence[str], overwrite: bool) -> Sample:
    updates = {}
    for name in fields:
        value = getattr(item, name, None)
        if name == "language" and value == "unknown":
            value = ""
        if value in (None, ""):
            continue
        if overwrite or getattr(sample, name) in (None, ""):
            updates[name] = int(value) if name == "bpm" else str(value)
    return replace(sample, **updates)
