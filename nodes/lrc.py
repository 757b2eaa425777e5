"""ACE-Step Lyric Timestamps: a sampled song's LATENT → LRC text, read from the DiT's own cross-attention.

The timestamps need what the DiT saw while it made the song: the same conditions (text, lyrics, task,
source, reference) and the steps it used. The DiT Sampler's LATENT carries the resolved request and
plan (`SongRecord`), so this node rebuilds the conditions exactly as the sampler built them (the
conditioning's cached encodings, the sampler's `task_tensors`) and hands them to
`acestep_core.alignment`. A batch gives one LRC per take in one STRING, each take under a `[take:N]`
line, which ACE-Step Save Audio splits again; LRC players ignore such tag lines.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import torch
from comfy_api.latest import io

from acestep_core.alignment import ALIGNMENT_SEED, DitConditions, align_lyrics, dit_conditions
from acestep_core.errors import AceStepError
from acestep_core.pipeline_models import Models
from acestep_core.task_inputs import text_request
from acestep_core.text.prompts import build_prompts

from .common import CATEGORY, user_errors
from .model_handles import DIT_TYPE, DitHandle
from .sampler import SONG_KEY, SongRecord, task_tensors
from .source_audio import REFERENCE_TYPE, SEED_MAX, ReferenceAudio, latent_source
from .text_encode import CONDITIONING_TYPE, AceStepConditioning, song_prompts

DISPLAY_NAME = "ACE-Step Lyric Timestamps (LRC)"
TAKE_LINE = re.compile(r"^\[take:(\d+)\]$")


@dataclass(frozen=True)
class SongConditions:
    """One sampled batch as the alignment functions take it: latents `[B, T, C]`, the DiT's conditions,
    the lyrics prompt's ids `[B, L]` and tokenizer, the language the prompt names and the steps used."""

    models: Models
    record: SongRecord
    latents: torch.Tensor
    conditions: DitConditions
    lyric_ids: torch.Tensor
    tokenizer: Any
    language: str
    steps: int


def song_record(latent: Any) -> SongRecord:
    """The sampler's record of a LATENT, or an error saying which LATENT to connect."""
    record = latent.get(SONG_KEY) if isinstance(latent, dict) else None
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(record, SongRecord) or not isinstance(samples, torch.Tensor) or samples.ndim != 3:
        raise AceStepError("latent: connect the LATENT output of ACE-Step DiT Sampler (or of ACE-Step Best of N); "
                           "timestamps and scores need the conditions the song was made with.")
    if samples.shape[0] != record.request.batch_size:
        raise AceStepError(f"latent holds {samples.shape[0]} takes but its sampler record {record.request.batch_size}; "
                           "connect the sampler's LATENT unchanged.")
    return record


def parse_heads(text: str) -> Optional[dict[int, list[int]]]:
    """The `alignment_heads` input: '' = the DiT's own config, else JSON `{"layer": [heads]}`."""
    if not text.strip():
        return None
    try:
        raw = json.loads(text)
        heads = {int(layer): [int(head) for head in values] for layer, values in raw.items()}
    except (ValueError, TypeError, AttributeError):
        raise AceStepError(f"alignment_heads '{text}' is not JSON like {{\"2\": [6], \"3\": [10, 11]}} (layer → "
                           "head numbers); leave it empty to use the DiT's own heads.") from None
    if not heads or any(layer < 0 or not values or min(values) < 0 for layer, values in heads.items()):
        raise AceStepError(f"alignment_heads '{text}' needs at least one layer with at least one head, all numbers "
                           "0 or more.")
    return heads


def song_conditions(dit: DitHandle, conditioning: AceStepConditioning, latent: dict[str, Any],
                    source_latent: Optional[dict[str, Any]], reference: Optional[ReferenceAudio]) -> SongConditions:
    """Rebuild the DiT's conditions of a sampled batch, as the DiT Sampler built them for that song."""
    record = song_record(latent)
    request, plan = record.request, record.plan
    if request.src_audio is not None:
        if source_latent is None or latent_source(source_latent) is None:
            raise AceStepError(f"source_latent: this song is a {request.task} of a recording; connect the LATENT "
                               "the DiT Sampler got (from Source Audio Encode or Repaint Mask).")
    elif source_latent is not None and latent_source(source_latent) is not None:
        raise AceStepError("source_latent: this song was made without a source recording; disconnect it.")
    samples = latent["samples"]
    batch = samples.shape[0]
    text = conditioning.text(song_prompts(request, plan), batch)
    models = dit.loaded_models()
    if samples.shape[1] != dit.latent_channels:
        raise AceStepError(f"latent has {samples.shape[1]} channels but this DiT works on {dit.latent_channels}: "
                           "connect the DiT that made the song.")
    canvas = source_latent if source_latent is not None else latent
    tensors, _ = task_tensors(models, request, plan, canvas, text, reference)
    prompt_batch = build_prompts(dataclasses.replace(text_request(request, plan), batch_size=1))
    return SongConditions(models, record, samples.transpose(1, 2), dit_conditions(models.dit, tensors.dit),
                          text.lyric_token_ids, conditioning.encoder.encoder.tokenizer, prompt_batch.language,
                          int(request.steps))


