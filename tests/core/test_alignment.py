"""Lyric alignment on hand-made matrices: head choice, cleanup, DTW tie rules, timestamps, LRC, the score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from acestep_core import alignment as A
from acestep_core.errors import AceStepError
from acestep_core.models.config import AceStepConfig
from acestep_core.text.tokenizer import TextTokenizer
from tests.core import qwen_vocab


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(qwen_vocab.qwen_tokenizer(append_eos=False))


def reference_dtw(cost: np.ndarray) -> list[tuple[int, int]]:
    """The spec's DTW written cell by cell (frames outer, tokens inner), float32 totals, then the backtrack."""
    n, m = cost.shape
    total = [[math.inf] * (m + 1) for _ in range(n + 1)]
    total[0][0] = 0.0
    step = [[2] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            diag, up, left = total[i - 1][j - 1], total[i - 1][j], total[i][j - 1]
            if diag < up and diag < left:
                best, step[i][j] = diag, 0
            elif up < diag and up < left:
                best, step[i][j] = up, 1
            else:
                best, step[i][j] = left, 2
            total[i][j] = float(np.float32(float(cost[i - 1, j - 1]) + best))
    path, i, j = [], n, m
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        move = 2 if i == 0 else 1 if j == 0 else step[i][j]
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
    return path[::-1]


def as_pairs(path: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    return list(zip(path[0].tolist(), path[1].tolist()))


def test_dtw_follows_a_clear_diagonal() -> None:
    cost = np.ones((3, 3)) - 6.0 * np.eye(3)   # leaving the diagonal costs: the path stays on it
    assert as_pairs(A.dtw_path(cost)) == [(0, 0), (1, 1), (2, 2)]


def test_dtw_two_tokens_over_four_frames() -> None:
    cost = np.array([[-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]])
    assert as_pairs(A.dtw_path(cost)) == [(0, 0), (0, 1), (1, 2), (1, 3)]


def test_dtw_ties_prefer_moving_along_frames() -> None:
    # All costs equal: a move is taken only when strictly cheaper, so ties fall through to "left" (next
    # frame) and the first column, which can only go "up", collects the tokens, as the official rule does.
    assert as_pairs(A.dtw_path(np.zeros((3, 2)))) == [(0, 0), (1, 0), (2, 0), (2, 1)]
    assert as_pairs(A.dtw_path(np.zeros((2, 2)))) == [(0, 0), (1, 0), (1, 1)]


@pytest.mark.parametrize("seed", range(6))
def test_dtw_matches_the_cell_by_cell_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 9)), int(rng.integers(1, 13)))
    cost = rng.standard_normal(shape)
    if seed % 2:
        cost = np.round(cost)  # many ties
    path = A.dtw_path(cost)
    assert as_pairs(path) == reference_dtw(cost)
    assert path[0][0] == 0 and path[1][0] == 0 and path[0][-1] == shape[0] - 1 and path[1][-1] == shape[1] - 1
    assert (np.diff(path[0]) >= 0).all() and (np.diff(path[1]) >= 0).all()


@pytest.mark.parametrize("size", [1, 2, 5, 6])
def test_median_is_the_linear_half_quantile(size: int) -> None:
    x = torch.randn(2, 3, size, generator=torch.Generator().manual_seed(size))
    for dim in (-1, -2):
        assert torch.equal(A.median(x, dim), torch.quantile(x, 0.5, dim=dim, keepdim=True))


def test_consensus_cleanup_on_a_hand_made_map() -> None:
    weights = torch.tensor([[[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 4.0]],
                            [[2.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0], [0.0, 0.0, 1.0, 2.0]]])
    agreed = torch.softmax(weights, -1) * torch.softmax(weights, -2)
    agreed = torch.relu(agreed - 2.0 * torch.quantile(agreed, 0.5, dim=-1, keepdim=True))
    agreed = torch.relu(agreed - 2.0 * torch.quantile(agreed, 0.5, dim=-2, keepdim=True))
    agreed = agreed ** 2
    expected = ((agreed - agreed.mean()) / (agreed.std(unbiased=False) + 1e-9)).mean(0)
    calc = A.consensus_matrix(weights)
    torch.testing.assert_close(calc, expected, rtol=0, atol=1e-6)
    assert calc.argmax(dim=1).tolist() == [0, 2, 3]


