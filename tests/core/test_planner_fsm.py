"""The constrained decoder never lets an invalid value or field order through, whatever the model wants.

A stand-in "model" gives random next-token scores, and on some steps pushes hard for tokens that would
break the CoT (end of turn, audio codes, `</think>`, backticks, blank lines). Many seeded sequences are
decoded through the real engine and token tables; every output must read back as a CoT with exactly the
requested fields, in order, each with a valid value (user values verbatim), and codes runs must hold
exactly the target number of valid codes.
"""

from __future__ import annotations

import random

import pytest
import torch

from acestep_core.planner.constraint import ConstraintSpec
from acestep_core.planner.cot import parse_codes, parse_metadata
from acestep_core.planner.engine import Job, generate
from acestep_core.planner.sampling import Sampling
from acestep_core.planner.values import (
    BPM_MAX, BPM_MIN, DURATION_MAX, DURATION_MIN, FIELD_ORDER, KEYSCALES, LANGUAGES, TIME_SIGNATURES,
)
from tests.core.tiny_lm import shared_tables, single_thread  # noqa: F401 (fixture)

MAX_DURATION = 240


@pytest.fixture(scope="module")
def tables():
    return shared_tables()


class RandomDecoder:
    """Random scores per row (rows of a random pool, shuffled each step); on a share of steps a large push
    towards a newline or a forbidden token."""

    POOL = 48

    def __init__(self, tables, seed: int, push: float = 0.35):
        self.tables, self.push = tables, push
        self.device = torch.device("cpu")
        self.generator = torch.Generator().manual_seed(seed)
        self.pool = torch.randn(self.POOL, tables.vocab_size, generator=self.generator) * 3
        tok = tables.tokenizer
        self.tempting = torch.tensor([tables.eos, tables.pad, tables.think_end, int(tables.code_ids[7]),
                                      tok.encode("`")[0], tok.encode("\n\n")[0], tok.encode("<think>")[0],
                                      int(tables.code_ids[-1]) + 1, tables.newline, tables.newline,
                                      tables.newline, tok.encode("9")[0]])

    def _draw(self) -> None:
        rows = self.rows
        self.current = self.pool[torch.randint(0, self.POOL, (rows,), generator=self.generator)]
        pushed = torch.rand(rows, generator=self.generator) < self.push
        if pushed.any():
            which = torch.randint(0, len(self.tempting), (rows,), generator=self.generator)
            self.current[pushed, self.tempting[which[pushed]]] += 40.0

    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.rows = ids.shape[0]
        self._draw()

    def feed(self, tokens: torch.Tensor) -> None:
        self.rows = tokens.shape[0]
        self._draw()

    def logits(self, codes_only: bool) -> torch.Tensor:
        if not codes_only:
            return self.current
        span, eos = self.tables.code_slice, self.tables.eos
        return torch.cat([self.current[:, span], self.current[:, eos:eos + 1]], dim=1)

    def keep(self, rows: torch.Tensor) -> None:
        self.current, self.rows = self.current[rows], rows.numel()


def random_spec(rng: random.Random, phase: str) -> ConstraintSpec:
    skip = {"caption": rng.random() < 0.3, "language": rng.random() < 0.3, "genres": rng.random() < 0.5}
    fields = tuple(f for f in FIELD_ORDER if not skip.get(f, False))
    pool = {"bpm": str(rng.randint(BPM_MIN, BPM_MAX)), "duration": str(rng.randint(DURATION_MIN, MAX_DURATION)),
            "keyscale": rng.choice(KEYSCALES), "timesignature": rng.choice(TIME_SIGNATURES),
            "language": rng.choice(LANGUAGES)}
    values = {name: value for name, value in pool.items() if rng.random() < 0.35}
    return ConstraintSpec(phase, phase == "cot", fields, values, max_duration=MAX_DURATION)


def read_cot(text: str, spec: ConstraintSpec) -> str:
    """Check the CoT part of an output line by line; returns what follows it."""
    assert text.startswith("<think>\n"), text[:40]
    rest = text[len("<think>\n"):]
    for name in spec.fields:
        assert rest.startswith(f"{name}:"), (name, rest[:60])
        value, rest = rest[len(name) + 1:].split("\n", 1)
        if name == "caption":
            while rest[:1] in (" ", "\t", "\n"):
                line, rest = rest.split("\n", 1)
                value += "\n" + line
            assert value.strip() and "<|" not in value and "`" not in value
        elif name == "genres":
            assert value.strip() and "<|" not in value and "`" not in value
        else:
            assert value.startswith(" "), (name, value)
            check_value(name, value[1:])
        if name in spec.user_values:
            assert value == f" {spec.user_values[name]}", (name, value)
    return rest


def check_value(name: str, value: str) -> None:
    if name == "bpm":
        assert value.isdigit() and BPM_MIN <= int(value) <= BPM_MAX, value
    elif name == "duration":
        assert value.isdigit() and DURATION_MIN <= int(value) <= MAX_DURATION, value
    elif name == "keyscale":
        assert value in KEYSCALES, value
    elif name == "language":
        assert value in LANGUAGES, value
    elif name == "timesignature":
        assert value in TIME_SIGNATURES, value


