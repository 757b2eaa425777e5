"""Lyric timestamps (LRC) and the lyric-alignment score, read from the DiT's own cross-attention.

A few cross-attention heads of the DiT follow the sung words: their maps over (lyric token × latent
frame) show a diagonal. Timestamps come from one extra DiT pass on the finished latents, a cleanup of
those maps and a DTW path through them; the alignment score measures how clean and monotonic the maps
are. Everything follows the official `MusicStampsAligner` / `MusicLyricScorer` (lm-text-vae.md §4),
including its tie rules, so timestamps agree with the official app for the same inputs.

Two levels: `lrc_from_attention` / `lyric_alignment_score` work on captured maps (pure tensor work);
`align_lyrics` / `score_lyric_alignment` run the DiT pass from saved latents and conditions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from acestep_core.constants import LATENT_RATE
from acestep_core.diffusion import DitInputs
from acestep_core.errors import AceStepError
from acestep_core.models.acestep import AceStepModel
from acestep_core.models.config import AceStepConfig
from acestep_core.models.dit import AttentionCapture
from acestep_core.text.tokenizer import TextTokenizer

# Layer → heads that follow the lyrics in the 2B DiTs; XL configs carry their own set.
DEFAULT_ALIGNMENT_HEADS: dict[int, tuple[int, ...]] = {2: (6,), 3: (10, 11), 4: (3,), 5: (8, 9), 6: (8,)}
ALIGNMENT_SEED = 42
DEFAULT_STEPS = 8
VIOLENCE_LEVEL = 2.0
INSTRUMENTAL_LYRICS = ("[inst]", "[instrumental]")
LYRICS_HEADER = "# Languages\n{language}\n\n# Lyric\n"
COVERAGE_THRESHOLD = 0.1
CENTROID_THRESHOLD = 0.01
OVERLAP_FRAMES = 9.0

HeadConfig = Mapping[int, Sequence[int]]
AttentionMaps = Mapping[int, torch.Tensor]


@dataclass(frozen=True)
class DitConditions:
    """What the DiT is conditioned on: packed condition `[B, Lc, E]` (lyric tokens first) and context `[B, T, 2C]`."""

    states: torch.Tensor
    context: torch.Tensor


@dataclass(frozen=True)
class TokenStamp:
    token_id: int
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class SentenceStamp:
    """One lyric line: its text, start and end in seconds (rounded to ms) and its tokens."""

    text: str
    start: float
    end: float
    tokens: tuple[TokenStamp, ...]


@dataclass(frozen=True)
class LyricTimestamps:
    """The LRC text (`[MM:SS.xx]line` per line, '' without lyrics), its lines and per-token times."""

    lrc: str
    sentences: tuple[SentenceStamp, ...]
    tokens: tuple[TokenStamp, ...]


@dataclass(frozen=True)
class AlignmentScore:
    """Coverage, monotonicity and path confidence (each 0..1) and `clip(cov²·mono²·conf)` to 4 decimals."""

    coverage: float
    monotonicity: float
    confidence: float
    score: float


@dataclass(frozen=True)
class LyricAlignmentScores:
    """The official pair: `lm` from pure noise at t = 1 (the conditions alone), `dit` from the finished latents."""

    lm: AlignmentScore
    dit: AlignmentScore


NO_LYRICS = LyricTimestamps("", (), ())


def alignment_heads(config: AceStepConfig) -> dict[int, tuple[int, ...]]:
    """The checkpoint's `lyric_alignment_layers_config` (JSON string keys allowed), else the 2B default."""
    raw = config.lyric_alignment_layers_config
    if not raw:
        return dict(DEFAULT_ALIGNMENT_HEADS)
    try:
        return {int(layer): tuple(int(head) for head in heads) for layer, heads in raw.items()}
    except (TypeError, ValueError, AttributeError) as error:
        raise AceStepError(
            f"The DiT config.json has a malformed lyric_alignment_layers_config ({error}); it must map layer "
            "numbers to lists of head numbers, e.g. {\"2\": [6], \"3\": [10, 11]}. Fix it or remove the key."
        ) from None


def is_instrumental(lyrics: str) -> bool:
    """Empty lyrics or the official instrumental markers: nothing to align."""
    return lyrics.strip().lower() in ("",) + INSTRUMENTAL_LYRICS


# ---------------------------------------------------------------------------------------------------
# Matrix steps


