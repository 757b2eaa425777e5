"""ACE-Step VAE Decode: LATENT → standard AUDIO, finished like the pipeline finishes a song.

Decoding runs in tiles (15 s windows with overlap, the engine's `decode_latents`), then the pipeline's
`postprocess`: anti-clipping, the source pasted back around a repaint (when the latent comes from the
DiT Sampler with a repaint range), peak normalisation and fades as set on this node. Latents that did
not come from our sampler (a source latent, another node's latent) get the same clean-up without the
repaint splice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from comfy_api.latest import io

from acestep_core.audio import decode_latents
from acestep_core.constants import SAMPLE_RATE
from acestep_core.errors import AceStepError
from acestep_core.pipeline import postprocess
from acestep_core.tasks import MAX_DURATION, GenerationRequest

from .common import CATEGORY, interrupted, progress_bar, user_errors
from .model_handles import VAE_TYPE, VaeHandle
from .sampler import SONG_KEY, SongRecord

DISPLAY_NAME = "ACE-Step VAE Decode"


class AceStepVaeDecode(io.ComfyNode):
    """Decode ACE-Step latents to 48 kHz stereo audio."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepVaeDecode", display_name=DISPLAY_NAME, category=CATEGORY,
            description=("Decodes ACE-Step latents into 48 kHz stereo AUDIO (in tiles, so long songs fit), then "
                         "finishes the song: anti-clipping, the source kept around a repaint, normalisation, fades."),
            inputs=[
                VAE_TYPE.Input("vae", tooltip="The ACE-Step VAE (Load ACE-Step VAE)."),
                io.Latent.Input("latent",
                                tooltip="Song latents from the ACE-Step DiT Sampler (or any ACE-Step LATENT)."),
                io.Boolean.Input("normalize", default=True,
                                 tooltip="Scale each song so its loudest peak sits at peak_db (the official default)."),
                io.Float.Input("peak_db", default=-1.0, min=-60.0, max=0.0, step=0.1,
                               tooltip="Peak level in dBFS when normalize is on (-1 dB by default)."),
                io.Float.Input("fade_in", default=0.0, min=0.0, max=MAX_DURATION, step=0.1,
                               tooltip="Linear fade-in over the first seconds (0 = none)."),
                io.Float.Input("fade_out", default=0.0, min=0.0, max=MAX_DURATION, step=0.1,
                               tooltip="Linear fade-out over the last seconds (0 = none)."),
            ],
            outputs=[io.Audio.Output(tooltip="AUDIO {waveform [batch, 2, samples] float32, sample_rate 48000}.")],
        )

    @classmethod
    def execute(cls, vae: VaeHandle, latent: dict[str, Any], normalize: bool, peak_db: float, fade_in: float,
                fade_out: float) -> io.NodeOutput:
        with user_errors(DISPLAY_NAME):
            samples = latent.get("samples")
            network = vae.load()
            if getattr(samples, "ndim", 0) != 3 or samples.shape[1] != network.latent_channels:
                shape = tuple(samples.shape) if hasattr(samples, "shape") else type(samples).__name__
                raise AceStepError(f"latent has samples {shape}, but this VAE decodes [batch, "
                                   f"{network.latent_channels}, frames]: connect an ACE-Step latent made with this "
                                   "VAE's DiT.")
            audio = decode_latents(network, samples, progress=progress_bar(), cancel=interrupted)
            record: SongRecord | None = latent.get(SONG_KEY)
            finish = dict(normalize=normalize, normalization_db=peak_db, fade_in=fade_in, fade_out=fade_out)
            if record is not None:
                request = dataclasses.replace(record.request, **finish)
                audio = postprocess(audio, request, record.plan, record.padded_source, record.seams)
            else:
                audio = postprocess(audio, GenerationRequest(**finish), None, None, None)
        return io.NodeOutput({"waveform": audio.float().cpu().contiguous(), "sample_rate": SAMPLE_RATE})


DECODE_NODES: list[type[io.ComfyNode]] = [AceStepVaeDecode]
