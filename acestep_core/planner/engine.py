"""The token loop: several sequences decoded together, with a KV cache, guidance and a machine each.

One call decodes a batch of jobs (one per plan item). With guidance, each job has a conditional and an
unconditional row in the same batch (`[cond_0 … cond_n-1, uncond_0 … uncond_n-1]`); the token drawn for
the conditional row is appended to both. Prompts are left-padded and positions count real tokens only,
so an item decodes the same in a batch as alone. Finished items leave the batch (their rows are
dropped from the cache). While every item is writing audio codes, logits are computed for the code
rows of the output layer only (64001 of 217204), which is exact because nothing else is allowed then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch

from acestep_core.planner.calls import CancelFn, ProgressFn
from acestep_core.planner.constraint import ConstrainedDecoder, ConstraintSpec
from acestep_core.planner.sampling import Sampling, choose, guide
from acestep_core.planner.tokens import TokenTables
from acestep_core.vae_tiling import Cancelled

PROGRESS_EVERY = 8  # tokens between progress reports and cancel checks


@dataclass(frozen=True)
class Job:
    """One sequence to decode: prompt ids, unconditional prompt ids (with guidance), constraint, budget, seed."""

    prompt_ids: tuple[int, ...]
    uncond_ids: Optional[tuple[int, ...]]
    constraint: ConstraintSpec
    max_new_tokens: int
    seed: int


class Decoder(Protocol):
    """A causal LM that keeps its own cache: prompts in once, then one token per row per step."""

    device: torch.device

    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Left-padded prompts `[R, L]` and their mask; afterwards `logits` gives each row's next-token scores."""

    def feed(self, tokens: torch.Tensor) -> None:
        """Append one token `[R]` to every row."""

    def logits(self, codes_only: bool) -> torch.Tensor:
        """`[R, V]` next-token logits, or `[R, C + 1]` (the valid codes, then EOS) when `codes_only`."""

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every row not listed (in that order)."""


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids `[R, L]` padded on the left with `pad_id`, and the mask (1 on real tokens) `[R, L]`."""
    length = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, length - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, length - len(seq):] = 1
    return ids, mask


class _Item:
    """Per-job state: machine, generator, output, the ids a repetition penalty looks at."""

    def __init__(self, job: Job, tables: TokenTables, device: torch.device):
        self.job = job
        self.machine = ConstrainedDecoder(tables, job.constraint, job.prompt_ids)
        self.generator = torch.Generator(device=device).manual_seed(job.seed)
        self.output: list[int] = []
        self.seen = set(job.prompt_ids)

    def seen_ids(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(sorted(self.seen), dtype=torch.long, device=device)


def _codes_candidates(rule: str, count: int, device: torch.device) -> torch.Tensor:
    """Indices into a `[C + 1]` codes-only row (the codes, then EOS) that a codes-phase rule allows."""
    if rule == "force":
        return torch.tensor([count], dtype=torch.long, device=device)
    return torch.arange(count + (rule == "allow"), device=device)


def generate(decoder: Decoder, tables: TokenTables, jobs: Sequence[Job], sampling: Sampling,
             progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None) -> list[list[int]]:
    """Decode every job; returns the generated ids of each (the final EOS included when one was drawn)."""
    if not jobs:
        return []
    cfg = sampling.uses_cfg
    if cfg and any(job.uncond_ids is None for job in jobs):
        raise ValueError("guidance needs an unconditional prompt for every job")
    device = decoder.device
    items = [_Item(job, tables, device) for job in jobs]
    prompts = [job.prompt_ids for job in jobs] + ([job.uncond_ids for job in jobs] if cfg else [])
    ids, mask = left_pad(prompts, tables.pad)
    decoder.start(ids.to(device), mask.to(device))
    alive = list(range(len(items)))
    stops = {tables.eos, tables.pad}
    budget = max(job.max_new_tokens for job in jobs)
    targets = [job.constraint.target_codes for job in jobs]
    expected = min(budget, max(targets) + 1) if all(t is not None for t in targets) else budget
    code_ids = torch.cat([tables.code_ids, torch.tensor([tables.eos])]).to(device)
    for step in range(budget):
        codes_only = tables.code_slice is not None and all(items[i].machine.in_codes for i in alive)
        raw = decoder.logits(codes_only).float()
        count = len(alive)
        scores = guide(raw[:count], raw[count:], sampling.cfg_scale) if cfg else raw
        tokens = []
        for row, index in enumerate(alive):
            item = items[index]
            if codes_only:
                local = _codes_candidates(item.machine.codes_eos_rule(), tables.code_ids.numel(), device)
                ids, values = code_ids[local], scores[row, local]
            else:
                ids = item.machine.allowed(scores[row])
                if ids is None:
                    ids = torch.arange(scores.shape[1], device=device)
                values = scores[row, ids]
            seen = item.seen_ids(device) if sampling.repetition_penalty != 1.0 else None
            token = choose(ids, values, sampling, item.generator, seen)
            item.machine.advance(token)
            item.output.append(token)
            item.seen.add(token)
            tokens.append(token)
        still = [r for r, index in enumerate(alive)
                 if tokens[r] not in stops and len(items[index].output) < items[index].job.max_new_tokens]
        if progress is not None and ((step + 1) % PROGRESS_EVERY == 0 or not still):
            progress(expected if not still else min(step + 1, expected), expected)
        if not still:
            break
        if cancel is not None and (step + 1) % PROGRESS_EVERY == 0 and cancel():
            raise Cancelled(f"LM planning cancelled after {step + 1} tokens.")
        if len(still) < count:
            keep = torch.tensor(still + ([count + r for r in still] if cfg else []), dtype=torch.long, device=device)
            decoder.keep(keep)
        alive = [alive[r] for r in still]
        next_tokens = torch.tensor([tokens[r] for r in still], dtype=torch.long, device=device)
        decoder.feed(torch.cat([next_tokens, next_tokens]) if cfg else next_tokens)
    return [item.output for item in items]
