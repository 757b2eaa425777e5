"""The 5 Hz LM planner ("the songwriter"): prompts, constrained decoding, sampling and the blueprint.

Load the LM with `load_planner`, then make plans with `plan_song` (think: CoT metadata and audio codes),
`plan_sample` (simple mode), `plan_format` (rewrite) or `plan_understand` (codes from source audio via
`latent_codes`) / `random_example`; each returns a `Blueprint` (one plan per batch item) that can be saved
as JSON and handed to the DiT (`handoff`).
"""

from acestep_core.planner.blueprint import Blueprint, PlanItem, load_blueprint, save_blueprint
from acestep_core.planner.calls import LMCall, Runner, token_budget
from acestep_core.planner.constraint import ConstrainedDecoder, ConstraintSpec
from acestep_core.planner.handoff import (
    apply_blueprint, codes_tensor, generation_request, generation_requests, item_hints, text_request,
)
from acestep_core.planner.model import PlannerLM, build_lm, load_planner
from acestep_core.planner.modes import PlannerSettings
from acestep_core.planner.plan import (
    PlanRequest, plan_format, plan_sample, plan_song, plan_understand, planner_phases, random_example,
)
from acestep_core.planner.sampling import Sampling
from acestep_core.planner.source import latent_codes
from acestep_core.planner.tokens import LMTokenizer, TokenTables, load_lm_tokenizer

__all__ = [
    "Blueprint", "ConstrainedDecoder", "ConstraintSpec", "LMCall", "LMTokenizer", "PlanItem", "PlanRequest",
    "PlannerLM", "PlannerSettings", "Runner", "Sampling", "TokenTables", "apply_blueprint", "build_lm",
    "codes_tensor", "generation_request", "generation_requests", "item_hints", "latent_codes", "load_blueprint", "load_lm_tokenizer",
    "load_planner", "plan_format", "plan_sample", "plan_song", "plan_understand", "planner_phases", "random_example",
    "save_blueprint", "text_request", "token_budget",
]
