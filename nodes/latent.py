"""ACE-Step Empty Latent: the silent canvas a text2music run starts from.

The output is ComfyUI's standard audio LATENT in the layout of its native ACE-Step 1.5 empty latent,
`{"samples": zeros [B, 64, T], "type": "audio"}` at 25 frames per second, so core latent nodes and
ours can exchange it. The frame count follows the official ACE-Step rule rather than the native node's
rounding, so that a song of the same length gets the same noise shape as the official pipeline.
"""

from __future__ import annotations

import comfy.model_management
import torch
from comfy_api.latest import io

from acestep_core.constants import LATENT_CHANNELS, SAMPLE_RATE, VAE_HOP
from acestep_core.errors import AceStepError

from .common import CATEGORY, user_errors

NODE_ID = "AceStepEmptyLatent"
DISPLAY_NAME = "ACE-Step Empty Latent"
MIN_SECONDS = 10.0
MAX_SECONDS = 600.0
MAX_BATCH = 8


def latent_frames(seconds: float) -> int:
    """Frames for a song of `seconds`: the official rule, duration rounded to 0.1 s, 48 kHz / 1920 hop.

    Checked here as well as by ComfyUI's widget limits, because a value wired from another node
    reaches `execute` without ComfyUI's min/max check.
    """
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise AceStepError(
            f"seconds is {seconds}; ACE-Step 1.5 makes songs of {MIN_SECONDS:g} to {MAX_SECONDS:g} s. "
            "Set 'seconds' (or the value wired into it) inside that range."
        )
    return int(round(seconds, 1) * SAMPLE_RATE) // VAE_HOP


def _latent_dtype() -> torch.dtype:
    """What the native empty latents use: `intermediate_dtype()` where ComfyUI has it (newer than 0.3.75)."""
    intermediate_dtype = getattr(comfy.model_management, "intermediate_dtype", None)
    return intermediate_dtype() if intermediate_dtype is not None else torch.float32


class AceStepEmptyLatent(io.ComfyNode):
    """Zero latent of the requested length and batch size."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name=DISPLAY_NAME,
            category=CATEGORY,
            description=(
                "An empty (all-zero) ACE-Step 1.5 audio latent: the starting canvas for text2music. "
                "Its length sets the song length."
            ),
            inputs=[
                io.Float.Input(
                    "seconds", default=60.0, min=MIN_SECONDS, max=MAX_SECONDS, step=0.1,
                    tooltip=(
                        f"Song length in seconds ({MIN_SECONDS:g} to {MAX_SECONDS:g}, default 60). "
                        "The latent has 25 frames per second."
                    ),
                ),
                io.Int.Input(
                    "batch_size", default=1, min=1, max=MAX_BATCH,
                    tooltip=f"How many songs to make in one run (1 to {MAX_BATCH}); each gets its own noise.",
                ),
            ],
            outputs=[
                io.Latent.Output(tooltip="Audio LATENT {samples: zeros [batch, 64, frames], type: audio}."),
            ],
        )

    @classmethod
    def execute(cls, seconds: float, batch_size: int) -> io.NodeOutput:
        with user_errors(DISPLAY_NAME):
            frames = latent_frames(seconds)
            if not 1 <= batch_size <= MAX_BATCH:
                raise AceStepError(f"batch_size is {batch_size}; set it between 1 and {MAX_BATCH}.")
        samples = torch.zeros(
            [batch_size, LATENT_CHANNELS, frames],
            device=comfy.model_management.intermediate_device(),
            dtype=_latent_dtype(),
        )
        return io.NodeOutput({"samples": samples, "type": "audio"})
