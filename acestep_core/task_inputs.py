"""From a resolved request to the DiT's inputs, per task, the way the official handler builds them.

Two steps, split so the ComfyUI nodes and the pipeline share them:
- `plan_task`: pure arithmetic on lengths: latent length per item and for the batch, outpaint padding,
  the repaint region in seconds and frames, which items are covers (tasks.md §3.1, §3.3, §3.4);
- `build_dit_inputs`: tensors: target latents → `src_latents`, chunk masks, LM hints, the reference
  pack, with the text conditioning (§3.4, §3.5, §4, §7).
`text_request` gives the text side what it needs for the prompts (§3.6, §3.7).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from acestep_core.constants import CODE_RATE, LATENT_RATE, NUM_AUDIO_CODES, SAMPLE_RATE, TIMBRE_FRAMES, VAE_HOP
from acestep_core.diffusion import DitInputs
from acestep_core.errors import AceStepError
from acestep_core.sampling import RepaintInputs
from acestep_core.tasks import DEFAULT_DURATION, MAX_DURATION, REGION_TASKS, GenerationRequest, dit_task_name
from acestep_core.text.encoder import TextConditioning
from acestep_core.text.prompts import TextRequest

MIN_FRAMES = 128  # the official minimum batch latent length (5.12 s)
FRAMES_PER_CODE = LATENT_RATE // CODE_RATE
_CODE_TOKEN = re.compile(r"<\|audio_code_(\d+)\|>")


@dataclass(frozen=True)
class Region:
    """The repainted range, in seconds on the padded timeline (`start'`, `end'` of §3.3)."""

    start: float
    end: float


@dataclass(frozen=True)
class TaskPlan:
    """Lengths and layout of one batch, decided before any tensor exists.

    `dit_task` is the task the DiT sees (text2music with audio codes becomes cover). `source_samples`
    is the unpadded source length at 48 kHz when a source is used; `pad_left`/`pad_right` the outpaint
    zero padding in samples; `item_frames` the latent length of each item before batch padding.
    """

    task: str
    dit_task: str
    frames: int
    item_frames: tuple[int, ...]
    source_samples: Optional[int]
    pad_left: int
    pad_right: int
    codes: tuple[Optional[tuple[int, ...]], ...]
    region: Optional[Region]
    chunk_mask_mode: str

    @property
    def batch_size(self) -> int:
        return len(self.item_frames)

    @property
    def padded_samples(self) -> Optional[int]:
        if self.source_samples is None:
            return None
        return self.pad_left + self.source_samples + self.pad_right

    @property
    def frame_range(self) -> Optional[tuple[int, int]]:
        """`[f0, f1)` of the region in latent frames (floor of seconds·25, clamped into the batch)."""
        if self.region is None:
            return None
        f0 = int(self.region.start * SAMPLE_RATE // VAE_HOP)
        f1 = int(self.region.end * SAMPLE_RATE // VAE_HOP)
        f0 = min(max(f0, 0), self.frames - 1)
        return f0, min(max(f1, f0 + 1), self.frames)

    @property
    def is_covers(self) -> tuple[bool, ...]:
        """Items whose context is the FSQ round trip (or hints): cover, or any item with codes, no region."""
        if self.region is not None:
            return (False,) * self.batch_size
        return tuple(self.dit_task == "cover" or codes is not None for codes in self.codes)

    @property
    def seconds(self) -> float:
        """Length of every output item: the batch latent length in seconds (outputs are never cropped)."""
        return self.frames * VAE_HOP / SAMPLE_RATE


def parse_audio_codes(text: str) -> tuple[int, ...]:
    """`<|audio_code_N|>` tokens → code ids, clamped to 0..63999 as the official handler does."""
    codes = tuple(min(max(int(match), 0), NUM_AUDIO_CODES - 1) for match in _CODE_TOKEN.findall(text))
    if not codes:
        raise AceStepError("Audio codes hold no <|audio_code_N|> token; give codes as written by the 5 Hz LM "
                           "(e.g. '<|audio_code_12|><|audio_code_7|>…') or leave them empty.")
    return codes


def _duration_frames(duration: Optional[float]) -> int:
    seconds = max(0.1, round(duration, 1)) if duration is not None and duration > 0 else DEFAULT_DURATION
    return int(seconds * SAMPLE_RATE) // VAE_HOP


def _region(request: GenerationRequest, source_samples: int) -> tuple[int, int, Region]:
    """Outpaint padding (samples) and the region on the padded timeline, refusing ranges outside the audio."""
    source_s = source_samples / SAMPLE_RATE
    start = float(request.repaint_start)
    end_given = request.repaint_end is not None and request.repaint_end >= 0
    end = float(request.repaint_end) if end_given else source_s
    if start >= source_s and not end_given:
        raise AceStepError(
            f"Repaint start {start:g} s is at or after the end of the source ({source_s:.2f} s), so the range is "
            f"empty. To extend the song, also give an end after {source_s:.2f} s (e.g. start {source_s:.2f}, "
            f"end {source_s + 30:.2f}).")
    if start > source_s:
        raise AceStepError(
            f"Repaint start {start:g} s lies after the end of the source ({source_s:.2f} s), which would leave "
            f"a gap; start at or before {source_s:.2f} s to extend the song.")
    left = max(0.0, -start)
    right = max(0.0, end - source_s)
    if left + source_s + right > MAX_DURATION:
        raise AceStepError(
            f"Repaint range {start:g}–{end:g} s makes the song {left + source_s + right:.1f} s long; the limit is "
            f"{MAX_DURATION:g} s. Extend by less.")
    return int(left * SAMPLE_RATE), int(right * SAMPLE_RATE), Region(start + left, end + left)


def plan_task(request: GenerationRequest, source_samples: Optional[int]) -> TaskPlan:
    """Lengths, padding and region of a checked request (§3.1, §3.3); `source_samples` at 48 kHz, if any.

    Codes win over everything: an item with N codes is 5N frames long. A source fixes the length
    (plus outpaint padding for repaint/lego). Otherwise the requested duration (120 s when unknown).
    The batch length is the longest item, at least 128 frames.
    """
    codes = tuple(parse_audio_codes(c) if c is not None else None for c in request.codes_per_item())
    has_codes = any(c is not None for c in codes)
    dit_task = "cover" if request.task == "text2music" and has_codes else dit_task_name(request.task)
    pad_left = pad_right = 0
    region = None
    if has_codes:
        source_samples = None
    if source_samples is not None:
        if source_samples < VAE_HOP:
            raise AceStepError(f"Source audio is {source_samples} samples long at 48 kHz, shorter than one latent "
                               f"frame ({VAE_HOP} samples, 0.04 s); give a longer source.")
        if source_samples > MAX_DURATION * SAMPLE_RATE:
            raise AceStepError(f"Source audio is {source_samples / SAMPLE_RATE:.1f} s long; the limit is "
                               f"{MAX_DURATION:g} s. Trim it first.")
        if request.task in REGION_TASKS:
            pad_left, pad_right, region = _region(request, source_samples)
            if request.task == "extend" and pad_left + pad_right == 0:
                raise AceStepError(
                    f"Extend needs a range past an end of the source ({source_samples / SAMPLE_RATE:.2f} s): a "
                    "negative start extends the beginning, an end after the source extends the end.")
        default_frames = (pad_left + source_samples + pad_right) // VAE_HOP
    else:
        default_frames = _duration_frames(request.duration)
    item_frames = tuple(FRAMES_PER_CODE * len(c) if c is not None else default_frames for c in codes)
    frames = max(MIN_FRAMES, max(item_frames))
    if frames > MAX_DURATION * LATENT_RATE:
        raise AceStepError(f"The audio codes describe {frames / LATENT_RATE:.1f} s; the limit is {MAX_DURATION:g} s "
                           f"({int(MAX_DURATION * CODE_RATE)} codes). Give fewer codes.")
    return TaskPlan(request.task, dit_task, frames, item_frames, source_samples, pad_left, pad_right, codes,
                    region, request.chunk_mask_mode)


def text_request(request: GenerationRequest, plan: TaskPlan) -> TextRequest:
    """What the prompt builder needs: the metas duration follows the unpadded source, then the request."""
    return TextRequest(
        task=dit_task_name(request.task), caption=request.caption, lyrics=request.lyrics, language=request.language,
        bpm=request.bpm, keyscale=request.keyscale, timesignature=request.timesignature,
        duration=request.duration, source_samples=plan.source_samples,
        has_audio_codes=any(c is not None for c in plan.codes), track_name=request.track_name,
        track_classes=request.track_classes, instruction=request.instruction,
        audio_cover_strength=request.audio_cover_strength, batch_size=request.batch_size,
        chunk_mask_mode=request.chunk_mask_mode)


def silence_frames(silence_latent: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` frames `[length, C]` of the silence latent `[1, S, C]`, tiled when S is shorter."""
    available = silence_latent.shape[1]
    if length <= available:
        return silence_latent[0, :length]
    return silence_latent[0].repeat((length + available - 1) // available, 1)[:length]


def pad_source(waveform: torch.Tensor, plan: TaskPlan) -> torch.Tensor:
    """The source `[2, N]` with the outpaint zero padding of the plan on both sides."""
    return torch.nn.functional.pad(waveform, (plan.pad_left, plan.pad_right))


def target_latents(plan: TaskPlan, silence_latent: torch.Tensor, source_latents: Optional[torch.Tensor],
                   hints: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
    """`[B, T, C]` clean latents of the target audio (§3.5), padded at the end with silence frames 0.. .

    Per item: the decoded hints `[5N, C]` for items with codes, else `source_latents` `[T_item, C]` (the
    VAE encoding of the padded source; None when there is no source or it is silent), else silence.
    """
    items = []
    for index, frames in enumerate(plan.item_frames):
        if hints[index] is not None:
            latent = hints[index]
        elif source_latents is not None:
            latent = source_latents
        else:
            latent = silence_frames(silence_latent, frames)
        latent = latent.to(silence_latent.dtype)
        pad = plan.frames - latent.shape[0]
        if pad > 0:
            latent = torch.cat([latent, silence_frames(silence_latent, pad)], dim=0)
        items.append(latent[: plan.frames])
    return torch.stack(items)


def src_latents(plan: TaskPlan, target: torch.Tensor, target_has_audio: bool,
                silence_latent: torch.Tensor) -> torch.Tensor:
    """The audio context before the cover substitution (§3.4): the target, with silence in a repaint region.

    Items with neither codes nor audible target (text2music, a silent source) get silence frames 0..T−1.
    lego keeps its source inside the region.
    """
    silence = silence_frames(silence_latent, plan.frames)
    frame_range = plan.frame_range
    rows = []
    for index, codes in enumerate(plan.codes):
        if codes is None and not target_has_audio:
            rows.append(silence)
            continue
        row = target[index].clone()
        if frame_range is not None and plan.task != "lego":
            f0, f1 = frame_range
            row[f0:f1] = silence[f0:f1]
        rows.append(row)
    return torch.stack(rows)


def chunk_masks(plan: TaskPlan, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """`[B, T, C]`: 1 everywhere, except an explicit-mode region row (1 inside, 0 outside); auto is all 1."""
    masks = torch.ones(plan.batch_size, plan.frames, dtype=dtype)
    if plan.frame_range is not None and plan.chunk_mask_mode == "explicit":
        f0, f1 = plan.frame_range
        masks.zero_()
        masks[:, f0:f1] = 1
    return masks.unsqueeze(-1).expand(-1, -1, channels).contiguous()


def repaint_mask(plan: TaskPlan) -> Optional[torch.Tensor]:
    """Bool `[B, T]`, True where the DiT regenerates; None when the task has no region."""
    if plan.frame_range is None:
        return None
    f0, f1 = plan.frame_range
    mask = torch.zeros(plan.batch_size, plan.frames, dtype=torch.bool)
    mask[:, f0:f1] = True
    return mask


def lm_hints(plan: TaskPlan, hints: Sequence[Optional[torch.Tensor]], silence_latent: torch.Tensor
             ) -> Optional[torch.Tensor]:
    """`[B, T, C]` precomputed 25 Hz hints when any item has codes (padded or cropped to T), else None."""
    if all(h is None for h in hints):
        return None
    rows = []
    for hint in hints:
        if hint is None:
            rows.append(silence_frames(silence_latent, plan.frames))
            continue
        pad = plan.frames - hint.shape[0]
        row = torch.cat([hint, silence_frames(silence_latent, pad)]) if pad > 0 else hint[: plan.frames]
        rows.append(row.to(silence_latent.dtype))
    return torch.stack(rows)


def pack_references(clips: Sequence[torch.Tensor], batch_size: int, silence_latent: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Timbre inputs: `([N, 750, C] packed clip latents, [N] int64 item index of each clip)` (§7).

    Every item gets all `clips` (each `[750, C]`); with none, each item gets the silence latent's first
    750 frames, as the official handler does for a missing reference.
    """
    per_item = list(clips) if clips else [silence_frames(silence_latent, TIMBRE_FRAMES)]
    packed = torch.stack([clip.to(silence_latent.dtype) for _ in range(batch_size) for clip in per_item])
    order = torch.arange(batch_size, dtype=torch.long).repeat_interleave(len(per_item))
    return packed, order


def latent_mask(plan: TaskPlan, dtype: torch.dtype) -> torch.Tensor:
    """`[B, T]`: 1 on each item's own frames, 0 on its batch padding (the DiT ignores it; golden #1)."""
    mask = torch.zeros(plan.batch_size, plan.frames, dtype=dtype)
    for index, frames in enumerate(plan.item_frames):
        mask[index, : min(frames, plan.frames)] = 1
    return mask


@dataclass(frozen=True)
class TaskTensors:
    """What the sampler takes for one batch: the DiT inputs and, for a region task, the repaint inputs."""

    dit: DitInputs
    repaint: Optional[RepaintInputs]
    target_latents: torch.Tensor


def build_dit_inputs(plan: TaskPlan, text: TextConditioning, target: torch.Tensor, target_has_audio: bool,
                     hints: Sequence[Optional[torch.Tensor]], references: tuple[torch.Tensor, torch.Tensor],
                     silence_latent: torch.Tensor) -> TaskTensors:
    """Assemble `DitInputs` (official argument names) on the silence latent's device and dtype.

    `target` [B, T, C] from `target_latents`; `target_has_audio` whether the (padded) source is audible;
    `hints` the decoded codes per item; `references` from `pack_references`. The silence latent handed
    to the DiT is tiled to the batch length, so songs longer than the stored latent work everywhere.
    """
    dtype, device = silence_latent.dtype, silence_latent.device
    channels = silence_latent.shape[-1]
    silence = silence_frames(silence_latent, max(plan.frames, silence_latent.shape[1]))[None]
    non_cover = text.non_cover_text_hidden_states
    inputs = DitInputs(
        text_hidden_states=text.text_hidden_states.to(device=device, dtype=dtype),
        text_attention_mask=text.text_attention_mask.to(device=device, dtype=dtype),
        lyric_hidden_states=text.lyric_hidden_states.to(device=device, dtype=dtype),
        lyric_attention_mask=text.lyric_attention_mask.to(device=device, dtype=dtype),
        refer_audio_acoustic_hidden_states_packed=references[0].to(device=device, dtype=dtype),
        refer_audio_order_mask=references[1].to(device),
        src_latents=src_latents(plan, target, target_has_audio, silence_latent).to(device=device, dtype=dtype),
        chunk_masks=chunk_masks(plan, channels, dtype).to(device),
        is_covers=torch.tensor(plan.is_covers, dtype=torch.bool, device=device),
        silence_latent=silence,
        attention_mask=latent_mask(plan, dtype).to(device),
        precomputed_lm_hints_25Hz=lm_hints(plan, hints, silence_latent),
        non_cover_text_hidden_states=non_cover.to(device=device, dtype=dtype) if non_cover is not None else None,
        non_cover_text_attention_mask=(text.non_cover_text_attention_mask.to(device=device, dtype=dtype)
                                       if non_cover is not None else None),
    )
    mask = repaint_mask(plan)
    repaint = RepaintInputs(mask.to(device), target.to(device=device, dtype=dtype)) if mask is not None else None
    return TaskTensors(inputs, repaint, target)