def tree_values(tables, name: str, max_duration: int = DURATION_MAX) -> list[str]:
    """Every value a field's prefix tree can write (each path from the root to a newline), as text."""
    tree, values, stack = tables.tree(name, max_duration), [], [()]
    while stack:
        prefix = stack.pop()
        for token in tree.get(prefix, ()):
            if token == tables.newline:
                values.append(tables.tokenizer.decode(prefix))
            else:
                stack.append(prefix + (token,))
    return values


@pytest.mark.parametrize("name, max_duration, expected", [
    ("bpm", DURATION_MAX, [str(v) for v in range(BPM_MIN, BPM_MAX + 1)]),
    ("duration", DURATION_MAX, [str(v) for v in range(DURATION_MIN, DURATION_MAX + 1)]),
    ("duration", MAX_DURATION, [str(v) for v in range(DURATION_MIN, MAX_DURATION + 1)]),
    ("keyscale", DURATION_MAX, list(KEYSCALES)), ("language", DURATION_MAX, list(LANGUAGES)),
    ("timesignature", DURATION_MAX, list(TIME_SIGNATURES)),
], ids=lambda value: value if isinstance(value, str) else None)
def test_value_tables_hold_exactly_the_valid_values(tables, name: str, max_duration: int, expected) -> None:
    """Built from the real tokenizer, each table writes every valid value once (with its leading space) and
    nothing else: 271 tempos, the durations up to the limit, the 70 keys, the 51 languages, 4 time signatures."""
    values = tree_values(tables, name, max_duration)
    assert len(values) == len(set(values)) and all(value.startswith(" ") for value in values)
    assert sorted(value[1:] for value in values) == sorted(expected)


def decode_batch(tables, specs, seed: int, sampling: Sampling, budget: int, prompt=(1, 2, 3)) -> list[str]:
    jobs = [Job(tuple(prompt), None, spec, budget, seed * 1000 + i) for i, spec in enumerate(specs)]
    outputs = generate(RandomDecoder(tables, seed), tables, jobs, sampling)
    return [tables.tokenizer.decode(ids) for ids in outputs]


@pytest.mark.parametrize("seed", range(6))
def test_phase1_cot_is_always_valid(tables, seed: int) -> None:
    rng = random.Random(seed)
    specs = [random_spec(rng, "cot") for _ in range(16)]
    for spec, text in zip(specs, decode_batch(tables, specs, seed, Sampling(temperature=1.0), 800)):
        assert read_cot(text, spec) == "<|im_end|>"
        metadata = parse_metadata(text)
        assert list(metadata) == [f for f in spec.fields]
        for name, value in spec.user_values.items():
            if name in spec.fields:
                assert str(metadata[name]) == value


@pytest.mark.parametrize("seed", range(3))
def test_understand_cot_then_lyrics_without_codes(tables, seed: int) -> None:
    rng = random.Random(100 + seed)
    specs = [random_spec(rng, "understand") for _ in range(8)]
    sampling = Sampling(temperature=0.9, top_k=3000, top_p=0.97, min_p=0.001, repetition_penalty=1.1)
    for spec, text in zip(specs, decode_batch(tables, specs, seed, sampling, 150)):
        rest = read_cot(text, spec)
        assert rest.startswith("</think>")
        assert not parse_codes(rest)


@pytest.mark.parametrize("seed", range(3))
def test_codes_phase_gives_exactly_the_target(tables, seed: int) -> None:
    rng = random.Random(200 + seed)
    targets = [rng.randint(1, 40) for _ in range(10)] + [None, None]
    specs = [ConstraintSpec("codes", False, (), {}, target, max_codes=25) for target in targets]
    prompt = (1, 2, tables.think_end, 271)
    for target, text in zip(targets, decode_batch(tables, specs, seed, Sampling(cfg_scale=1.0), 60, prompt)):
        codes = parse_codes(text)
        assert text == "".join(f"<|audio_code_{c}|>" for c in codes) + "<|im_end|>" or target is None
        assert all(0 <= code < 64000 for code in codes)
        if target is not None:
            assert len(codes) == target
        else:
            assert len(codes) <= 25 and text.endswith("<|im_end|>")


def test_codes_phase_without_think_end_writes_the_cot_first(tables) -> None:
    """A codes-phase prompt without `</think>` makes the machine write the CoT, `</think>`, then codes."""
    spec = ConstraintSpec("codes", False, ("bpm", "keyscale"), {"bpm": "90"}, target_codes=5)
    text = decode_batch(tables, [spec], 7, Sampling(), 200)[0]
    rest = read_cot(text, spec)
    assert rest.startswith("</think>") and len(parse_codes(rest)) == 5 and rest.endswith("<|im_end|>")


def test_disabled_constraint_leaves_the_model_free(tables) -> None:
    spec = ConstraintSpec("cot", True, enabled=False)
    text = decode_batch(tables, [spec], 3, Sampling(), 30)[0]
    assert not text.startswith("<think>\nbpm:")
