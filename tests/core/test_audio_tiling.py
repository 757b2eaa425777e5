"""Tiled VAE encode/decode: equal to one pass when the overlap covers the receptive field, bounded memory,
progress and cancel.

Run as a script (`PYTHONPATH=. python tests/core/test_audio_tiling.py {tiny|cheap} MINUTES`) it decodes that
many minutes in a fresh process and prints the growth of peak RSS; the memory test below uses that. Measured
with the real tiny VAE for 10 minutes: +956 MB peak (230 MB output buffer + one window's working set, which
alone is ~470 MB for this VAE on CPU), versus +1.2 GB for a one-pass decode of only 2 minutes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_core.errors import AceStepError
from acestep_core.models.vae import OobleckConfig, OobleckVAE
from acestep_core.vae_tiling import Cancelled, decode_latents, encode_latents

VAE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "vae_tiny"
HOP = 1920
# The tiny VAE's receptive field, measured: the decoder needs 10 latent frames of context on each side, the
# encoder 8 frames (both well inside the real defaults' 64 frames / 2 s).
DECODE_CONTEXT = 10
ENCODE_CONTEXT = 8
REL_TOL = 1e-5


def _tiny_vae() -> OobleckVAE:
    vae = OobleckVAE(OobleckConfig.from_dict(json.loads((VAE_DIR / "config.json").read_text())))
    vae.load_state_dict(load_file(VAE_DIR / "diffusion_pytorch_model.safetensors"), strict=True)
    return vae.eval()


def _cheap_vae() -> OobleckVAE:
    """The tiny VAE with its decoder swapped for a free upsampler: for tests of the tiling loop, not the net."""
    vae = _tiny_vae()
    vae.decode = lambda z: z[:, :2].repeat_interleave(HOP, dim=-1)
    return vae


@pytest.fixture(scope="module")
def vae() -> OobleckVAE:
    return _tiny_vae()


@pytest.fixture(scope="module")
def cheap_vae() -> OobleckVAE:
    return _cheap_vae()


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("frames", [40, 37])
def test_tiled_decode_equals_one_pass(vae: OobleckVAE, frames: int) -> None:
    latents = torch.randn(2, vae.latent_channels, frames, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        expected = vae.decode(latents)
    tiled = decode_latents(vae, latents, chunk=2 * DECODE_CONTEXT + 16, overlap=DECODE_CONTEXT)
    assert tiled.shape == (2, 2, frames * HOP) and tiled.dtype == torch.float32 and tiled.device.type == "cpu"
    assert _rel(tiled, expected) < REL_TOL


def test_too_little_overlap_shows_seams(vae: OobleckVAE) -> None:
    """The equality above is not trivial: an overlap smaller than the receptive field breaks it."""
    latents = torch.randn(1, vae.latent_channels, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = vae.decode(latents)
    assert _rel(decode_latents(vae, latents, chunk=24, overlap=4), expected) > 1e-2


def test_short_latents_decode_in_one_pass(vae: OobleckVAE) -> None:
    latents = torch.randn(1, vae.latent_channels, 30, generator=torch.Generator().manual_seed(2))
    calls = []
    out = decode_latents(vae, latents, chunk=30, overlap=10, progress=lambda d, t: calls.append((d, t)))
    with torch.no_grad():
        assert torch.equal(out, vae.decode(latents))
    assert calls == [(1, 1)]


@pytest.mark.parametrize("extra_samples", [0, 1234])
def test_tiled_encode_equals_one_pass(vae: OobleckVAE, extra_samples: int) -> None:
    waveform = 0.3 * torch.randn(1, 2, 40 * HOP + extra_samples, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        posterior = vae.encode(waveform)
    kwargs = {"chunk": (2 * ENCODE_CONTEXT + 16) * HOP, "overlap": ENCODE_CONTEXT * HOP}
    mean = encode_latents(vae, waveform, sample=False, **kwargs)
    assert mean.shape == (1, vae.latent_channels, 40) and mean.dtype == torch.float32
    assert _rel(mean, posterior.mean) < REL_TOL
    sampled = encode_latents(vae, waveform, generator=torch.Generator().manual_seed(7), **kwargs)
    expected = posterior.sample(torch.Generator().manual_seed(7))
    assert _rel(sampled, expected) < REL_TOL


def test_encode_sampling_is_seeded(vae: OobleckVAE) -> None:
    waveform = 0.3 * torch.randn(1, 2, 10 * HOP, generator=torch.Generator().manual_seed(4))
    first, again, other = (encode_latents(vae, waveform, generator=torch.Generator().manual_seed(s))
                           for s in (1, 1, 2))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    mean = encode_latents(vae, waveform, sample=False)
    assert not torch.allclose(first, mean)


def test_progress_counts_every_window_of_every_item(cheap_vae: OobleckVAE) -> None:
    latents = torch.randn(2, cheap_vae.latent_channels, 50)
    calls = []
    out = decode_latents(cheap_vae, latents, chunk=30, overlap=5, progress=lambda d, t: calls.append((d, t)))
    # stride 20 over 50 frames: 3 windows per item
    assert calls == [(i, 6) for i in range(1, 7)]
    assert torch.equal(out, cheap_vae.decode(latents))


def test_cancel_stops_between_windows(vae: OobleckVAE, cheap_vae: OobleckVAE) -> None:
    latents = torch.zeros(1, vae.latent_channels, 50)
    calls = []
    with pytest.raises(Cancelled, match="1 of 3"):
        decode_latents(cheap_vae, latents, chunk=30, overlap=5, progress=lambda d, t: calls.append(d),
                       cancel=lambda: len(calls) >= 1)
    assert calls == [1]

    class Interrupted(Exception):
        pass

    def raising_cancel() -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        encode_latents(vae, torch.zeros(1, 2, 5 * HOP), cancel=raising_cancel)


@pytest.mark.parametrize("kwargs, match", [
    ({"chunk": 20, "overlap": 10}, "larger than twice"),
    ({"chunk": 20, "overlap": -1}, "larger than twice"),
])
def test_bad_decode_tiling_is_refused(vae: OobleckVAE, kwargs: dict, match: str) -> None:
    with pytest.raises(AceStepError, match=match):
        decode_latents(vae, torch.zeros(1, vae.latent_channels, 50), **kwargs)


def test_bad_inputs_are_refused(vae: OobleckVAE) -> None:
    with pytest.raises(AceStepError, match="multiples of 1920"):
        encode_latents(vae, torch.zeros(1, 2, 10 * HOP), chunk=1000 * 48, overlap=1000)
    with pytest.raises(AceStepError, match="transpose"):
        decode_latents(vae, torch.zeros(1, 20, vae.latent_channels))
    with pytest.raises(AceStepError, match="NaN"):
        decode_latents(vae, torch.full((1, vae.latent_channels, 5), float("nan")))
    with pytest.raises(AceStepError, match="at least 1920"):
        encode_latents(vae, torch.zeros(1, 2, 100))


def _decode_peak_growth(kind: str, minutes: float) -> dict:
    """Decode `minutes` of latents in this process; report peak-RSS growth over the state just before."""
    import resource
    import time

    vae = _cheap_vae() if kind == "cheap" else _tiny_vae()
    latents = torch.randn(1, vae.latent_channels, int(minutes * 60 * 25))
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    start = time.perf_counter()
    audio = decode_latents(vae, latents)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"growth": after - before, "output_bytes": audio.numel() * audio.element_size(), "seconds": seconds}


@pytest.mark.skipif(sys.platform == "win32", reason="peak RSS comes from the resource module (POSIX)")
def test_ten_minute_decode_memory_is_bounded() -> None:
    """10 minutes of audio is a 230 MB float32 buffer; peak growth must stay within it plus 100 MB of
    per-window working memory (one pass would need the whole song at several intermediate sizes)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, __file__, "cheap", "10"], capture_output=True, text=True, timeout=120,
                         cwd=root, env=env)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["output_bytes"] == 10 * 60 * 48000 * 2 * 4
    assert report["growth"] < report["output_bytes"] + 100 * 2 ** 20, report


if __name__ == "__main__":
    print(json.dumps(_decode_peak_growth(sys.argv[1], float(sys.argv[2]))))
