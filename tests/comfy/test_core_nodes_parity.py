"""The node graph makes the same songs as `pipeline.generate`, bit for bit, on the tiny models.

Run in the test ComfyUI's own Python (ComfyUI imported as a library, the pack loaded as ComfyUI loads
it), so the nodes go through their schema and ModelPatcher handles as in the server; no server needed.
Two songs: a text2music batch of 2 (seeds resolved by the sampler, prompts encoded once and shared by
the batch) and an extend of the test recording (the Repaint Mask re-encodes the padded source; the
encode node's seed is the sampler's, as the node help says).
"""

from __future__ import annotations

import comfyui_test_env

from .in_process import run_report

BODY = r"""
from tests.comfy.test_core_nodes import RATE, source_waveform

def run(node, **inputs):
    return nodes[node].execute(**inputs).result[0]

from acestep_core.pipeline import generate
from acestep_core.pipeline_models import load_models
from acestep_core.tasks import AudioData, GenerationRequest

dit = run("AceStepLoadDit", dit_name="acestep/acestep-v15-turbo", dtype="auto", variant="auto", download=False)
vae = run("AceStepLoadVae", vae_name="acestep/vae", dtype="auto", download=False)
te = run("AceStepLoadTextEncoder", text_encoder_name="acestep/Qwen3-Embedding-0.6B", dtype="auto", download=False)
models = load_models(base / "models" / "acestep")
text = dict(caption="dream pop, airy synths", lyrics="[verse]\nla la", language="en", bpm=0, keyscale="C major",
            timesignature="4", duration=0.0, track_name="none", track_classes="")
sampler = dict(steps=0, shift=3.0, guidance_scale=7.0, use_adg=False, cfg_interval_start=0.0, cfg_interval_end=1.0,
               infer_method="ode", sampler="euler", audio_cover_strength=1.0, cover_noise_strength=0.0)
decode = dict(normalize=True, peak_db=-1.0, fade_in=0.0, fade_out=0.0)
report = {}

def compare(name, latent, conditioning, seed, **fields):
    song = run("AceStepDitSampler", dit=dit, conditioning=conditioning, latent=latent, seed=seed, **sampler)
    audio = run("AceStepVaeDecode", vae=vae, latent=song, **decode)
    resolved = song["acestep_song"].request
    request = GenerationRequest(caption=text["caption"], lyrics=text["lyrics"], language="en", keyscale="C major",
                                timesignature="4", seeds=resolved.seeds, batch_size=resolved.batch_size, **fields)
    result = generate(request, models)
    report[name] = {
        "seeds": list(resolved.seeds),
        "steps": resolved.steps,
        "latent_diff": float((result.latents.transpose(1, 2) - song["samples"]).abs().max()),
        "audio_diff": float((result.audio - audio["waveform"]).abs().max()),
        "shape": list(audio["waveform"].shape),
        "rate": audio["sample_rate"],
        "pipeline_prompt": result.prompts.items[0].caption,
        "node_prompts": [p.caption for p in conditioning.encoded],
    }

empty = run("AceStepEmptyLatent", seconds=10.0, batch_size=2)
conditioning = run("AceStepTextEncode", text_encoder=te, task="text2music", latent=empty, **text)
compare("text2music", empty, conditioning, 7, duration=10.0)

recording = torch.from_numpy(source_waveform().T.copy())
source = run("AceStepSourceAudioEncode", vae=vae, audio={"waveform": recording[None], "sample_rate": RATE},
             encode_mode="seeded", seed=9, batch_size=1)
masked = run("AceStepRepaintMask", latent=source, repaint_start=4.0, repaint_end=7.0, mode="balanced", strength=0.5)
conditioning = run("AceStepTextEncode", text_encoder=te, task="extend", latent=masked, **text)
compare("extend", masked, conditioning, 9, task="extend", src_audio=AudioData(recording, RATE), repaint_start=4.0,
        repaint_end=7.0)
print(json.dumps(report))
"""


def test_nodes_match_the_pipeline(comfy_env: comfyui_test_env.TestEnv) -> None:
    report = run_report(comfy_env, BODY)
    text2music, extend = report["text2music"], report["extend"]
    assert text2music["seeds"][0] == 7 and len(set(text2music["seeds"])) == 2
    assert text2music["shape"] == [2, 2, 250 * 1920] and text2music["rate"] == 48000
    assert extend["shape"] == [1, 2, 7 * 48000] and extend["steps"] == 8
    for name, run in report.items():
        assert run["pipeline_prompt"] in run["node_prompts"], name
        assert run["latent_diff"] == 0.0 and run["audio_diff"] == 0.0, (name, run)
