"""ACE-Step Best of N: keep the best takes of a scored batch, best first, with their scores and seeds.

The ranking is `acestep_core.best_of.rank_takes`: stable (equal scores keep batch order), unscored
takes last. The chosen LATENT keeps a sampler record that describes only the kept takes (their seeds,
codes and lengths), so VAE Decode, Lyric Timestamps and Score Takes work on it as on a fresh batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from comfy_api.latest import io

from acestep_core.best_of import RankedTake, rank_takes, take_rows
from acestep_core.errors import AceStepError
from acestep_core.tasks import MAX_BATCH

from .common import CATEGORY, user_errors
from .lrc import song_record
from .sampler import SONG_KEY, SongRecord
from .scoring import SCORES_TYPE, TakeScore, TakeScores

DISPLAY_NAME = "ACE-Step Best of N"
RANK_BY = ("total", "lyrics_alignment", "lm_quality")


def rank_value(take: TakeScore, rank_by: str) -> Optional[float]:
    return {"total": take.total, "lyrics_alignment": take.alignment_score, "lm_quality": take.quality_score}[rank_by]


def _pick(values: Sequence[Any], indices: Sequence[int]) -> tuple[Any, ...]:
    return tuple(values[index] for index in indices)


def select_record(record: SongRecord, indices: Sequence[int]) -> SongRecord:
    """The record of the takes at `indices` (in that order): seeds, codes and item lengths follow them."""
    request, plan = record.request, record.plan
    codes = request.codes_per_item()
    request = dataclasses.replace(
        request, batch_size=len(indices), seeds=_pick(request.seeds, indices),
        retake_seeds=_pick(request.retake_seeds, indices) if request.retake_seeds is not None else None,
        audio_codes=_pick(codes, indices) if request.has_codes else request.audio_codes)
    plan = dataclasses.replace(plan, item_frames=_pick(plan.item_frames, indices), codes=_pick(plan.codes, indices))
    return dataclasses.replace(record, request=request, plan=plan)


def best_of_report(ranked: Sequence[RankedTake], batch: int, rank_by: str) -> str:
    """'best of N by <measure>' and one line per kept take: rank, take number, seed, score."""
    lines = [f"best {len(ranked)} of {batch} by {rank_by}"]
    for place, take in enumerate(ranked):
        score = "unscored" if take.score is None else f"{take.score:.4f}"
        lines.append(f"#{place + 1}: take {take.index + 1}, seed {take.seed}, score {score}")
    return "\n".join(lines)


def _check_scores(scores: Any, record: SongRecord) -> TakeScores:
    if not isinstance(scores, TakeScores):
        raise AceStepError("scores: connect the scores output of ACE-Step Score Takes.")
    seeds = tuple(int(seed) for seed in record.request.seeds)
    if tuple(take.seed for take in scores.takes) != seeds:
        raise AceStepError(f"scores belong to takes with seeds {[t.seed for t in scores.takes]} but latent holds "
                           f"seeds {list(seeds)}; score the same LATENT you select from.")
    return scores


class AceStepBestOf(io.ComfyNode):
    """Keep the best-scored takes of a batch."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepBestOf", display_name=DISPLAY_NAME, category=CATEGORY,
            description=("Ranks the takes of a batch by their scores (ACE-Step Score Takes) and keeps the best "
                         "top_k, best first; ties keep batch order. Decode only the kept LATENT, or pass decoded "
                         "AUDIO through to keep the same takes."),
            inputs=[
                SCORES_TYPE.Input("scores", tooltip="Scores of the batch (ACE-Step Score Takes)."),
                io.Latent.Input("latent", tooltip="The scored LATENT (ACE-Step DiT Sampler)."),
                io.Int.Input("top_k", default=1, min=1, max=MAX_BATCH, tooltip="How many takes to keep."),
                io.Combo.Input("rank_by", options=list(RANK_BY), default="total",
                               tooltip=("total: mean of the scores a take has. lyrics_alignment: the DiT's lyric "
                                        "alignment. lm_quality: the LM quality score (needs an LM on Score Takes).")),
                io.Audio.Input("audio", optional=True,
                               tooltip="Optional: the same batch decoded; its kept takes come out as AUDIO."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The kept takes, best first."),
                io.Audio.Output(display_name="audio", tooltip="The kept takes of the audio input (when connected)."),
                io.String.Output(display_name="report", tooltip="The ranking: take, seed and score of each kept take."),
            ],
        )

    @classmethod
    def execute(cls, scores: TakeScores, latent: dict[str, Any], top_k: int, rank_by: str,
                audio: Optional[dict[str, Any]] = None) -> io.NodeOutput:
        with user_errors(DISPLAY_NAME):
            record = song_record(latent)
            takes = _check_scores(scores, record).takes
            if rank_by not in RANK_BY:
                raise AceStepError(f"rank_by '{rank_by}' is unknown; choose one of {list(RANK_BY)}.")
            if top_k > len(takes):
                raise AceStepError(f"top_k is {top_k} but the batch holds {len(takes)} takes; keep at most "
                                   f"{len(takes)}.")
            ranked = rank_takes([rank_value(take, rank_by) for take in takes], [take.seed for take in takes], top_k)
            indices = [take.index for take in ranked]
            chosen = {**latent, "samples": take_rows(latent["samples"], ranked),
                      SONG_KEY: select_record(record, indices)}
            chosen.pop("batch_index", None)
            kept_audio = None
            if audio is not None:
                waveform = audio.get("waveform") if isinstance(audio, dict) else None
                if getattr(waveform, "ndim", 0) != 3 or waveform.shape[0] != len(takes):
                    raise AceStepError(f"audio must be the same batch of {len(takes)} takes decoded (waveform "
                                       "[batch, channels, samples]); connect ACE-Step VAE Decode of this LATENT.")
                kept_audio = {**audio, "waveform": take_rows(waveform, ranked)}
        return io.NodeOutput(chosen, kept_audio, best_of_report(ranked, len(takes), rank_by))


BEST_OF_NODES: list[type[io.ComfyNode]] = [AceStepBestOf]
