"""From a blueprint to the DiT: text-prompt requests, generation requests and 25 Hz hints per item.

Each item's caption, lyrics, language and metadata go into the DiT's caption and lyrics prompts
(`text.prompts`); its codes go to the DiT, where having codes turns text2music into a cover of them (the
cover instruction, `is_cover`) and the codes become 25 Hz hints through the quantizer and detokenizer
(lm-text-vae.md §2.8). Items may differ in everything: one request per item (`generation_requests`),
one batch request when the items differ only in their codes and seeds (`apply_blueprint`), or one batch
request with per-item prompts (`blueprint_request` + `item_prompts`, run by `generate_blueprint`; the
ComfyUI nodes do the same), which `pipeline.generate` alone cannot express since its text is per batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch

from acestep_core.errors import AceStepError
from acestep_core.planner.blueprint import Blueprint, PlanItem
from acestep_core.planner.cot import clamp_codes

_TEXT_FIELDS = ("caption", "lyrics", "language", "bpm", "keyscale", "timesignature", "duration")


def item_fields(item: PlanItem) -> dict[str, Any]:
    """The item's text and metadata in the names `TextRequest` and `GenerationRequest` use."""
    return {name: getattr(item, name) for name in _TEXT_FIELDS}


def text_request(base: Any, item: PlanItem) -> Any:
    """A `text.prompts.TextRequest` for one item: its text and metadata, and whether it carries codes."""
    return replace(base, **item_fields(item), has_audio_codes=bool(item.codes), batch_size=1)


def generation_request(base: Any, item: PlanItem) -> Any:
    """A `tasks.GenerationRequest` that makes this one item (batch 1, the item's seed and codes)."""
    return replace(base, **item_fields(item), audio_codes=item.codes_text or None, batch_size=1, seeds=(item.seed,))


def generation_requests(base: Any, blueprint: Blueprint) -> list[Any]:
    """One `GenerationRequest` per plan item."""
    return [generation_request(base, item) for item in blueprint.items]


def apply_blueprint(base: Any, blueprint: Blueprint) -> Any:
    """One batch `GenerationRequest` for the whole blueprint: per-item codes and seeds, shared text.

    Raises when the items' text or metadata differ (plans made with one CoT per item usually do): make
    one request per item with `generation_requests` instead.
    """
    first = item_fields(blueprint.items[0])
    for index, item in enumerate(blueprint.items[1:], start=1):
        differing = [name for name, value in item_fields(item).items() if value != first[name]]
        if differing:
            raise AceStepError(f"Plan items 0 and {index} differ in {', '.join(differing)}, so one batch request "
                               "cannot carry them: generate each item on its own (generation_requests), or plan with "
                               "share_cot=True.")
    codes = tuple(item.codes_text or None for item in blueprint.items)
    return replace(base, **first, audio_codes=codes if any(codes) else None, batch_size=blueprint.batch_size,
                   seeds=blueprint.seeds)


def codes_tensor(item: PlanItem, device: Any = "cpu") -> torch.Tensor:
    """The item's codes as a `[1, N]` long tensor, clamped to the codebook as the official hand-off does."""
    if not item.codes:
        raise AceStepError("This plan item has no audio codes (a metadata-only plan); plan with codes first.")
    return torch.tensor([clamp_codes(item.codes)], dtype=torch.long, device=device)


def item_hints(model: Any, item: PlanItem) -> torch.Tensor:
    """The 25 Hz hints `[1, 5N, C]` the DiT takes from the item's N codes (`AceStepModel.codes_to_hints`)."""
    parameter = next(model.parameters())
    with torch.no_grad():
        return model.codes_to_hints(codes_tensor(item, parameter.device))


def blueprint_request(base: Any, blueprint: Blueprint) -> Any:
    """One batch `GenerationRequest` for a blueprint whose items may differ in text: the first item's text
    and metadata (what the checks and the task plan read), per-item codes, the items' seeds.

    The items' own text reaches the DiT through `item_prompts`; `generate_blueprint` runs the pipeline so.
    """
    codes = tuple(item.codes_text or None for item in blueprint.items)
    return replace(base, **item_fields(blueprint.items[0]), audio_codes=codes if any(codes) else None,
                   batch_size=blueprint.batch_size, seeds=blueprint.seeds)


def item_prompts(request: Any, plan: Any, items: Sequence[PlanItem]) -> tuple[Any, ...]:
    """The DiT prompts (`TextPrompts`) of each item: the batch request's task and plan with the item's text
    and metadata; an item without a duration states the length of its codes, if it has any."""
    from acestep_core.task_inputs import text_request as plan_text_request
    from acestep_core.text.prompts import build_prompts

    prompts = []
    for item in items:
        fields = item_fields(item)
        if fields["duration"] is None and item.codes:
            fields["duration"] = item.seconds
        text = plan_text_request(replace(request, **fields), plan)
        prompts.append(build_prompts(replace(text, batch_size=1)).items[0])
    return tuple(prompts)


def generate_blueprint(request: Any, blueprint: Blueprint, models: Any, progress: Any = None, cancel: Any = None
                       ) -> Any:
    """`pipeline.generate` for a `blueprint_request` (seeds may be replaced), each item encoded with its own
    text: the prompts of all items are encoded as one batch (right-padded, masked), then the stages run as
    in `generate`. Returns its `GenerationResult`, whose `prompts` hold every item's prompts."""
    import random

    from acestep_core import pipeline
    from acestep_core.task_inputs import plan_task, text_request as plan_text_request
    from acestep_core.tasks import resolve_request
    from acestep_core.text.prompts import build_prompts

    if request.batch_size != blueprint.batch_size:
        raise AceStepError(f"The request makes {request.batch_size} songs but the blueprint has "
                           f"{blueprint.batch_size} plans; make the request with blueprint_request.")
    request = resolve_request(request, models.variant, random.Random())
    audio = pipeline.load_audio_inputs(request)
    plan = plan_task(request, audio.source.shape[-1] if audio.source is not None else None)
    schedule, seams = pipeline.make_schedule(request, models), pipeline.seams_for(request, plan)
    items = item_prompts(request, plan, blueprint.items)
    text = models.text_encoder.encode(items)
    tensors, padded = pipeline.prepare_inputs(models, request, plan, audio, text, progress, cancel)
    latents = pipeline.sample_latents(models, request, tensors, schedule, seams, progress, cancel)
    waveform = pipeline.postprocess(pipeline.decode_audio(models, latents, progress, cancel), request, plan, padded,
                                    seams)
    prompts = replace(build_prompts(plan_text_request(request, plan)), items=items)
    return pipeline.GenerationResult(waveform, pipeline.SAMPLE_RATE, latents.float().cpu(), tuple(request.seeds),
                                     schedule, dict(models.ids), request, plan, prompts)