def select_heads(maps: AttentionMaps, heads: HeadConfig) -> torch.Tensor:
    """Stack the chosen heads of `{layer: [heads, N_tok, N_frames]}` → `[H, N_tok, N_frames]` float32 CPU.

    Heads the model does not have are skipped, as officially; none left is an error naming the config.
    """
    chosen = [maps[layer][head] for layer, head_list in heads.items() for head in head_list
              if layer in maps and head < maps[layer].shape[0]]
    if not chosen:
        shapes = {layer: tuple(m.shape) for layer, m in maps.items()}
        raise AceStepError(
            f"None of the lyric-alignment heads {dict(heads)} exist in this DiT (captured maps {shapes}). "
            "Set lyric_alignment_layers_config in the DiT's config.json to layers/heads it has."
        )
    return torch.stack(chosen).detach().to(device="cpu", dtype=torch.float32)


def median(x: torch.Tensor, dim: int) -> torch.Tensor:
    """`torch.quantile(x, 0.5, dim, keepdim=True)` (linear interpolation) without quantile's size limit."""
    ordered = x.sort(dim=dim).values
    position = 0.5 * (x.shape[dim] - 1)
    low = math.floor(position)
    return torch.lerp(ordered.narrow(dim, low, 1), ordered.narrow(dim, math.ceil(position), 1), position - low)


def consensus_matrix(weights: torch.Tensor, violence: float = VIOLENCE_LEVEL) -> torch.Tensor:
    """Cleaned alignment map `[N_tok, N_frames]` from head maps `[H, N_tok, N_frames]` (§4.2 steps 2–4).

    Token→frame and frame→token softmaxes must agree, lines that light up a whole row or column are
    removed (minus `violence` × their median), the rest is squared, z-scored over all heads and averaged.
    """
    weights = weights.float()
    agreed = F.softmax(weights, dim=-1) * F.softmax(weights, dim=-2)
    agreed = torch.relu(agreed - violence * median(agreed, -1))
    agreed = torch.relu(agreed - violence * median(agreed, -2))
    agreed = agreed ** 2
    std, mean = torch.std_mean(agreed, correction=0)
    return ((agreed - mean) / (std + 1e-9)).mean(dim=0)


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through `cost [N, M]` from its first to its last cell: (rows, columns).

    Ties go as officially: diagonal only if strictly cheaper than both neighbours, then "up" (previous
    row) if strictly cheaper than both, else "left" (previous column); running totals are kept in
    float32. Cells are filled one anti-diagonal at a time, which needs only the two diagonals before.
    """
    rows, cols = cost.shape
    values = cost.astype(np.float64)
    total = np.full((rows + 1, cols + 1), np.inf, dtype=np.float32)
    total[0, 0] = 0.0
    trace = np.full((rows + 1, cols + 1), 2, dtype=np.int8)
    for diagonal in range(2, rows + cols + 1):
        i = np.arange(max(1, diagonal - cols), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        diag, up, left = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        take_diag = (diag < up) & (diag < left)
        take_up = ~take_diag & (up < diag) & (up < left)
        best = np.where(take_diag, diag, np.where(take_up, up, left))
        total[i, j] = (values[i - 1, j - 1] + best).astype(np.float32)
        trace[i, j] = np.where(take_diag, 0, np.where(take_up, 1, 2))
    trace[0, :] = 2
    trace[:, 0] = 1
    path_rows, path_cols = [], []
    i, j = rows, cols
    while i > 0 or j > 0:
        path_rows.append(i - 1)
        path_cols.append(j - 1)
        step = trace[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return np.array(path_rows[::-1], dtype=np.int64), np.array(path_cols[::-1], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# Timestamps and LRC


def token_texts(token_ids: Sequence[int], tokenizer: TextTokenizer) -> list[str]:
    """Each token's share of the text: decode growing prefixes and keep the new UTF-8 bytes.

    A token that only starts a multi-byte character gets the replacement text of the partial decode
    and the one that completes it gets '', exactly as the official incremental decoding does.
    """
    texts, previous = [], b""
    for end in range(1, len(token_ids) + 1):
        current = tokenizer.decode(list(token_ids[:end])).encode("utf-8", errors="surrogatepass")
        try:
            texts.append(current[len(previous):].decode("utf-8") if len(current) >= len(previous) else "")
        except UnicodeDecodeError:
            texts.append("")
        previous = current
    return texts


def token_timestamps(calc: torch.Tensor, token_ids: Sequence[int], tokenizer: TextTokenizer,
                     duration: float) -> tuple[TokenStamp, ...]:
    """Start/end seconds per token from the DTW path through `-calc`; a token the path skips sits at the
    previous token's end."""
    path_rows, path_cols = dtw_path(-calc.numpy().astype(np.float64))
    seconds_per_frame = duration / calc.shape[-1]
    stamps: list[TokenStamp] = []
    for index, (token, text) in enumerate(zip(token_ids, token_texts(token_ids, tokenizer))):
        frames = path_cols[path_rows == index]
        if frames.size:
            start, end = float(frames[0] * seconds_per_frame), float(frames[-1] * seconds_per_frame)
        else:
            start = end = stamps[-1].end if stamps else 0.0
        stamps.append(TokenStamp(int(token), text, start, max(start, end)))
    return tuple(stamps)


