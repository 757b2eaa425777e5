"""One request to the LM (prompt, guidance prompt, sampling, constraint, budget, seed) and who runs it.

Every mode is a few `LMCall`s and a parse of what came back. A `Runner` decodes a batch of calls: the
real one is `PlannerLM`; tests replay the official planner's recorded calls through a scripted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

from acestep_core.planner.constraint import ConstraintSpec
from acestep_core.planner.sampling import Sampling
from acestep_core.planner.values import DURATION_MAX, DURATION_MIN

CODES_PER_SECOND = 5
MAX_MODEL_LEN = 4096        # the official context setting; the token budget stays 64 below it
CODES_PHASE_MARGIN = 10     # tokens beyond the target codes in the codes phase (the final EOS and slack)
COT_PHASE_MARGIN = 500      # tokens beyond the target codes when a CoT comes first

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], Optional[bool]]


@dataclass(frozen=True)
class LMCall:
    """What to decode for one plan item: `uncond_prompt` is used only when `sampling.cfg_scale > 1`."""

    prompt: str
    uncond_prompt: Optional[str]
    sampling: Sampling
    constraint: ConstraintSpec
    max_new_tokens: int
    seed: int


class Runner(Protocol):
    def run(self, calls: Sequence[LMCall], progress: Optional[ProgressFn] = None,
            cancel: Optional[CancelFn] = None) -> list[str]:
        """The text each call wrote (special tokens kept, the final `<|im_end|>` included)."""


def token_budget(phase: str, target_duration: Optional[float], max_duration: int = DURATION_MAX,
                 max_model_len: int = MAX_MODEL_LEN) -> int:
    """The official `max_new_tokens`: 5 tokens a second of the (clamped) target plus a margin, else 3500."""
    if target_duration is not None and target_duration > 0:
        seconds = max(DURATION_MIN, min(max_duration, target_duration))
        codes = int(seconds * CODES_PER_SECOND)
        budget = codes + (CODES_PHASE_MARGIN if phase == "codes" else COT_PHASE_MARGIN)
    else:
        budget = min(max_model_len - 64, DURATION_MAX * CODES_PER_SECOND + COT_PHASE_MARGIN)
    return min(budget, max_model_len - 64)
