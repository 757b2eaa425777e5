"""Whole official sampling runs with our tiny DiT behind the loop: condition → noise → steps → latents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from acestep_core.models.acestep import AceStepModel
from acestep_core.models.config import AceStepConfig
from acestep_core.models.dit import CrossAttentionCache
from acestep_core.sampling import (
    DCW_OFF,
    DcwSettings,
    SamplerSettings,
    base_schedule,
    draw_noise,
    sample,
    turbo_schedule,
)

from .test_sampling_golden import RUNS, assert_close

CONDITION_ARGS = (
    "text_hidden_states", "text_attention_mask", "lyric_hidden_states", "lyric_attention_mask",
    "refer_audio_acoustic_hidden_states_packed", "refer_audio_order_mask", "src_latents", "attention_mask",
    "silence_latent", "src_latents", "chunk_masks", "is_covers",
)


def load_model(folder: Path) -> AceStepModel:
    model = AceStepModel(AceStepConfig.from_dict(json.loads((folder / "config.json").read_text())))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return model.eval()


def dit_velocity(model: AceStepModel):
    """The adapter a pipeline writes: the loop's cache dict holds the decoder's cross-attention cache."""

    def velocity(x: torch.Tensor, t: torch.Tensor, condition: tuple, cache: dict | None) -> torch.Tensor:
        states, context = condition
        kv = cache.setdefault("cross_attention", CrossAttentionCache()) if cache is not None else None
        return model.decoder(x, t, t, states, context, cache=kv)

    return velocity


@pytest.mark.parametrize("name", RUNS)
def test_generate_matches_official_output(golden_dir: Path, name: str) -> None:
    with safe_open(str(golden_dir / name), "pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        call = json.loads(f.metadata()["call"])
    args = call["arguments"]
    model = load_model((golden_dir / call["weights"]).parent)
    with torch.no_grad():
        states, _, context = model.prepare_condition(*(tensors[args[n]] for n in CONDITION_ARGS))
    noise = draw_noise(*tensors["debug.noise"].shape, args["seed"])
    if ".base." in call["function"]:
        schedule = base_schedule(args["infer_steps"], args["shift"])
        settings = SamplerSettings(guidance_scale=args["diffusion_guidance_scale"], dcw=DCW_OFF)
        states = torch.cat([states, model.null_condition(states)])
        context = torch.cat([context, context])
    else:
        schedule = turbo_schedule(args["shift"])
        settings = SamplerSettings(dcw=DCW_OFF if args.get("dcw_enabled") is False else DcwSettings())
    out = sample(dit_velocity(model), noise, schedule, (states, context), settings=settings)
    assert_close(out, tensors["output.target_latents"], name)