def sentence_timestamps(tokens: Sequence[TokenStamp], tokenizer: TextTokenizer) -> tuple[SentenceStamp, ...]:
    """Lines: tokens up to one whose text holds a newline; blank lines are dropped, structure tags kept."""
    sentences: list[SentenceStamp] = []
    current: list[TokenStamp] = []

    def close() -> None:
        text = tokenizer.decode([t.token_id for t in current]).strip()
        if text:
            sentences.append(SentenceStamp(text, round(current[0].start, 3), round(current[-1].end, 3),
                                           tuple(current)))

    for token in tokens:
        current.append(token)
        if "\n" in token.text:
            close()
            current = []
    if current:
        close()
    return tuple(sentences)


def format_lrc(sentences: Sequence[SentenceStamp]) -> str:
    """`[MM:SS.xx]text` per line, joined by newlines."""
    return "\n".join(f"[{int(s.start // 60):02d}:{s.start % 60:05.2f}]{s.text}" for s in sentences)


def lrc_from_attention(maps: AttentionMaps, token_ids: Sequence[int], tokenizer: Any, duration: float,
                       heads: HeadConfig = DEFAULT_ALIGNMENT_HEADS) -> LyricTimestamps:
    """Timestamps and LRC from one item's lyric rows of the cross-attention, `{layer: [heads, N_tok, N_frames]}`.

    `token_ids` are the N_tok pure lyric tokens (no header, no end token); `duration` the song's seconds.
    """
    if not token_ids:
        return NO_LYRICS
    tokenizer = TextTokenizer.wrap(tokenizer)
    calc = consensus_matrix(select_heads(maps, heads))
    tokens = token_timestamps(calc, token_ids, tokenizer, duration)
    sentences = sentence_timestamps(tokens, tokenizer)
    return LyricTimestamps(format_lrc(sentences), sentences, tokens)


# ---------------------------------------------------------------------------------------------------
# Lyric-alignment score


def tag_mask(token_ids: Sequence[int], tokenizer: TextTokenizer) -> torch.Tensor:
    """1 for sung tokens, 0 from a token containing `[` through the token containing `]` (structure tags)."""
    mask = torch.ones(len(token_ids), dtype=torch.long)
    inside = False
    for index, token in enumerate(token_ids):
        text = tokenizer.decode([token])
        inside = inside or "[" in text
        if inside:
            mask[index] = 0
        if "]" in text:
            inside = False
            mask[index] = 0
    return mask


def alignment_metrics(energy: torch.Tensor, sung: torch.Tensor, path_rows: np.ndarray,
                      path_cols: np.ndarray) -> AlignmentScore:
    """Coverage, monotonicity and confidence of a 0..1 energy map `[N_tok, N_frames]` (in float64).

    Coverage: sung rows whose peak passes 0.1. Monotonicity: consecutive sung rows whose energy
    centroid does not move back more than 9 frames. Confidence: mean energy along the DTW path.
    """
    energy = energy.to(torch.float64)
    sung = sung.to(torch.bool)
    sung_rows = sung.sum().double()
    covered = (sung & (energy.max(dim=1).values > COVERAGE_THRESHOLD)).sum().double()
    coverage = float(covered / sung_rows) if sung_rows > 0 else 1.0

    weights = torch.where(energy > CENTROID_THRESHOLD, energy, torch.zeros_like(energy))
    mass = weights.sum(dim=1)
    moments = (weights * torch.arange(energy.shape[1], dtype=torch.float64)).sum(dim=1)
    centroids = torch.full((energy.shape[0],), -1.0, dtype=torch.float64)
    has_mass = mass > 1e-9
    centroids[has_mass] = moments[has_mass] / mass[has_mass]
    placed = centroids[sung & (centroids >= 0)]
    if placed.shape[0] > 1:
        forward = (placed[1:] >= placed[:-1] - OVERLAP_FRAMES).double().sum()
        monotonicity = float(forward / (placed.shape[0] - 1))
    else:
        monotonicity = 1.0

    steps = energy[torch.from_numpy(path_rows), torch.from_numpy(path_cols)]
    confidence = float(steps.sum() / steps.numel()) if steps.numel() else 0.0
    score = float(np.clip((coverage ** 2) * (monotonicity ** 2) * confidence, 0.0, 1.0))
    return AlignmentScore(coverage, monotonicity, confidence, round(score, 4))


