"""LRC and lyric-alignment scores from real DiT passes: a planted-alignment DiT and the pipeline's stages.

A random tiny DiT attends almost evenly, which the official cleanup rightly removes, so its LRC puts
every line at 0 s. The planted DiT (weights set by hand) has one head whose query at each latent patch
matches exactly one lyric token's key, the way a trained alignment head looks; its LRC times are known
in advance. The golden tiny 2B DiT (4 layers of 4 heads, so the 2B default heads do not exist in it)
runs through the pipeline's stages with a tiny random Qwen3 text encoder and the real Qwen vocabulary.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import torch
from transformers import Qwen3Config, Qwen3Model

from acestep_core import alignment as A
from acestep_core.errors import AceStepError
from acestep_core.models.acestep import AceStepModel
from acestep_core.models.config import AceStepConfig
from acestep_core.models.dit import AttentionCapture
from acestep_core.models.layers import RMSNorm
from acestep_core.pipeline import AudioInputs, encode_text, make_schedule, prepare_inputs, sample_latents
from acestep_core.pipeline_models import Models
from acestep_core.task_inputs import plan_task
from acestep_core.tasks import GenerationRequest, resolve_request
from acestep_core.text.encoder import TextEncoder
from acestep_core.text.prompts import lyrics_prompt
from acestep_core.text.tokenizer import TextTokenizer
from tests.core import qwen_vocab
from tests.core.tiny_layouts import golden_dit, golden_silence
from tests.core.tiny_models import tiny_text_encoder_config

HEADS = {1: [0, 2], 2: [1, 3], 3: [2]}
LYRICS = "[Verse]\nHello darkness my old friend\nI've come to talk with you again\n\n[Chorus]\nla la la\n"
SECONDS = 10
STEPS = 2


FRAMES = SECONDS * 25          # 250 latent frames → 125 patches, 0.08 s each
PATCHES = FRAMES // 2


def harmonics(angle: float) -> torch.Tensor:
    """[cos kθ, sin kθ] for k = 1..8: dot products of two codes peak sharply when their angles agree."""
    k = torch.arange(1, 9, dtype=torch.float32)
    return torch.stack([torch.cos(k * angle), torch.sin(k * angle)], dim=1).flatten()


def planted_dit() -> AceStepModel:
    """Layer 1, head 0 attends from each patch to the token whose code its context carries; all else is off."""
    _, config = golden_dit("2b")
    model = AceStepModel(AceStepConfig.from_dict(config)).eval()
    decoder = model.decoder
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.zero_()
        for module in decoder.modules():
            if isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        getattr(decoder.proj_in, "1").weight[:16, :16, 0] = torch.eye(16)   # context channels → hidden
        decoder.condition_embedder.weight.copy_(torch.eye(config["hidden_size"]))
        attention = decoder.layers[1].cross_attn
        attention.q_proj.weight[:16, :16] = torch.eye(16)
        attention.k_proj.weight[:16, :16] = torch.eye(16)
        attention.q_norm.weight.fill_(5.0)
    return model


@dataclass
class Song:
    latents: torch.Tensor
    conditions: A.DitConditions
    lyric_ids: torch.Tensor
    language: str


@dataclass
class Planted:
    song: Song
    first_patch_of_line: list[int]


def planted_song(tokenizer: TextTokenizer, token_order: str = "sung") -> Planted:
    """Conditions where lyric token i owns the patches `owner == i`; "reversed" sings the lines backwards."""
    ids = tokenizer.encode(lyrics_prompt(LYRICS, "en"), 2048)
    start, end = A.lyric_span(ids, "en", tokenizer)
    texts = A.token_texts(ids[start:end], tokenizer)
    line_of = [sum("\n" in text for text in texts[:k]) for k in range(len(texts))]
    lines = [[i for i, line in enumerate(line_of) if line == k] for k in range(line_of[-1] + 1)]
    order = [i for line in (lines[::-1] if token_order == "reversed" else lines) for i in line]
    owner = [order[patch * len(order) // PATCHES] for patch in range(PATCHES)]
    angles = [2 * math.pi * i / (len(order) + 1) for i in range(len(order))]
    context = torch.zeros(1, FRAMES, 16)
    for frame in range(FRAMES):
        context[0, frame] = harmonics(angles[owner[frame // 2]])
    states = torch.zeros(1, len(ids) + 7, 64)   # header, end token and other rows: zero keys
    for token in range(len(order)):
        states[0, start + token, :16] = harmonics(angles[token])
    song = Song(torch.zeros(1, FRAMES, 8), A.DitConditions(states, context), torch.tensor([ids]), "en")
    return Planted(song, [owner.index(line[0]) for line in lines])


@pytest.fixture(scope="module")
def text_tokenizer() -> TextTokenizer:
    return TextTokenizer(qwen_vocab.qwen_tokenizer(append_eos=True))


def test_planted_alignment_gives_the_known_line_times(text_tokenizer: TextTokenizer) -> None:
    planted = planted_song(text_tokenizer)
    song = planted.song
    result = A.align_lyrics(planted_dit(), song.latents, song.conditions, song.lyric_ids, text_tokenizer, "en",
                            heads={1: [0]})[0]
    lines = [line.strip() for line in LYRICS.splitlines() if line.strip()]
    expected = [round(patch * SECONDS / PATCHES, 3) for patch in planted.first_patch_of_line]
    assert [s.text for s in result.sentences] == lines
    assert [s.start for s in result.sentences] == expected
    assert expected == sorted(expected) and expected[-1] > expected[0] and expected[-1] < SECONDS
    assert result.lrc.split("\n") == [f"[{int(t // 60):02d}:{t % 60:05.2f}]{line}" for t, line in zip(expected, lines)]


def test_planted_alignment_scores_sung_order_above_reversed(text_tokenizer: TextTokenizer) -> None:
    model = planted_dit()

    def score(order: str) -> A.LyricAlignmentScores:
        song = planted_song(text_tokenizer, order).song
        return A.score_lyric_alignment(model, song.latents, song.conditions, song.lyric_ids, text_tokenizer, "en",
                                       heads={1: [0]})[0]

    sung, reversed_ = score("sung"), score("reversed")
    assert (sung.dit.coverage, sung.dit.monotonicity) == (1.0, 1.0)
    assert reversed_.dit.coverage == 1.0 and reversed_.dit.monotonicity < 1.0
    assert sung.dit.score > reversed_.dit.score


@pytest.fixture(scope="module")
def models() -> Models:
    tensors, config = golden_dit("2b")
    dit = AceStepModel(AceStepConfig.from_dict(config))
    dit.load_state_dict(tensors)
    torch.manual_seed(0)
    qwen = Qwen3Model(Qwen3Config.from_dict(tiny_text_encoder_config(config["text_hidden_dim"])))
    text_encoder = TextEncoder(qwen, qwen_vocab.qwen_tokenizer(append_eos=True))
    return Models(dit.eval(), golden_silence("2b"), None, text_encoder, "turbo")


def make_song(models: Models, lyrics: str, seeds: tuple[int, ...] = (3, 4), language: str = "en") -> Song:
    """The DiT part of `pipeline.generate` (no VAE): what a song's LRC needs."""
    request = GenerationRequest(caption="folk ballad", lyrics=lyrics, language=language, duration=SECONDS,
                                seeds=seeds, batch_size=len(seeds), steps=STEPS)
    request = resolve_request(request, models.variant, random.Random(0))
    plan = plan_task(request, None)
    prompts, text = encode_text(models, request, plan)
    tensors, _ = prepare_inputs(models, request, plan, AudioInputs(None, ()), text)
    latents = sample_latents(models, request, tensors, make_schedule(request, models), None)
    return Song(latents, A.dit_conditions(models.dit, tensors.dit), text.lyric_token_ids, prompts.language)


