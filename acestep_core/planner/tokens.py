"""The LM's tokenizer and the token tables the constrained decoder needs, built from the real vocabulary.

The 5 Hz LM uses Qwen's vocabulary plus 65535 `<|audio_code_N|>` tokens at 151669 + N. Nothing here
assumes how Qwen splits text: every table comes from tokenizing the actual strings, as the official
decoder does (lm-text-vae.md §2.7). Values are token-id sequences: `bpm: 120` is tokenized whole and the
tokens of `bpm:` cut off the front, so the value keeps the space the tokenizer merges into it. A
single-file LM (ComfyUI's `qwen_*_ace15`) ships no tokenizer; any Qwen3 tokenizer folder (e.g. the
text encoder's) works, the audio-code tokens being added here at their fixed ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

import torch
from tokenizers import AddedToken, Tokenizer

from acestep_core.constants import NUM_AUDIO_CODES
from acestep_core.errors import AceStepError
from acestep_core.planner.values import (
    BPM_MAX, BPM_MIN, DURATION_MAX, DURATION_MIN, KEY_NOTES, KEYSCALES, LANGUAGES, TIME_SIGNATURES,
)

ENDOFTEXT, IM_END, THINK_END = "<|endoftext|>", "<|im_end|>", "</think>"
QWEN_VOCAB = 151669           # ordinary tokens + Qwen3's 26 special tokens
AUDIO_CODE_TOKENS = 65535     # <|audio_code_0|> … <|audio_code_65534|>
AUDIO_CODE_FIRST_ID = QWEN_VOCAB
_CODE_TEXT = re.compile(r"^<\|audio_code_(\d+)\|>$")

PrefixTree = dict[tuple[int, ...], frozenset[int]]


class LMTokenizer:
    """Qwen byte-level BPE with the audio-code tokens: text ↔ ids, nothing added automatically."""

    def __init__(self, backend: Tokenizer):
        self.backend = backend
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        ids = {text: backend.token_to_id(text) for text in (ENDOFTEXT, IM_END, THINK_END, "<|audio_code_0|>")}
        missing = [text for text, token in ids.items() if token is None]
        if missing:
            raise AceStepError(f"The LM tokenizer lacks {', '.join(missing)}: it is not an ACE-Step 5 Hz LM (Qwen3) "
                               "tokenizer. Use the tokenizer files of the acestep-5Hz-lm folder.")
        self.pad_id: int = ids[ENDOFTEXT]
        self.eos_id: int = ids[IM_END]
        self.think_end_id: int = ids[THINK_END]
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self._texts: list[str] | None = None

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    @property
    def texts(self) -> list[str]:
        """The text of every single token (computed once), as the decoder judges tokens by their text."""
        if self._texts is None:
            self._texts = self.backend.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
        return self._texts


def with_audio_codes(backend: Tokenizer) -> Tokenizer:
    """The tokenizer with `<|audio_code_N|>` at 151669 + N, added when a plain Qwen3 tokenizer lacks them."""
    if backend.token_to_id("<|audio_code_0|>") is not None:
        return backend
    size = backend.get_vocab_size(with_added_tokens=True)
    if size != QWEN_VOCAB:
        raise AceStepError(f"The LM tokenizer has {size} tokens and no audio-code tokens; a Qwen3 tokenizer has "
                           f"{QWEN_VOCAB}. Use the tokenizer of an acestep-5Hz-lm folder.")
    backend.add_special_tokens([AddedToken(f"<|audio_code_{n}|>", normalized=False, special=True)
                                for n in range(AUDIO_CODE_TOKENS)])
    last = backend.token_to_id(f"<|audio_code_{AUDIO_CODE_TOKENS - 1}|>")
    if (backend.token_to_id("<|audio_code_0|>"), last) != (AUDIO_CODE_FIRST_ID,
                                                            AUDIO_CODE_FIRST_ID + AUDIO_CODE_TOKENS - 1):
        raise AceStepError("The audio-code tokens did not land at ids 151669 … 217203: the tokenizer is not Qwen3's.")
    return backend


def load_lm_tokenizer(folder: Union[str, Path]) -> LMTokenizer:
    """The tokenizer of an `acestep-5Hz-lm-*` folder (or any Qwen3 tokenizer folder, audio codes added)."""
    from acestep_core.text.tokenizer import load_tokenizer

    path = Path(folder).expanduser()
    try:
        backend = load_tokenizer(path).backend
    except AceStepError as error:
        raise AceStepError(f"Cannot read the 5 Hz LM tokenizer: {error} (for the LM, point at the acestep-5Hz-lm "
                           "folder, which ships tokenizer.json).") from error
    return LMTokenizer(with_audio_codes(backend))


def _value_tokens(tokenizer: LMTokenizer, name: str, value: str) -> list[int] | None:
    """Tokens of `value` as they follow `name:` in `name: value` (None if the tokenizer joins across the colon)."""
    head = tokenizer.encode(f"{name}:")
    full = tokenizer.encode(f"{name}: {value}")
    if full[: len(head)] != head or len(full) == len(head):
        return None
    return full[len(head):]


def build_tree(tokenizer: LMTokenizer, name: str, values: Iterable[str]) -> PrefixTree:
    """Every token prefix of every value → the tokens allowed next (the newline once a value is complete)."""
    newline = tokenizer.encode("\n")[-1]
    tree: dict[tuple[int, ...], set[int]] = {}
    for value in values:
        tokens = _value_tokens(tokenizer, name, value)
        if tokens is None:
            continue
        if name == "keyscale" and tokenizer.decode(tokens[:1]).lstrip()[:1].upper() not in KEY_NOTES:
            continue
        for end in range(len(tokens) + 1):
            tree.setdefault(tuple(tokens[:end]), set()).add(tokens[end] if end < len(tokens) else newline)
    return {prefix: frozenset(allowed) for prefix, allowed in tree.items()}


def fixed_tokens(tokenizer: LMTokenizer, text: str) -> tuple[int, ...]:
    """The tokens the decoder forces for a fixed string: each time the longest remaining prefix that is one token."""
    tokens, position = [], 0
    while position < len(text):
        remaining = text[position:]
        for end in range(len(remaining), 0, -1):
            ids = tokenizer.encode(remaining[:end])
            if len(ids) == 1:
                tokens.append(ids[0])
                position += max(1, len(tokenizer.decode(ids)))
                break
        else:
            raise AceStepError(f"The LM tokenizer cannot write {remaining!r} one token at a time: "
                               "not a Qwen3 tokenizer.")
    return tuple(tokens)


@dataclass
class TokenTables:
    """What the constrained decoder needs to know about the vocabulary, built once per tokenizer.

    `code_ids` are the ids of the valid audio codes 0 … 63999 (sorted), `code_slice` their range when
    contiguous (it is for the real vocabulary), so the codes phase can compute logits for those rows only;
    `audio_token_ids` are all `<|audio_code_N|>` tokens, including the 1535 beyond the codebook.
    """

    tokenizer: LMTokenizer
    newline: int = field(init=False)
    eos: int = field(init=False)
    pad: int = field(init=False)
    think_end: int = field(init=False)
    backtick_ids: torch.Tensor = field(init=False)
    code_ids: torch.Tensor = field(init=False)
    code_slice: slice | None = field(init=False)
    audio_token_ids: torch.Tensor = field(init=False)
    special_ids: torch.Tensor = field(init=False)
    newline_ids: torch.Tensor = field(init=False)
    trees: dict[str, PrefixTree] = field(init=False)
    _fixed: dict[str, tuple[int, ...]] = field(init=False, default_factory=dict)
    _allowed: dict[tuple[str, str], torch.Tensor] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        tok = self.tokenizer
        self.newline = tok.encode("\n")[-1]
        self.eos, self.pad, self.think_end = tok.eos_id, tok.pad_id, tok.think_end_id
        texts = tok.texts
        codes, audio_tokens = {}, []
        for token_id in range(len(texts)):
            match = _CODE_TEXT.match(texts[token_id])
            if match:
                audio_tokens.append(token_id)
                if int(match.group(1)) < NUM_AUDIO_CODES:
                    codes[int(match.group(1))] = token_id
        if len(codes) != NUM_AUDIO_CODES:
            raise AceStepError(f"The LM tokenizer has {len(codes)} of the {NUM_AUDIO_CODES} audio-code tokens "
                               "<|audio_code_0|> … <|audio_code_63999|>; use the acestep-5Hz-lm tokenizer.")
        ids = [codes[value] for value in range(NUM_AUDIO_CODES)]
        self.code_ids = torch.tensor(ids, dtype=torch.long)
        contiguous = ids == list(range(ids[0], ids[0] + len(ids)))
        self.code_slice = slice(ids[0], ids[0] + len(ids)) if contiguous else None
        self.audio_token_ids = torch.tensor(audio_tokens, dtype=torch.long)
        # Qwen's added tokens (its special tokens and the audio codes) follow the BPE vocabulary.
        self.special_ids = torch.arange(tok.backend.get_vocab_size(with_added_tokens=False), tok.vocab_size)
        self.newline_ids = torch.tensor([i for i, text in enumerate(texts) if "\n" in text], dtype=torch.long)
        self.backtick_ids = torch.tensor([i for i, text in enumerate(texts) if "`" in text], dtype=torch.long)
        self.trees = {
            "bpm": build_tree(tok, "bpm", map(str, range(BPM_MIN, BPM_MAX + 1))),
            "duration": build_tree(tok, "duration", map(str, range(DURATION_MIN, DURATION_MAX + 1))),
            "timesignature": build_tree(tok, "timesignature", TIME_SIGNATURES),
            "keyscale": build_tree(tok, "keyscale", KEYSCALES),
            "language": build_tree(tok, "language", LANGUAGES),
        }

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def tree(self, name: str, max_duration: int = DURATION_MAX) -> PrefixTree:
        """The prefix tree of a field; durations stop at `max_duration` (10 … 600 s)."""
        if name != "duration" or max_duration == DURATION_MAX:
            return self.trees[name]
        if not DURATION_MIN <= max_duration <= DURATION_MAX:
            raise AceStepError(f"max_duration must be within {DURATION_MIN}–{DURATION_MAX} s, got {max_duration}.")
        key = f"duration<={max_duration}"
        if key not in self.trees:
            self.trees[key] = build_tree(self.tokenizer, "duration", map(str, range(DURATION_MIN, max_duration + 1)))
        return self.trees[key]

    def fixed(self, text: str) -> tuple[int, ...]:
        if text not in self._fixed:
            self._fixed[text] = fixed_tokens(self.tokenizer, text)
        return self._fixed[text]

    def forced_value(self, value: object) -> tuple[int, ...]:
        """The tokens injected for a value the user gave: ` {value}\n` tokenized whole."""
        return tuple(self.tokenizer.encode(f" {value}\n"))

    def is_code(self, token_id: int) -> bool:
        if self.code_slice is not None:
            return self.code_slice.start <= token_id < self.code_slice.stop
        return bool((self.code_ids == token_id).any())

    def _indented(self) -> torch.Tensor:
        texts = self.tokenizer.texts
        return torch.tensor([text[:1] in (" ", "\t", "\n") for text in texts], dtype=torch.bool)

    def allowed(self, what: str, device: Union[str, torch.device]) -> torch.Tensor:
        """Sorted ids of a fixed token class, cached per device.

        "codes": the valid audio codes; "codes_eos": those and EOS; "not_codes": everything but audio-code
        tokens, valid or not (free lyrics); "text": a caption's free text: no audio codes, special tokens
        or backticks; "indent": the "text" tokens that start with a space, tab or newline (a caption line
        after a newline); "line":
        "text" without tokens that hold a newline, except the newline itself (a one-line value);
        "line_start": "line" without the newline (a value that has not started).
        """
        key = (what, str(device))
        if key not in self._allowed:
            banned = torch.zeros(self.vocab_size, dtype=torch.bool)
            banned[self.code_ids] = True
            if what in ("codes", "codes_eos"):
                banned = ~banned
                banned[self.eos] = what == "codes"
            elif what in ("text", "indent", "line", "line_start"):
                banned[self.special_ids] = True
                banned[self.backtick_ids] = True
                if what == "indent":
                    banned |= ~self._indented()
                elif what != "text":
                    banned[self.newline_ids] = True
                    banned[self.newline] = what == "line_start"
            elif what == "not_codes":
                banned[self.audio_token_ids] = True
            else:
                raise ValueError(f"unknown token class {what!r}")
            self._allowed[key] = (~banned).nonzero().squeeze(1).to(device)
        return self._allowed[key]