def lyric_alignment_score(maps: AttentionMaps, token_ids: Sequence[int], tokenizer: Any,
                          heads: HeadConfig = DEFAULT_ALIGNMENT_HEADS) -> AlignmentScore:
    """Score one item's lyric rows `{layer: [heads, N_tok, N_frames]}`: the heads' mean, min-max scaled."""
    tokenizer = TextTokenizer.wrap(tokenizer)
    mean_map = select_heads(maps, heads).mean(dim=0)
    low, high = mean_map.min(), mean_map.max()
    energy = (mean_map - low) / (high - low) if float(high - low) > 1e-9 else torch.zeros_like(mean_map)
    path_rows, path_cols = dtw_path(-(energy ** 2).numpy())
    return alignment_metrics(energy, tag_mask(token_ids, tokenizer), path_rows, path_cols)


# ---------------------------------------------------------------------------------------------------
# The DiT pass


def dit_conditions(model: AceStepModel, inputs: DitInputs) -> DitConditions:
    """The conditional (no CFG) condition and context latents of a sampling run, as `run_dit` builds them."""
    latent_mask = inputs.attention_mask
    if latent_mask is None:
        latent_mask = torch.ones(inputs.src_latents.shape[:2], dtype=inputs.src_latents.dtype,
                                 device=inputs.src_latents.device)
    with torch.no_grad():
        states, _, context = model.prepare_condition(
            inputs.text_hidden_states, inputs.text_attention_mask, inputs.lyric_hidden_states,
            inputs.lyric_attention_mask, inputs.refer_audio_acoustic_hidden_states_packed,
            inputs.refer_audio_order_mask, inputs.src_latents, latent_mask, inputs.silence_latent,
            inputs.src_latents, inputs.chunk_masks, inputs.is_covers,
            precomputed_lm_hints_25Hz=inputs.precomputed_lm_hints_25Hz)
    return DitConditions(states, context)


def lyric_span(ids: Sequence[int], language: str, tokenizer: TextTokenizer) -> tuple[int, int]:
    """Rows of the lyric tokens in the packed condition: after the language header, before `<|endoftext|>`."""
    start = len(tokenizer.backend.encode(LYRICS_HEADER.format(language=language), add_special_tokens=False).ids)
    end = ids.index(tokenizer.eos_id) if tokenizer.eos_id in ids else len(ids)
    return start, max(start, end)


def _sung_tokens(lyric_ids: torch.Tensor, languages: Union[str, Sequence[str]],
                 tokenizer: TextTokenizer) -> list[tuple[int, list[int]]]:
    """(first row, pure lyric ids) per item; an empty list for items with no or instrumental lyrics."""
    if lyric_ids.dim() != 2:
        raise AceStepError(f"lyric_ids must be [batch, tokens], got shape {tuple(lyric_ids.shape)}.")
    batch = lyric_ids.shape[0]
    languages = [languages] * batch if isinstance(languages, str) else list(languages)
    if len(languages) != batch:
        raise AceStepError(f"Give one lyrics language per batch item ({batch}), got {len(languages)}.")
    spans = []
    for row, language in zip(lyric_ids.tolist(), languages):
        start, end = lyric_span(row, language, tokenizer)
        pure = row[start:end]
        spans.append((start, [] if is_instrumental(tokenizer.decode(pure)) else pure))
    return spans


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise AceStepError(f"steps must be the positive whole number of sampling steps used, got {steps!r}.")


def _lyric_maps(model: AceStepModel, latents: torch.Tensor, times: Sequence[float], conditions: DitConditions,
                layers: Sequence[int], seed: int) -> dict[int, torch.Tensor]:
    """One decoder pass on `x_t = t·noise + (1 − t)·latents` for each t (batched in that order);
    `{layer: [len(times)·B, heads, L_cond, T_patch]}`.

    The noise comes from `seed` for each item on its own, as the official per-song call draws it.
    """
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    latents = latents.to(device=device, dtype=dtype)
    generator_device = torch.device("cpu") if device.type == "mps" else device
    generator = torch.Generator(device=generator_device).manual_seed(seed)
    noise = torch.randn((1, *latents.shape[1:]), generator=generator, device=generator_device, dtype=dtype)
    noise = noise.to(device).expand_as(latents)
    batch = latents.shape[0]
    x_t = torch.cat([time * noise + (1.0 - time) * latents for time in times])
    t = torch.tensor([time for time in times for _ in range(batch)], device=device, dtype=dtype)
    repeat = len(times)
    states = conditions.states.to(device=device, dtype=dtype).repeat(repeat, 1, 1)
    context = conditions.context.to(device=device, dtype=dtype).repeat(repeat, 1, 1)
    capture = AttentionCapture(layers)
    with torch.no_grad():
        model.decoder(x_t, t, t, states, context, capture=capture)
    return {layer: weights.transpose(-1, -2) for layer, weights in capture.weights.items()}


