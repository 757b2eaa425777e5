"""How each recorded official call maps onto our modules (used by `parity` and `verify`)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from acestep_core.diffusion import DitInputs, Retake, run_dit
from acestep_core.models.acestep import AceStepModel
from acestep_core.models.config import AceStepConfig
from acestep_core.parity import GoldenCase, Runner, UnsupportedCase
from acestep_core.sampling import DcwSettings, RepaintInputs, SamplerSettings, Schedule, base_schedule, turbo_schedule


@functools.lru_cache(maxsize=8)
def _dit_checkpoint(weights: str) -> AceStepModel:
    folder = Path(weights).parent
    config = AceStepConfig.from_dict(json.loads((folder / "config.json").read_text()))
    model = AceStepModel(config)
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval()


def _dit(case: GoldenCase) -> AceStepModel:
    return _dit_checkpoint(str(case.root / case.call["weights"]))


def run_condition_encoder(case: GoldenCase, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = _dit(case)
    names = ("text_hidden_states", "text_attention_mask", "lyric_hidden_states", "lyric_attention_mask",
             "refer_audio_acoustic_hidden_states_packed", "refer_audio_order_mask")
    hidden, mask = model.encoder(*(case.argument(n, tensors) for n in names))
    return {"output.encoder_hidden_states": hidden, "output.encoder_attention_mask": mask}


def run_decoder(case: GoldenCase, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = _dit(case)
    velocity = model.decoder(case.argument("hidden_states", tensors), case.argument("timestep", tensors),
                             case.argument("timestep_r", tensors),
                             case.argument("encoder_hidden_states", tensors),
                             case.argument("context_latents", tensors))
    return {"output.velocity": velocity}


def run_tokenize(case: GoldenCase, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = _dit(case)
    quantized, indices, mask = model.tokenize(case.argument("x", tensors), case.argument("silence_latent", tensors),
                                              case.argument("attention_mask", tensors))
    return {"output.quantized": quantized, "output.indices": indices, "output.attention_mask": mask}


def run_detokenize(case: GoldenCase, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = _dit(case)
    quantized = model.tokenizer.quantizer.codes_to_vectors(case.argument("codes", tensors))
    return {"output.quantized": quantized, "output.lm_hints_25hz": model.detokenize(quantized)}


def run_vae(case: GoldenCase, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from acestep_core.models.vae import OobleckConfig, OobleckVAE

    folder = case.root / Path(case.file).parent
    vae = OobleckVAE(OobleckConfig.from_dict(json.loads((folder / "config.json").read_text())))
    vae.load_state_dict(load_file(str(folder / "diffusion_pytorch_model.safetensors")), strict=True)
    vae.eval()
    posterior = vae.encode(case.argument("waveform", tensors))
    outputs = {
        "output.latent_mean": posterior.mean,
        "output.latent_scale_raw": posterior.scale_raw,
        "output.latent_std": posterior.std,
    }
    # The recorded decodes ran on the official tensors named in `decode_inputs` (its own encoded mean,
    # a random latent), so decode those same tensors: each output then tests the decoder alone.
    decoded_names = {"output.latent_mean": "output.decoded_from_mean", "input.latent": "output.decoded_from_latent"}
    for source in case.argument("decode_inputs", tensors, default=["output.latent_mean"]):
        outputs[decoded_names[source]] = vae.decode(tensors[source])
    return outputs


_BASE_FAMILY_MODULES = ("models.base.", "models.sft.", "models.xl_base.", "models.xl_sft.")


def _official_settings(case: GoldenCase, tensors: dict[str, torch.Tensor], base: bool) -> SamplerSettings:
    """The sampler options of an official `generate_audio` call, with that function's defaults."""
    arg = functools.partial(case.argument, tensors=tensors)
    guidance = arg("diffusion_guidance_scale", default=arg("diffusion_guidance_sale", default=7.0 if base else 1.0))
    dcw = DcwSettings(enabled=arg("dcw_enabled", default=True), mode=arg("dcw_mode", default="double"),
                      scaler=arg("dcw_scaler", default=0.05), high_scaler=arg("dcw_high_scaler", default=0.02),
                      wavelet=arg("dcw_wavelet", default="haar"))
    return SamplerSettings(
        guidance_scale=guidance, use_adg=arg("use_adg", default=False),
        cfg_interval_start=arg("cfg_interval_start", default=0.0),
        cfg_interval_end=arg("cfg_interval_end", default=1.0),
        infer_method=arg("infer_method", default="ode"), sampler_mode=arg("sampler_mode", default="euler"),
        velocity_norm_threshold=arg("velocity_norm_threshold", default=0.0),
        velocity_ema_factor=arg("velocity_ema_factor", default=0.0), dcw=dcw,
        audio_cover_strength=arg("audio_cover_strength", default=1.0),
        cover_noise_strength=arg("cover_noise_strength", default=0.0),
        repaint_injection_ratio=arg("repaint_injection_ratio", default=0.5),
        repaint_crossfade_frames=arg("repaint_crossfade_frames", default=10))


