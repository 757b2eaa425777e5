"""Parity of our Oobleck VAE with diffusers' AutoencoderOobleck on the golden tensors, plus shape rules."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from acestep_core.constants import LATENT_CHANNELS, VAE_HOP
from acestep_core.errors import AceStepError
from acestep_core.models.vae import OobleckConfig, OobleckPosterior, OobleckVAE, WNConv1d, WNConvTranspose1d

REL_L2_TOL = 1e-5
MAX_ABS_TOL = 1e-4


def _rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected).norm() / expected.norm()).item()


@pytest.fixture(scope="module")
def case_dir(golden_dir: Path) -> Path:
    return golden_dir / "vae_tiny"


@pytest.fixture(scope="module")
def config(case_dir: Path) -> OobleckConfig:
    return OobleckConfig.from_dict(json.loads((case_dir / "config.json").read_text()))


@pytest.fixture(scope="module")
def weights(case_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(case_dir / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def golden(case_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(case_dir / "vae_encode_decode.safetensors")


def _loaded_vae(config: OobleckConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype) -> OobleckVAE:
    vae = OobleckVAE(config)
    vae.load_state_dict(weights, strict=True)
    return vae.to(dtype).eval()


@pytest.fixture(scope="module")
def outputs(config, weights, golden) -> dict[str, torch.Tensor]:
    """Our results for every `output.*` tensor, produced the way the golden call describes."""
    vae = _loaded_vae(config, weights, torch.float32)
    with torch.no_grad():
        posterior = vae.encode(golden["input.waveform"])
        return {
            "output.latent_mean": posterior.mean,
            "output.latent_scale_raw": posterior.scale_raw,
            "output.latent_std": posterior.std,
            "output.decoded_from_mean": vae.decode(golden["output.latent_mean"]),
            "output.decoded_from_latent": vae.decode(golden["input.latent"]),
        }


def test_config_reads_diffusers_json(config: OobleckConfig, case_dir: Path) -> None:
    raw = json.loads((case_dir / "config.json").read_text())
    assert "_class_name" in raw
    assert config.to_dict() == {k: v for k, v in raw.items() if not k.startswith("_")}
    assert config.hop_length == VAE_HOP


def test_default_config_is_the_real_vae() -> None:
    """The real checkpoint: 365 tensors, 168,695,426 parameters, diffusers key names and shapes."""
    with torch.device("meta"):
        vae = OobleckVAE()
    state = vae.state_dict()
    assert vae.hop_length == VAE_HOP and vae.latent_channels == LATENT_CHANNELS
    assert len(state) == 365
    assert sum(k.startswith("encoder.") for k in state) == 183
    assert sum(t.numel() for t in state.values()) == 168_695_426
    assert state["encoder.conv2.weight_v"].shape == (128, 2048, 3)
    assert state["decoder.block.0.conv_t1.weight_v"].shape == (2048, 1024, 20)
    assert state["decoder.block.0.conv_t1.bias"].shape == (1024,)
    assert "decoder.conv2.bias" not in state


def test_inconsistent_config_is_a_user_error() -> None:
    with pytest.raises(AceStepError, match="config.json"):
        OobleckConfig(channel_multiples=[1, 2], downsampling_ratios=[2, 4, 4])
    with pytest.raises(AceStepError, match="config.json"):
        OobleckConfig(encoder_hidden_size=64, decoder_input_channels=64)


def test_golden_weights_load_strictly(config, weights, case_dir: Path) -> None:
    vae = OobleckVAE(config)
    result = vae.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with safe_open(case_dir / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert set(f.keys()) == set(vae.state_dict())


@pytest.mark.parametrize(
    "name",
    ["output.latent_mean", "output.latent_scale_raw", "output.latent_std",
     "output.decoded_from_mean", "output.decoded_from_latent"],
)
def test_golden_outputs(name: str, outputs, golden) -> None:
    actual, expected = outputs[name], golden[name]
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert _rel_l2(actual, expected) <= REL_L2_TOL
    assert (actual - expected).abs().max().item() <= MAX_ABS_TOL


def test_every_golden_output_is_checked(golden, outputs) -> None:
    assert {k for k in golden if k.startswith("output.")} == set(outputs)


@pytest.mark.parametrize(
    "ours_cls, ref_cls", [(WNConv1d, torch.nn.Conv1d), (WNConvTranspose1d, torch.nn.ConvTranspose1d)]
)
def test_weight_norm_matches_torch(ours_cls, ref_cls) -> None:
    """Same kernel as `torch.nn.utils.parametrizations.weight_norm` (norm over every axis but 0)."""
    gen = torch.Generator().manual_seed(0)
    ours = ours_cls(3, 6, 4, stride=2, padding=1)
    ref = torch.nn.utils.parametrizations.weight_norm(ref_cls(3, 6, 4, stride=2, padding=1))
    v = torch.randn(ours.weight_v.shape, generator=gen)
    g = torch.rand(ours.weight_g.shape, generator=gen) + 0.5
    b = torch.randn(6, generator=gen)
    with torch.no_grad():
        for param, value in ((ours.weight_v, v), (ours.weight_g, g), (ours.bias, b),
                             (ref.parametrizations.weight.original1, v),
                             (ref.parametrizations.weight.original0, g), (ref.bias, b)):
            param.copy_(value)
        x = torch.randn(2, 3, 11, generator=gen)
        assert _rel_l2(ours.weight(), ref.weight) <= 1e-6
        assert _rel_l2(ours(x), ref(x)) <= 1e-6


@pytest.mark.parametrize("samples", [VAE_HOP, 2 * VAE_HOP - 1, 3 * VAE_HOP + 7])
def test_encoder_length_rule(samples: int, config, weights) -> None:
    vae = _loaded_vae(config, weights, torch.float32)
    waveform = torch.randn(2, config.audio_channels, samples, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        posterior = vae.encode(waveform)
    frames = samples // vae.hop_length
    assert posterior.mean.shape == posterior.std.shape == (2, vae.latent_channels, frames)


@pytest.mark.parametrize("frames", [1, 3])
def test_decoder_length_rule(frames: int, config, weights) -> None:
    vae = _loaded_vae(config, weights, torch.float32)
    latent = torch.randn(2, vae.latent_channels, frames, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        audio = vae.decode(latent)
    assert audio.shape == (2, config.audio_channels, vae.hop_length * frames)


def test_bad_shapes_are_user_errors(config, weights) -> None:
    vae = _loaded_vae(config, weights, torch.float32)
    with pytest.raises(AceStepError, match="stereo"):
        vae.encode(torch.zeros(1, 1, 4 * VAE_HOP))
    with pytest.raises(AceStepError, match="fewer than one latent frame"):
        vae.encode(torch.zeros(1, 2, VAE_HOP - 1))
    with pytest.raises(AceStepError, match="latent has shape"):
        vae.decode(torch.zeros(1, vae.latent_channels + 1, 4))


def test_posterior_sample_follows_the_generator(outputs) -> None:
    """`sample` is `mean + std * randn` drawn from the given generator, so a seed reproduces it."""
    posterior = OobleckPosterior(outputs["output.latent_mean"], outputs["output.latent_scale_raw"])
    first = posterior.sample(torch.Generator().manual_seed(7))
    noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, posterior.mean + posterior.std * noise, rtol=0, atol=0)
    assert not torch.equal(first, posterior.sample(torch.Generator().manual_seed(8)))
    assert posterior.mode() is posterior.mean


@pytest.mark.parametrize("dtype, rel_tol", [(torch.bfloat16, 0.2), (torch.float16, 0.05)])
def test_half_precision_forward(dtype: torch.dtype, rel_tol: float, config, weights, golden) -> None:
    """Low-precision modules run end to end, stay finite and land near the float32 reference."""
    vae = _loaded_vae(config, weights, dtype)
    with torch.no_grad():
        posterior = vae.encode(golden["input.waveform"])
        audio = vae.decode(golden["input.latent"])
    assert posterior.mean.dtype == audio.dtype == dtype
    assert torch.isfinite(posterior.std).all() and torch.isfinite(audio).all()
    assert _rel_l2(posterior.mean, golden["output.latent_mean"]) <= rel_tol
    assert _rel_l2(audio, golden["output.decoded_from_latent"]) <= rel_tol