def _item_maps(maps: dict[int, torch.Tensor], item: int, start: int, count: int) -> dict[int, torch.Tensor]:
    """One item's lyric rows; no maps (no chosen layer exists) stay none, for `select_heads` to report."""
    if not maps:
        return {}
    rows = next(iter(maps.values())).shape[-2]
    if start + count > rows:
        raise AceStepError(f"The lyric tokens (rows {start}…{start + count}) do not fit the condition's {rows} rows: "
                           "pass the lyric ids and conditions of the same generation and its lyrics language.")
    return {layer: weights[item, :, start:start + count].float().cpu() for layer, weights in maps.items()}


def align_lyrics(model: AceStepModel, latents: torch.Tensor, conditions: DitConditions, lyric_ids: torch.Tensor,
                 tokenizer: Any, language: Union[str, Sequence[str]], *, duration: Optional[float] = None,
                 steps: int = DEFAULT_STEPS, seed: int = ALIGNMENT_SEED,
                 heads: Optional[HeadConfig] = None) -> list[LyricTimestamps]:
    """LRC timestamps for each song of a batch from its final latents `[B, T, C]` (official `get_lyric_timestamp`).

    `conditions` and `lyric_ids` `[B, L]` (the lyrics prompt's ids, header and `<|endoftext|>` included)
    come from the same generation, `language` is the language its lyrics prompt named, `steps` the
    sampling steps it used; `duration` defaults to T/25 s. Songs with empty or instrumental lyrics get an
    empty LRC. `heads` defaults to the DiT config's alignment heads.
    """
    _check_steps(steps)
    tokenizer = TextTokenizer.wrap(tokenizer)
    heads = dict(heads) if heads is not None else alignment_heads(model.config)
    spans = _sung_tokens(lyric_ids, language, tokenizer)
    if not any(pure for _, pure in spans):
        return [NO_LYRICS] * len(spans)
    seconds = float(duration) if duration is not None and duration > 0 else latents.shape[1] / LATENT_RATE
    maps = _lyric_maps(model, latents, [1.0 / steps], conditions, list(heads), seed)
    return [lrc_from_attention(_item_maps(maps, item, start, len(pure)), pure, tokenizer, seconds, heads)
            if pure else NO_LYRICS for item, (start, pure) in enumerate(spans)]


def score_lyric_alignment(model: AceStepModel, latents: torch.Tensor, conditions: DitConditions,
                          lyric_ids: torch.Tensor, tokenizer: Any, language: Union[str, Sequence[str]], *,
                          steps: int = DEFAULT_STEPS, seed: int = ALIGNMENT_SEED,
                          heads: Optional[HeadConfig] = None) -> list[Optional[LyricAlignmentScores]]:
    """The official "llm/dit lyrics alignment score" pair per song (`get_lyric_score`); None without lyrics.

    One DiT pass on pure noise at t = 1 and on the finished latents re-noised to t = 1/steps; inputs as
    for `align_lyrics`.
    """
    _check_steps(steps)
    tokenizer = TextTokenizer.wrap(tokenizer)
    heads = dict(heads) if heads is not None else alignment_heads(model.config)
    spans = _sung_tokens(lyric_ids, language, tokenizer)
    if not any(pure for _, pure in spans):
        return [None] * len(spans)
    maps = _lyric_maps(model, latents, [1.0, 1.0 / steps], conditions, list(heads), seed)
    batch = latents.shape[0]
    scores: list[Optional[LyricAlignmentScores]] = []
    for item, (start, pure) in enumerate(spans):
        if not pure:
            scores.append(None)
            continue
        lm = lyric_alignment_score(_item_maps(maps, item, start, len(pure)), pure, tokenizer, heads)
        dit = lyric_alignment_score(_item_maps(maps, batch + item, start, len(pure)), pure, tokenizer, heads)
        scores.append(LyricAlignmentScores(lm, dit))
    return scores