@pytest.fixture(scope="module")
def song(models: Models) -> Song:
    return make_song(models, LYRICS)


def lrc(models: Models, song: Song, **options) -> list[A.LyricTimestamps]:
    options.setdefault("heads", HEADS)
    return A.align_lyrics(models.dit, song.latents, song.conditions, song.lyric_ids, models.text_encoder.tokenizer,
                          song.language, steps=STEPS, **options)


def test_capture_keeps_the_velocity_and_returns_probabilities(models: Models, song: Song) -> None:
    decoder = models.dit.decoder
    x, t = song.latents[:1, :121], torch.tensor([0.5])
    states, context = song.conditions.states[:1], song.conditions.context[:1, :121]
    capture = AttentionCapture([1, 3])
    with torch.no_grad():
        plain = decoder(x, t, t, states, context)
        captured = decoder(x, t, t, states, context, capture=capture)
    torch.testing.assert_close(captured, plain, rtol=1e-4, atol=1e-5)
    assert sorted(capture.weights) == [1, 3]
    weights = capture.weights[1]
    assert weights.shape == (1, 4, 61, states.shape[1])          # ceil(121 / 2) patches
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 4, 61))


def test_lyric_rows_are_the_pure_lyrics(models: Models, song: Song) -> None:
    tokenizer = models.text_encoder.tokenizer
    ids = song.lyric_ids[0].tolist()
    start, end = A.lyric_span(ids, song.language, tokenizer)
    assert tokenizer.decode(ids[start:end]) == LYRICS
    assert tokenizer.decode(ids[:start]) == "# Languages\nen\n\n# Lyric\n" and ids[end] == tokenizer.eos_id


