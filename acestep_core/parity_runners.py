"""How each recorded official call maps onto our modules (used by `parity` and `verify`)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from acestep_core.models.acestep import AceStepModel
from acestep_core.models.config import AceStepConfig
from acestep_core.parity import GoldenCase, Runner, UnsupportedCase


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


def run_generate(case: GoldenCase, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    raise UnsupportedCase("not yet supported: the samplers (generate_audio) are not wired into verify yet")


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
