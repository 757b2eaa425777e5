"""The constrained decoder: a per-sequence state machine that only lets valid CoT metadata and codes through.

It follows the official decoder's states (lm-text-vae.md §2.7): `<think>`, a newline, then for each
field its name (a fixed string) and its value, then `</think>`, then audio codes (codes phase), free
lyrics (understand phase) or an immediate end (phase 1 with `stop_at_reasoning`). Values come from
prefix trees of real token sequences; a value the user gave is injected as the tokens of ` {value}\n`.

Where the official machine trusts the model, this one is strict, so that no seed can produce an
invalid CoT (each point is a documented deviation that changes nothing for a well-behaved model):
- after the caption, the next field's name is forced in order (official: free text until a `:`, then
  whichever field was named, so fields could be skipped or repeated);
- captions and genres cannot contain special tokens (no early end of turn), any token with a backtick
  (official: the lone backtick token only) or start with a newline; a
  caption line after a newline must be indented (a YAML continuation), so it cannot be misread as a
  field, and a caption that hits its 512-token limit ends there; genres (the official vocabulary file
  is not public) are one line of free text, ended when the newline is the model's top choice or after
  64 tokens;
- free lyrics after the CoT block every audio-code token (official: the valid codes only, so the
  tokens of codes 64000 … 65534 could slip into the lyrics);
- each sequence has its own machine (official: one shared by a whole batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import torch

from acestep_core.planner.tokens import TokenTables
from acestep_core.planner.values import DURATION_MAX, FIELD_ORDER

PHASES = ("cot", "codes", "understand")
CAPTION_MAX_TOKENS = 512
GENRES_MAX_TOKENS = 64
# Fields whose value follows a prefix tree; the complete ones among these end at once.
_NUMERIC = ("bpm", "duration")
_CLOSED = ("timesignature", "keyscale", "language")


@dataclass(frozen=True)
class ConstraintSpec:
    """How one LM call is constrained.

    `fields`: the CoT fields to write, in order (a subset of FIELD_ORDER); `user_values`: field → text
    forced instead of generated; `target_codes`: exact number of codes (EOS blocked before, forced at);
    `max_codes`: a cap when no target is set; `max_duration`: the longest duration the CoT may state;
    `enabled=False` leaves the logits alone (official option).
    """

    phase: str = "cot"
    stop_at_reasoning: bool = False
    fields: tuple[str, ...] = tuple(f for f in FIELD_ORDER if f != "genres")
    user_values: Mapping[str, str] = field(default_factory=dict)
    target_codes: Optional[int] = None
    max_codes: Optional[int] = None
    enabled: bool = True
    max_duration: int = DURATION_MAX

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        unknown = [f for f in list(self.fields) + list(self.user_values) if f not in FIELD_ORDER]
        if unknown or list(self.fields) != [f for f in FIELD_ORDER if f in self.fields]:
            raise ValueError(f"fields must follow {FIELD_ORDER} (got {self.fields}, "
                             f"user values {list(self.user_values)})")


class ConstrainedDecoder:
    """The state of one sequence: `allowed` says which tokens may come next, `advance` takes the sampled one."""

    def __init__(self, tables: TokenTables, spec: ConstraintSpec, prompt_ids: Sequence[int] = ()):
        self.tables, self.spec = tables, spec
        self.stages: list[tuple[str, str]] = [("fixed", "<think>"), ("fixed", "\n")]
        for name in spec.fields:
            self.stages += [("fixed", f"{name}:"), ("value", name)]
        self.stages.append(("end", "</think>"))
        self.stages.append(("free", "") if spec.phase == "understand" else ("codes", ""))
        self.stages.append(("done", ""))
        self.codes_count = 0
        self._enter(0)
        if spec.phase == "codes" and tables.think_end in prompt_ids:
            self._enter(len(self.stages) - 2)

    # -- state ------------------------------------------------------------------------------------
    def _enter(self, index: int) -> None:
        self.index = index
        self.position = 0
        self.tokens: list[int] = []
        self.text = ""
        self.after_newline = False
        self.closing = False
        kind, name = self.stages[index]
        value = self.spec.user_values.get(name) if kind == "value" else None
        self.queue = list(self.tables.forced_value(value)) if value is not None else []

    @property
    def kind(self) -> str:
        return self.stages[self.index][0]

    @property
    def in_codes(self) -> bool:
        return self.spec.enabled and self.kind == "codes"

    @property
    def done(self) -> bool:
        return self.kind == "done"

    def codes_eos_rule(self) -> str:
        """In the codes phase: 'block' EOS (too few codes), 'force' it (enough), or 'allow' the model's choice."""
        limit = self.spec.target_codes if self.spec.target_codes is not None else self.spec.max_codes
        if limit is None:
            return "allow"
        if self.codes_count >= limit:
            return "force"
        return "block" if self.spec.target_codes is not None else "allow"

    # -- allowed tokens ---------------------------------------------------------------------------
    def allowed(self, scores: torch.Tensor) -> Optional[torch.Tensor]:
        """The token ids the state allows next (long, on the scores' device), or None for any token.

        `scores` `[V]` are the next-token scores as the sampler sees them (after guidance); the greedy
        choices (the first language token, the caption and genres endings) look at them.
        """
        if not self.spec.enabled:
            return None
        if self.queue:
            return self._ids([self.queue[0]], scores)
        kind, name = self.stages[self.index]
        if kind == "fixed":
            return self._ids([self.tables.fixed(name)[self.position]], scores)
        if kind == "end":
            token = self.tables.eos if self.spec.stop_at_reasoning else self.tables.fixed(name)[self.position]
            return self._ids([token], scores)
        if kind == "value":
            return self._value_ids(name, scores)
        if kind == "codes":
            rule = self.codes_eos_rule()
            if rule == "force":
                return self._ids([self.tables.eos], scores)
            return self.tables.allowed("codes" if rule == "block" else "codes_eos", scores.device)
        if kind == "free":
            return self.tables.allowed("not_codes", scores.device)
        return self._ids([self.tables.eos], scores)

    @staticmethod
    def _ids(tokens: Sequence[int], scores: torch.Tensor) -> torch.Tensor:
        return torch.tensor(list(tokens), dtype=torch.long, device=scores.device)

    def _value_ids(self, name: str, scores: torch.Tensor) -> torch.Tensor:
        newline = self.tables.newline
        if name == "caption":
            return self._caption_ids(scores)
        if name == "genres":
            return self._genres_ids(scores)
        allowed = self.tables.tree(name, self.spec.max_duration).get(tuple(self.tokens), frozenset())
        if not allowed or (name in _CLOSED and newline in allowed):
            return self._ids([newline], scores)
        candidates = sorted(allowed)
        if name == "language" and not self.tokens:
            best = int(torch.argmax(scores[self._ids(candidates, scores)]))
            return self._ids([candidates[best]], scores)
        return self._ids(candidates, scores)

    def _caption_ids(self, scores: torch.Tensor) -> torch.Tensor:
        if self.after_newline:
            # The official rule: a top token that starts without indentation means the next field begins.
            self.after_newline = False
            top = self.tables.tokenizer.texts[int(torch.argmax(scores))]
            if len(self.tokens) >= CAPTION_MAX_TOKENS or (top and top[0] not in " \t"):
                self._enter(self.index + 1)
                return self.allowed(scores)
            return self.tables.allowed("indent", scores.device)
        if self.closing or len(self.tokens) >= CAPTION_MAX_TOKENS:
            self.closing = True
            return self._ids([self.tables.newline], scores)
        return self.tables.allowed("text" if self.text.strip() else "line_start", scores.device)

    def _genres_ids(self, scores: torch.Tensor) -> torch.Tensor:
        newline = self.tables.newline
        if not self.text.strip():
            return self.tables.allowed("line_start", scores.device)
        if len(self.tokens) >= GENRES_MAX_TOKENS or int(torch.argmax(scores)) == newline:
            return self._ids([newline], scores)
        return self.tables.allowed("line", scores.device)

    # -- advancing --------------------------------------------------------------------------------
    def advance(self, token: int) -> None:
        """Take the sampled token and move on."""
        if not self.spec.enabled or self.done:
            return
        if self.queue:
            self.queue.pop(0)
            if not self.queue:
                self._enter(self.index + 1)
            return
        kind, name = self.stages[self.index]
        if token == self.tables.eos and kind != "value":
            self._enter(len(self.stages) - 1)
        elif kind in ("fixed", "end"):
            self.position += 1
            if self.position == len(self.tables.fixed(name)):
                self._enter(self.index + 1)
        elif kind == "value":
            self._advance_value(name, token)
        elif kind == "codes" and self.tables.is_code(token):
            self.codes_count += 1

    def _advance_value(self, name: str, token: int) -> None:
        text = self.tables.tokenizer.texts[token]
        if name == "caption":
            self.tokens.append(token)
            self.text += text
            if "\n" in text and self.closing:
                self._enter(self.index + 1)
            else:
                self.after_newline = "\n" in text
        elif token == self.tables.newline:
            self._enter(self.index + 1)
        else:
            self.tokens.append(token)
            self.text += text