def test_one_timestamp_per_lyric_line_in_order_within_the_song(models: Models, song: Song) -> None:
    results = lrc(models, song)
    lines = [line.strip() for line in LYRICS.splitlines() if line.strip()]
    assert len(results) == 2
    for result in results:
        assert [s.text for s in result.sentences] == lines
        lrc_lines = result.lrc.split("\n")
        assert len(lrc_lines) == len(lines)
        assert [line[10:] for line in lrc_lines] == lines
        starts = [s.start for s in result.sentences]
        assert starts == sorted(starts), "timestamps must not go back"
        assert starts[0] == 0.0 and all(0.0 <= s.start <= s.end < SECONDS for s in result.sentences)
        for line, sentence in zip(lrc_lines, result.sentences):
            minutes, seconds = int(line[1:3]), float(line[4:9])
            assert line[0] == "[" and line[9] == "]" and minutes * 60 + seconds == pytest.approx(sentence.start, abs=0.006)


def test_lrc_is_deterministic_and_scales_with_the_duration(models: Models, song: Song) -> None:
    first, again = lrc(models, song), lrc(models, song)
    assert [r.lrc for r in first] == [r.lrc for r in again]
    assert [t.start for t in first[0].tokens] == [t.start for t in again[0].tokens]
    duration = lrc(models, song, duration=20.0)[0]
    assert duration.sentences[-1].start == pytest.approx(2 * first[0].sentences[-1].start, abs=0.002)


def test_the_checkpoint_config_chooses_the_heads(models: Models, song: Song, monkeypatch) -> None:
    with pytest.raises(AceStepError, match="lyric_alignment_layers_config"):
        lrc(models, song, heads=None)   # the 2B default heads do not exist in the tiny DiT
    monkeypatch.setattr(models.dit.config, "lyric_alignment_layers_config", {str(k): v for k, v in HEADS.items()})
    assert [r.lrc for r in lrc(models, song, heads=None)] == [r.lrc for r in lrc(models, song)]


@pytest.mark.parametrize("lyrics", ["", "[Instrumental]", "  [inst]\n"])
def test_instrumental_songs_give_an_empty_lrc(models: Models, lyrics: str) -> None:
    song = make_song(models, lyrics, seeds=(5,))
    assert lrc(models, song) == [A.NO_LYRICS]
    assert A.score_lyric_alignment(models.dit, song.latents, song.conditions, song.lyric_ids,
                                   models.text_encoder.tokenizer, song.language, steps=STEPS, heads=HEADS) == [None]


def test_alignment_scores_are_deterministic_and_consistent(models: Models, song: Song) -> None:
    def scores() -> list:
        return A.score_lyric_alignment(models.dit, song.latents, song.conditions, song.lyric_ids,
                                       models.text_encoder.tokenizer, song.language, steps=STEPS, heads=HEADS)

    first = scores()
    assert first == scores() and len(first) == 2
    for pair in first:
        for score in (pair.lm, pair.dit):
            assert 0.0 <= score.coverage <= 1.0 and 0.0 <= score.monotonicity <= 1.0 and 0.0 <= score.confidence <= 1.0
            assert score.score == round(min(1.0, score.coverage ** 2 * score.monotonicity ** 2 * score.confidence), 4)
    # The "lm" score reads pure noise (seed 42) under the conditions only: both songs share their prompts.
    assert first[0].lm == first[1].lm


def test_bad_inputs_are_named(models: Models, song: Song) -> None:
    def align(conditions: A.DitConditions = song.conditions, language=song.language, steps: int = STEPS) -> list:
        return A.align_lyrics(models.dit, song.latents, conditions, song.lyric_ids, models.text_encoder.tokenizer,
                              language, steps=steps, heads=HEADS)

    with pytest.raises(AceStepError, match="steps"):
        align(steps=0)
    with pytest.raises(AceStepError, match="one lyrics language per batch item"):
        align(language=["en"])
    with pytest.raises(AceStepError, match="do not fit"):
        align(A.DitConditions(song.conditions.states[:, :5], song.conditions.context))
    with pytest.raises(AceStepError, match="None of the lyric-alignment heads"):
        A.align_lyrics(models.dit, song.latents, song.conditions, song.lyric_ids, models.text_encoder.tokenizer,
                       song.language, steps=STEPS, heads={9: [0]})   # a layer the DiT does not have
