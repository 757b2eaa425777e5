"""Turn a dataset into the tensors the LoRA loop trains on, cached on disk so that re-runs skip the encoders.

Per song, as the official preprocessing does (acestep/training/dataset_builder_modules/preprocess*.py):
- audio → stereo 48 kHz, cut at `max_duration` (240 s) → tiled VAE encode, a posterior *sample* (the official
  code samples; we seed it, so a cache is reproducible) → `target_latents` [T, C];
- the caption prompt (text2music instruction, the caption with the trigger word, the four metas lines)
  through the text encoder, padded to 256 tokens, and the raw lyrics (`[Instrumental]` when empty, no
  language header) as token embeddings padded to 512 tokens; these go through the DiT's condition encoder
  with an empty timbre reference (one zero frame) → `encoder_hidden_states` [L, E] and its mask;
- `context_latents` [T, 2C]: the silence latent next to an all-ones chunk mask (plain text2music).

Each cache file is named by a hash of everything that shapes it (the audio bytes, the prompts, the settings
and a fingerprint of the three networks' weights), so a changed caption or model makes a new file and an
unchanged song is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from acestep_core.audio import encode_latents, load_audio, to_model_audio
from acestep_core.constants import SAMPLE_RATE
from acestep_core.errors import AceStepError
from acestep_core.models.acestep import AceStepModel
from acestep_core.models.vae import OobleckVAE
from acestep_core.task_inputs import silence_frames
from acestep_core.text.encoder import TextEncoder
from acestep_core.text.prompts import TEXT2MUSIC_INSTRUCTION, caption_prompt, metas_block
from acestep_core.training.dataset import INSTRUMENTAL, Dataset, Sample
from acestep_core.vae_tiling import Cancelled

PathLike = Union[str, Path]
TRAIN_TEXT_TOKENS = 256    # the official preprocessing pads/cuts captions to this many tokens
TRAIN_LYRIC_TOKENS = 512   # ... and lyrics to this many
MAX_DURATION = 240.0
CACHE_FORMAT = "acestep-lora-cache"
CACHE_VERSION = 1
TENSOR_NAMES = ("target_latents", "encoder_hidden_states", "encoder_attention_mask", "context_latents")
ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], Optional[bool]]


@dataclass(frozen=True)
class TrainingItem:
    """One cached song: clean latents [T, C], condition [L, E] (+ mask [L]) and context latents [T, 2C]."""

    name: str
    target_latents: torch.Tensor
    encoder_hidden_states: torch.Tensor
    encoder_attention_mask: torch.Tensor
    context_latents: torch.Tensor


def text_inputs(dataset: Dataset, sample: Sample, seconds: float) -> tuple[str, str]:
    """(caption prompt, lyrics) exactly as the official trainer feeds them to the text encoder."""
    metas = metas_block(sample.bpm, sample.timesignature, sample.keyscale, seconds)
    prompt = caption_prompt(TEXT2MUSIC_INSTRUCTION, dataset.training_caption(sample), metas)
    return prompt, sample.lyrics.strip() or INSTRUMENTAL


def _fixed_tokens(text_encoder: TextEncoder, text: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = text_encoder.tokenize([text], length).fit(length, text_encoder.tokenizer.pad_id)
    return batch.ids, batch.mask


def encode_condition(dit: AceStepModel, text_encoder: TextEncoder, prompt: str, lyrics: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Condition [1, L, E] and bool mask [1, L] for one song (fixed-length text, empty timbre reference)."""
    parameter = next(dit.parameters())
    device, dtype = parameter.device, parameter.dtype
    caption_ids, caption_mask = _fixed_tokens(text_encoder, prompt, TRAIN_TEXT_TOKENS)
    lyric_ids, lyric_mask = _fixed_tokens(text_encoder, lyrics, TRAIN_LYRIC_TOKENS)
    text_states = text_encoder.caption_states(caption_ids).to(device=device, dtype=dtype)
    lyric_states = text_encoder.lyric_embeddings(lyric_ids).to(device=device, dtype=dtype)
    timbre = torch.zeros(1, 1, dit.config.timbre_hidden_dim, device=device, dtype=dtype)
    with torch.no_grad():
        return dit.encoder(text_states, caption_mask.to(device), lyric_states, lyric_mask.to(device), timbre,
                           torch.zeros(1, dtype=torch.long, device=device))


def context_latents(silence_latent: torch.Tensor, frames: int) -> torch.Tensor:
    """[T, 2C]: silence frames as the source, then a chunk mask of ones (text2music: generate everything)."""
    source = silence_frames(silence_latent, frames)
    return torch.cat([source, torch.ones_like(source)], dim=-1)


