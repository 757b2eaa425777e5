"""ACE-Step Score Takes: how good each take of a sampled batch is, as the official app measures it.

Two measures, each 0..1, higher is better:
- lyric alignment (DiT only): how cleanly the DiT's lyric attention follows the words in the finished
  song (`acestep_core.alignment`, the official "dit lyrics alignment score"; the "lm" one reads pure
  noise, so it is the same for every take of a batch and only reported);
- LM quality (with the optional 5 Hz LM): how well the song's audio codes explain its caption, lyrics
  and metadata (`acestep_core.scoring`). Songs made from an LM plan use the plan's codes; others are
  heard through the DiT's own audio tokenizer, which makes the same 5 Hz codes from the latents.
A take's `total` is the mean of the measures it has; without lyrics and without an LM a take has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from comfy_api.latest import io

from acestep_core.alignment import LyricAlignmentScores, score_lyric_alignment
from acestep_core.planner.cot import codes_to_text
from acestep_core.planner.source import latent_codes
from acestep_core.scoring import UI_PMI_SCALE, QualityScore, lm_quality_score, score_metadata

from .common import CATEGORY, interrupted, user_errors
from .lm_handle import LM_TYPE, LMHandle
from .lrc import SongConditions, context_inputs, parse_heads, song_conditions, song_inputs
from .model_handles import DitHandle
from .source_audio import ReferenceAudio
from .text_encode import AceStepConditioning

SCORES_TYPE = io.Custom("ACESTEP_SCORES")
DISPLAY_NAME = "ACE-Step Score Takes"


@dataclass(frozen=True)
class TakeScore:
    """One take's scores: its seed, the alignment pair (None without lyrics), the LM quality (None
    without an LM) and `total`, the mean of the DiT alignment and LM quality scores it has."""

    seed: int
    alignment: Optional[LyricAlignmentScores]
    quality: Optional[QualityScore]

    @property
    def total(self) -> Optional[float]:
        parts = [value for value in (self.alignment_score, self.quality_score) if value is not None]
        return round(sum(parts) / len(parts), 4) if parts else None

    @property
    def alignment_score(self) -> Optional[float]:
        return self.alignment.dit.score if self.alignment is not None else None

    @property
    def quality_score(self) -> Optional[float]:
        return round(self.quality.total, 4) if self.quality is not None else None


@dataclass(frozen=True)
class TakeScores:
    """ACESTEP_SCORES: one `TakeScore` per take, in batch order."""

    takes: tuple[TakeScore, ...]


def _shown(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def score_report(scores: TakeScores) -> str:
    """A table with one line per take: seed, total, DiT/LM alignment and LM quality with its parts."""
    lines = ["take  seed        total   align   align(lm)  quality"]
    for index, take in enumerate(scores.takes):
        lm_alignment = take.alignment.lm.score if take.alignment is not None else None
        parts = ""
        if take.quality is not None:
            parts = "  (" + ", ".join(f"{name} {value:.3f}" for name, value in take.quality.parts.items()) + ")"
        lines.append(f"{index + 1:<5} {take.seed:<11} {_shown(take.total):<7} {_shown(take.alignment_score):<7} "
                     f"{_shown(lm_alignment):<10} {_shown(take.quality_score)}{parts}")
    return "\n".join(lines)


def song_codes(song: SongConditions) -> list[str]:
    """Each take's 5 Hz codes: the LM plan's, else the DiT's audio tokenizer on the finished latents."""
    planned = song.record.request.codes_per_item()
    samples, models = song.latents.transpose(1, 2), song.models
    return [plan if plan is not None else codes_to_text(latent_codes(models.dit, samples, models.silence_latent, index))
            for index, plan in enumerate(planned)]


def quality_scores(lm: LMHandle, song: SongConditions, pmi_scale: float) -> list[QualityScore]:
    """The LM quality score of every take against the song's caption, lyrics and metadata."""
    request, plan = song.record.request, song.record.plan
    metadata = score_metadata(caption=request.caption, bpm=request.bpm,
                              duration=request.duration if request.duration is not None else plan.seconds,
                              keyscale=request.keyscale,
                              language=request.language if request.language != "unknown" else None,
                              timesignature=request.timesignature)
    codes = song_codes(song)
    planner = lm.loaded_planner()
    scores = []
    for item_codes in codes:
        interrupted()
        scores.append(lm_quality_score(planner, item_codes, request.caption, request.lyrics, metadata,
                                       scale=pmi_scale))
    return scores


class AceStepScoreTakes(io.ComfyNode):
    """Score every take of a sampled batch (lyric alignment, and LM quality with an LM)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepScoreTakes", display_name=DISPLAY_NAME, category=CATEGORY,
            description=("Scores each take of a batch, 0-1, higher is better: how cleanly the DiT's attention "
                         "follows the lyrics, and with a 5 Hz LM how well the song fits its caption, lyrics and "
                         "metadata. Feed the scores to ACE-Step Best of N."),
            inputs=[
                *song_inputs(),
                io.Float.Input("pmi_scale", default=UI_PMI_SCALE, min=0.01, max=10.0, step=0.01,
                               tooltip=("LM quality: how strongly caption and lyrics fit is rewarded (the "
                                        "official app's default 0.5; smaller = sharper).")),
                *context_inputs(),
                LM_TYPE.Input("lm", optional=True,
                              tooltip="Optional 5 Hz LM (Load ACE-Step LM): adds the LM quality score."),
            ],
            outputs=[SCORES_TYPE.Output(display_name="scores", tooltip="Scores per take, for ACE-Step Best of N."),
                     io.String.Output(display_name="report", tooltip="The scores as a table, one line per take.")],
        )

    @classmethod
    def execute(cls, dit: DitHandle, conditioning: AceStepConditioning, latent: dict[str, Any], alignment_seed: int,
                alignment_heads: str, pmi_scale: float, source_latent: Optional[dict[str, Any]] = None,
                reference: Optional[ReferenceAudio] = None, lm: Optional[LMHandle] = None) -> io.NodeOutput:
        with user_errors(DISPLAY_NAME):
            heads = parse_heads(alignment_heads)
            song = song_conditions(dit, conditioning, latent, source_latent, reference)
            alignment = score_lyric_alignment(song.models.dit, song.latents, song.conditions, song.lyric_ids,
                                              song.tokenizer, song.language, steps=song.steps, seed=alignment_seed,
                                              heads=heads)
            quality: list[Optional[QualityScore]] = [None] * len(alignment)
            if lm is not None:
                quality = list(quality_scores(lm, song, pmi_scale))
        seeds = song.record.request.seeds
        scores = TakeScores(tuple(TakeScore(int(seed), pair, score)
                                  for seed, pair, score in zip(seeds, alignment, quality)))
        return io.NodeOutput(scores, score_report(scores))


SCORE_NODES: list[type[io.ComfyNode]] = [AceStepScoreTakes]