def test_a_column_that_lights_up_for_every_token_is_removed() -> None:
    weights = torch.zeros(1, 3, 5)
    weights[0, :, 4] = 6.0                  # every token attends to the last frame: not an alignment
    weights[0, [0, 1, 2], [0, 1, 2]] = 3.0  # the real diagonal
    calc = A.consensus_matrix(weights)
    assert calc.argmax(dim=1).tolist() == [0, 1, 2]


def test_select_heads_in_config_order_and_skips_missing_ones() -> None:
    maps = {1: torch.arange(24.0).view(2, 3, 4), 3: -torch.arange(24.0).view(2, 3, 4)}
    stacked = A.select_heads(maps, {3: [1, 5], 1: [0], 2: [0]})
    assert torch.equal(stacked, torch.stack([maps[3][1], maps[1][0]]))
    with pytest.raises(AceStepError, match="lyric_alignment_layers_config"):
        A.select_heads(maps, {2: [0], 1: [7]})


def test_alignment_heads_from_the_config() -> None:
    assert A.alignment_heads(AceStepConfig()) == {2: (6,), 3: (10, 11), 4: (3,), 5: (8, 9), 6: (8,)}
    custom = AceStepConfig(lyric_alignment_layers_config={"7": [1, 2], "12": [30]})
    assert A.alignment_heads(custom) == {7: (1, 2), 12: (30,)}
    with pytest.raises(AceStepError, match="malformed lyric_alignment_layers_config"):
        A.alignment_heads(AceStepConfig(lyric_alignment_layers_config={"x": [1]}))


def test_format_lrc_minutes_and_hundredths() -> None:
    lines = [A.SentenceStamp("[Verse]", 0.0, 1.0, ()), A.SentenceStamp("hello", 61.234, 62.0, ()),
             A.SentenceStamp("world", 125.5, 126.0, ())]
    assert A.format_lrc(lines) == "[00:00.00][Verse]\n[01:01.23]hello\n[02:05.50]world"
    assert A.format_lrc([]) == ""


def block_map(line_of: list[int], frames_per_line: int) -> torch.Tensor:
    """A map where the tokens of line k look at the k-th block of frames."""
    attention = torch.zeros(len(line_of), (max(line_of) + 1) * frames_per_line)
    for row, line in enumerate(line_of):
        attention[row, line * frames_per_line:(line + 1) * frames_per_line] = 8.0
    return attention


def test_timestamps_and_lrc_from_a_hand_made_map(tokenizer: TextTokenizer) -> None:
    lyrics = "[Verse]\nhello there\n\nsing along\n"
    ids = tokenizer.backend.encode(lyrics, add_special_tokens=False).ids
    texts = A.token_texts(ids, tokenizer)
    assert "".join(texts) == lyrics
    line_of = [sum("\n" in text for text in texts[:k]) for k in range(len(ids))]
    assert line_of == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    result = A.lrc_from_attention({0: block_map(line_of, 10)[None]}, ids, tokenizer, duration=6.0, heads={0: [0]})
    assert [s.text for s in result.sentences] == ["[Verse]", "hello there", "sing along"]
    # 30 frames over 6 s: 0.2 s a frame, so line k starts where its block of 10 frames starts, at 2k s.
    assert [s.start for s in result.sentences] == [0.0, 2.0, 4.0]
    assert result.lrc == "[00:00.00][Verse]\n[00:02.00]hello there\n[00:04.00]sing along"
    assert all(0.0 <= s.start <= s.end < 6.0 for s in result.sentences)
    assert [t.token_id for t in result.tokens] == ids