def module_fingerprint(module: nn.Module) -> str:
    """A cheap hash of a network's weights (names, shapes and a strided sample of every tensor)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(flat[::step].to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def preprocess_dataset(dataset: Dataset, dit: AceStepModel, silence_latent: torch.Tensor, vae: OobleckVAE,
                       text_encoder: TextEncoder, cache_dir: PathLike, *, max_duration: float = MAX_DURATION,
                       vae_sample: bool = True, seed: int = 0, progress: Optional[ProgressFn] = None,
                       cancel: Optional[CancelFn] = None) -> list[Path]:
    """Cache every song of `dataset` under `cache_dir` (reusing files already there); returns their paths."""
    if not dataset.samples:
        raise AceStepError("The dataset has no songs; scan a folder with audio files first.")
    if not 1.0 <= max_duration <= 600.0:
        raise AceStepError(f"max_duration {max_duration} s must be within 1–600 seconds.")
    folder = Path(cache_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    models = {"dit": module_fingerprint(dit), "vae": module_fingerprint(vae),
              "text": module_fingerprint(text_encoder.model)}
    paths = []
    total = len(dataset.samples)
    for index, sample in enumerate(dataset.samples):
        if cancel is not None and cancel():
            raise Cancelled(f"Preprocessing cancelled after {index} of {total} songs.")
        if progress is not None:
            progress(index, total, sample.name)
        paths.append(_cache_song(dataset, sample, dit, silence_latent, vae, text_encoder, folder, models,
                                 max_duration, vae_sample, seed))
    if progress is not None:
        progress(total, total, "")
    return paths


def _cache_song(dataset: Dataset, sample: Sample, dit: AceStepModel, silence_latent: torch.Tensor,
                vae: OobleckVAE, text_encoder: TextEncoder, folder: Path, models: dict[str, str],
                max_duration: float, vae_sample: bool, seed: int) -> Path:
    audio_path = dataset.audio_path(sample)
    seconds = min(sample.duration or max_duration, max_duration)
    prompt, lyrics = text_inputs(dataset, sample, seconds)
    recipe = {"version": CACHE_VERSION, "audio": file_digest(audio_path), "prompt": prompt, "lyrics": lyrics,
              "max_duration": max_duration, "vae_sample": vae_sample, "seed": seed, "models": models}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    target = folder / f"{Path(sample.audio).stem}-{key[:16]}.safetensors"
    if target.is_file():
        return target
    waveform, rate = load_audio(audio_path)
    audio = to_model_audio(waveform, rate, str(audio_path))[:, : int(max_duration * SAMPLE_RATE)]
    if audio.shape[-1] < vae.hop_length:
        raise AceStepError(f"Audio file {audio_path} is shorter than one latent frame; remove it from the dataset.")
    generator = torch.Generator(device=vae.device).manual_seed(int(key[:15], 16)) if vae_sample else None
    latents = encode_latents(vae, audio.unsqueeze(0).to(device=vae.device, dtype=vae.dtype), sample=vae_sample,
                             generator=generator)[0].transpose(0, 1)
    condition, mask = encode_condition(dit, text_encoder, prompt, lyrics)
    context = context_latents(silence_latent, latents.shape[0])
    tensors = {"target_latents": latents, "encoder_hidden_states": condition[0],
               "encoder_attention_mask": mask[0].to(torch.uint8), "context_latents": context}
    metadata = {"format": CACHE_FORMAT, "version": str(CACHE_VERSION), "name": sample.name, "prompt": prompt,
                "lyrics": lyrics, "audio": str(audio_path)}
    partial = target.with_suffix(".partial")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(partial), metadata=metadata)
    os.replace(partial, target)
    return target


def load_item(path: PathLike) -> TrainingItem:
    """Read one cache file, checking it is ours and complete."""
    source = Path(path)
    try:
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise AceStepError(f"Cannot read training cache {source} ({exc}); delete it and preprocess again.") from exc
    if metadata.get("format") != CACHE_FORMAT or metadata.get("version") != str(CACHE_VERSION):
        raise AceStepError(f"{source} is not a training cache of this version; preprocess the dataset again.")
    missing = [name for name in TENSOR_NAMES if name not in tensors]
    if missing:
        raise AceStepError(f"Training cache {source} lacks {', '.join(missing)}; delete it and preprocess again.")
    latents, context = tensors["target_latents"], tensors["context_latents"]
    if latents.ndim != 2 or context.shape != (latents.shape[0], 2 * latents.shape[1]):
        raise AceStepError(f"Training cache {source} has inconsistent shapes (latents {tuple(latents.shape)}, "
                           f"context {tuple(context.shape)}); delete it and preprocess again.")
    return TrainingItem(name=metadata.get("name", source.stem), target_latents=latents,
                        encoder_hidden_states=tensors["encoder_hidden_states"],
                        encoder_attention_mask=tensors["encoder_attention_mask"].bool(), context_latents=context)


def cached_items(folder: PathLike) -> list[Path]:
    """Every training cache file directly in `folder`, sorted."""
    source = Path(folder).expanduser()
    files = sorted(source.glob("*.safetensors")) if source.is_dir() else []
    if not files:
        raise AceStepError(f"No preprocessed songs in {source}; run the preprocessing on a dataset first.")
    return files