def join_takes(texts: list[str]) -> str:
    """One take's text as it is; several under `[take:N]` lines, separated by blank lines."""
    if len(texts) == 1:
        return texts[0]
    return "\n\n".join(f"[take:{index + 1}]" + (f"\n{text}" if text else "") for index, text in enumerate(texts))


def split_takes(text: str, count: int) -> list[str]:
    """The LRC of each of `count` takes: `[take:N]` blocks in order, or the same text for every take."""
    blocks: list[list[str]] = []
    numbers: list[int] = []
    for line in text.split("\n"):
        match = TAKE_LINE.match(line.strip())
        if match:
            numbers.append(int(match.group(1)))
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    if not numbers:
        return [text] * count
    if numbers != list(range(1, len(numbers) + 1)) or len(numbers) != count:
        raise AceStepError(f"lrc holds takes {numbers} but the audio has {count}; connect the LRC of the same batch "
                           "(ACE-Step Lyric Timestamps on the LATENT that was decoded).")
    return ["\n".join(block).strip("\n") for block in blocks]


def song_inputs() -> list[Any]:
    """The inputs the LRC and Score nodes share: the song and the settings of the alignment pass."""
    return [
        DIT_TYPE.Input("dit", tooltip="The DiT that made the song (Load ACE-Step DiT, with its LoRAs)."),
        CONDITIONING_TYPE.Input("conditioning", tooltip="The conditioning the DiT Sampler got (ACE-Step Text Encode)."),
        io.Latent.Input("latent", tooltip="The song LATENT from ACE-Step DiT Sampler (or ACE-Step Best of N)."),
        io.Int.Input("alignment_seed", default=ALIGNMENT_SEED, min=0, max=SEED_MAX,
                     tooltip="Seed of the noise the alignment pass adds (42, as the official app)."),
        io.String.Input("alignment_heads", default="",
                        tooltip=("DiT attention heads that follow the lyrics, as JSON {\"layer\": [heads]}; empty = "
                                 "the DiT's config (the official 2B heads when it names none).")),
    ]


def context_inputs() -> list[Any]:
    """The optional inputs that complete the song's conditions: its source and its timbre reference."""
    return [
        io.Latent.Input("source_latent", optional=True,
                        tooltip=("cover, repaint, extend, lego, extract, complete: the LATENT the DiT Sampler got "
                                 "(the source), so the pass sees the same conditions.")),
        REFERENCE_TYPE.Input("reference", optional=True,
                             tooltip="The timbre reference the DiT Sampler got, if any (ACE-Step Reference Audio)."),
    ]


class AceStepLyricTimestamps(io.ComfyNode):
    """LRC lyric timestamps of sampled songs from the DiT's cross-attention."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLyricTimestamps", display_name=DISPLAY_NAME, category=CATEGORY,
            description=("Times each lyric line of a sampled song from the DiT's own attention (one extra DiT pass) "
                         "and writes LRC text. Connect it to the lrc input of ACE-Step Save Audio for a .lrc file."),
            inputs=[*song_inputs(), *context_inputs()],
            outputs=[io.String.Output(display_name="lrc", tooltip=(
                "[MM:SS.xx]line per lyric line (empty without lyrics); a batch gives one [take:N] block per take."))],
        )

    @classmethod
    def execute(cls, dit: DitHandle, conditioning: AceStepConditioning, latent: dict[str, Any], alignment_seed: int,
                alignment_heads: str, source_latent: Optional[dict[str, Any]] = None,
                reference: Optional[ReferenceAudio] = None) -> io.NodeOutput:
        with user_errors(DISPLAY_NAME):
            heads = parse_heads(alignment_heads)
            song = song_conditions(dit, conditioning, latent, source_latent, reference)
            stamps = align_lyrics(song.models.dit, song.latents, song.conditions, song.lyric_ids, song.tokenizer,
                                  song.language, steps=song.steps, seed=alignment_seed, heads=heads)
        return io.NodeOutput(join_takes([stamp.lrc for stamp in stamps]))


LRC_NODES: list[type[io.ComfyNode]] = [AceStepLyricTimestamps]