def test_multibyte_characters_split_over_tokens(tokenizer: TextTokenizer) -> None:
    lyrics = "Ünïcödé ß\nla\n"
    ids = tokenizer.backend.encode(lyrics, add_special_tokens=False).ids
    texts = A.token_texts(ids, tokenizer)
    split = [k for k, i in enumerate(ids) if "\ufffd" in tokenizer.decode([i])]
    assert len(split) == 2, "the vocabulary should split ' ß' over two tokens"
    # The token that starts the character carries the partial decode, the one that completes it nothing.
    assert texts[split[0]] == " \ufffd" and texts[split[1]] == ""
    tokens = [A.TokenStamp(i, text, float(k), float(k)) for k, (i, text) in enumerate(zip(ids, texts))]
    assert [s.text for s in A.sentence_timestamps(tokens, tokenizer)] == ["Ünïcödé ß", "la"]


def test_no_tokens_give_no_lines(tokenizer: TextTokenizer) -> None:
    assert A.lrc_from_attention({0: torch.zeros(1, 0, 4)}, [], tokenizer, 10.0, {0: [0]}) == A.NO_LYRICS
    assert A.is_instrumental("") and A.is_instrumental("  [Instrumental] \n") and A.is_instrumental("[inst]")
    assert not A.is_instrumental("[Verse]\nla")


def test_tag_mask_marks_structure_tags(tokenizer: TextTokenizer) -> None:
    ids = tokenizer.backend.encode("[Verse]\nla la\n[Chorus]\nhey", add_special_tokens=False).ids
    mask = A.tag_mask(ids, tokenizer).tolist()
    texts = [tokenizer.decode([i]) for i in ids]
    sung = "".join(t for t, m in zip(texts, mask) if m)
    tags = "".join(t for t, m in zip(texts, mask) if not m)
    assert sung == "la la\nhey" and tags == "[Verse]\n[Chorus]\n"


def test_alignment_metrics_by_hand() -> None:
    energy = torch.tensor([[1.0, 0.5, 0.0, 0.0],
                           [0.0, 0.05, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 1.0],
                           [0.2, 0.0, 0.0, 0.0]])
    sung = torch.tensor([1, 1, 1, 0])
    rows, cols = np.array([0, 0, 1, 2, 3]), np.array([0, 1, 2, 3, 3])
    result = A.alignment_metrics(energy, sung, rows, cols)
    assert result.coverage == pytest.approx(2 / 3)        # row 1 peaks at 0.05 < 0.1; row 3 is a tag
    # centroids: row 0 = (0·1 + 1·0.5)/1.5, row 1 = 1, row 2 = 3 → both steps move forward
    assert result.monotonicity == 1.0
    assert result.confidence == pytest.approx((1.0 + 0.5 + 0.0 + 1.0 + 0.0) / 5)
    assert result.score == round((2 / 3) ** 2 * 1.0 * 0.5, 4)


def test_monotonicity_counts_backward_jumps_beyond_nine_frames() -> None:
    energy = torch.zeros(3, 30)
    energy[0, 20] = energy[1, 5] = energy[2, 12] = 1.0   # 20 → 5 is back 15 frames; 5 → 12 is forward
    result = A.alignment_metrics(energy, torch.ones(3), np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert result.monotonicity == 0.5 and result.coverage == 1.0


def test_lyric_alignment_score_of_a_clean_diagonal(tokenizer: TextTokenizer) -> None:
    ids = tokenizer.backend.encode("la la la la", add_special_tokens=False).ids
    diagonal = torch.eye(len(ids)).repeat_interleave(3, dim=1)[None]
    clean = A.lyric_alignment_score({0: diagonal}, ids, tokenizer, {0: [0]})
    assert (clean.coverage, clean.monotonicity) == (1.0, 1.0) and clean.score == round(clean.confidence, 4)
    flat = A.lyric_alignment_score({0: torch.ones_like(diagonal)}, ids, tokenizer, {0: [0]})
    assert flat == A.AlignmentScore(0.0, 1.0, 0.0, 0.0)
    assert clean.score > flat.score