def _official_schedule(case: GoldenCase, tensors: dict[str, torch.Tensor], base: bool) -> Schedule:
    timesteps = case.argument("timesteps", tensors)
    if isinstance(timesteps, torch.Tensor):
        timesteps = timesteps.tolist()
    steps = case.argument("infer_steps", tensors)
    if base:
        return base_schedule(steps if steps is not None else 30, case.argument("shift", tensors, 1.0),
                             timesteps=timesteps)
    return turbo_schedule(case.argument("shift", tensors, 3.0), infer_steps=steps, timesteps=timesteps)


def run_generate(case: GoldenCase, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if case.argument("infer_method", tensors) == "sde":
        raise UnsupportedCase("not reproducible: the official SDE sampler re-noises from torch's unseeded "
                              "global RNG")
    if case.argument("seed", tensors) is None:
        raise UnsupportedCase("not reproducible: the official call drew unseeded noise (seed=None)")
    base = any(marker in case.call.get("model_class_module", "") for marker in _BASE_FAMILY_MODULES)
    arg = functools.partial(case.argument, tensors=tensors)
    inputs = DitInputs(*(arg(name) for name in (
        "text_hidden_states", "text_attention_mask", "lyric_hidden_states", "lyric_attention_mask",
        "refer_audio_acoustic_hidden_states_packed", "refer_audio_order_mask", "src_latents", "chunk_masks",
        "is_covers", "silence_latent", "attention_mask", "precomputed_lm_hints_25Hz",
        "non_cover_text_hidden_states", "non_cover_text_attention_mask")))
    repaint_mask = arg("repaint_mask")
    repaint = None
    if repaint_mask is not None:
        repaint = RepaintInputs(repaint_mask.to(torch.bool), arg("clean_src_latents"))
    retake = None
    if (arg("retake_variance") or 0.0) > 0:
        if arg("retake_seed") is None:
            raise UnsupportedCase("not reproducible: the retake noise was drawn unseeded (retake_seed=None)")
        retake = Retake(arg("retake_variance"), arg("retake_seed"))
    latents = run_dit(_dit(case), inputs, _official_schedule(case, tensors, base),
                      _official_settings(case, tensors, base), arg("seed"), retake=retake, repaint=repaint)
    return {"output.target_latents": latents}


_RUNNERS: list[tuple[str, Runner]] = [
    ("encoder.forward", run_condition_encoder),
    ("decoder.forward", run_decoder),
    ("get_output_from_indices", run_detokenize),
    ("tokenize(", run_tokenize),
    ("generate_audio", run_generate),
    ("AutoencoderOobleck", run_vae),
]


def find_runner(function: str) -> Runner:
    for marker, runner in _RUNNERS:
        if marker in function:
            return runner
    raise UnsupportedCase(f"not yet supported: no runner for official call {function!r}")
