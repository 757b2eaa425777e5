"""Understand mode from source audio: a LATENT → the official audio codes (golden tiny DiT tokenizer) → the
understand prompt → metadata, caption and lyrics in the blueprint, with the codes kept for the DiT."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest
from safetensors.torch import load_file

from acestep_core.checkpoints import load_dit
from acestep_core.errors import AceStepError
from acestep_core.planner import LMCall, latent_codes, plan_understand
from acestep_core.planner.cot import codes_to_text
from acestep_core.planner.prompts import understand_prompt

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "tiny_2b"
LM_TEXT = ("<think>\nbpm: 92\ncaption: A hazy lo-fi beat with dusty piano.\nduration: 30\ngenres: lo-fi\n"
           "keyscale: D minor\nlanguage: en\ntimesignature: 4\n</think>\n\n# Lyric\n[Verse]\nslow rain<|im_end|>")


class Canned:
    """A runner that records the calls and answers each with LM_TEXT."""

    def __init__(self) -> None:
        self.calls: list[LMCall] = []

    def run(self, calls: Sequence[LMCall], progress=None, cancel=None) -> list[str]:
        self.calls += calls
        return [LM_TEXT] * len(calls)


@pytest.fixture(scope="module")
def dit():
    return load_dit(GOLDEN).model


def test_latent_to_codes_to_description(dit) -> None:
    golden = load_file(GOLDEN / "audio_tokenizer.safetensors")
    latent = golden["input.x"].transpose(1, 2)  # the LATENT layout [B, C, T]
    codes = latent_codes(dit, latent, golden["input.silence_latent"])
    assert codes == tuple(golden["output.indices"].flatten().tolist())
    runner = Canned()
    item = plan_understand(runner, codes, seeds=[7]).items[0]
    assert runner.calls[0].prompt == understand_prompt(codes_to_text(codes))
    assert item.codes == codes and item.seed == 7
    assert (item.bpm, item.keyscale, item.language, item.timesignature, item.duration) == (92, "D minor", "en", "4", 30)
    assert item.caption == "A hazy lo-fi beat with dusty piano." and item.lyrics == "[Verse]\nslow rain"
    assert item.metadata["genres"] == "lo-fi"


def test_latent_of_another_vae_is_refused(dit) -> None:
    golden = load_file(GOLDEN / "audio_tokenizer.safetensors")
    with pytest.raises(AceStepError, match="VAE that belongs to this DiT"):
        latent_codes(dit, golden["input.x"], golden["input.silence_latent"])
    with pytest.raises(AceStepError, match="item 3"):
        latent_codes(dit, golden["input.x"].transpose(1, 2), golden["input.silence_latent"], item=3)
