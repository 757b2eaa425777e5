"""LM Planner → Text Encode (blueprint) → DiT Sampler → VAE Decode makes the songs the engine makes from the
same blueprint (`planner.handoff.generate_blueprint`), bit for bit, on the tiny models.

Run in the test ComfyUI's own Python, like `test_core_nodes_parity`. The blueprint has two plans whose
captions and metadata differ, so the batch carries per-item prompts (encoded together, right-padded and
masked) and per-item codes (25 Hz hints with the cover instruction).
"""

from __future__ import annotations

import comfyui_test_env

from .in_process import run_report

BODY = r"""
torch.set_num_threads(1)
from tests.comfy.tiny_model_folders import LM_FOLDER

def run(node, **inputs):
    return nodes[node].execute(**inputs).result[0]

from acestep_core.pipeline_models import load_models
from acestep_core.planner.handoff import blueprint_request, generate_blueprint
from acestep_core.tasks import GenerationRequest
from acestep_core.text.prompts import COVER_INSTRUCTION

lm = run("AceStepLoadLM", lm_name="acestep/" + LM_FOLDER, dtype="auto", download=False)
plan = run("AceStepLMPlanner", lm=lm, mode="think", caption="dream pop", lyrics="[verse]\nla la", instrumental=False,
           bpm=0, keyscale="auto", timesignature="auto", duration=10.0, language="auto", write_codes=True,
           use_lm_caption=True, temperature=0.85, cfg_scale=2.0, top_k=0, top_p=0.9, min_p=0.0,
           repetition_penalty=1.0, max_text_tokens=60, seed=3, batch_size=2)
dit = run("AceStepLoadDit", dit_name="acestep/acestep-v15-turbo", dtype="auto", variant="auto", download=False)
vae = run("AceStepLoadVae", vae_name="acestep/vae", dtype="auto", download=False)
te = run("AceStepLoadTextEncoder", text_encoder_name="acestep/Qwen3-Embedding-0.6B", dtype="auto", download=False)
empty = run("AceStepEmptyLatent", seconds=10.0, batch_size=1)
conditioning = run("AceStepTextEncode", text_encoder=te, caption="replaced", lyrics="", language="auto", bpm=0,
                   keyscale="auto", timesignature="auto", duration=0.0, task="text2music", track_name="none",
                   track_classes="", latent=empty, blueprint=plan)
song = run("AceStepDitSampler", dit=dit, conditioning=conditioning, latent=empty, seed=7, steps=0, shift=3.0,
           guidance_scale=7.0, use_adg=False, cfg_interval_start=0.0, cfg_interval_end=1.0, infer_method="ode",
           sampler="euler", audio_cover_strength=1.0, cover_noise_strength=0.0)
audio = run("AceStepVaeDecode", vae=vae, latent=song, normalize=True, peak_db=-1.0, fade_in=0.0, fade_out=0.0)
resolved = song["acestep_song"].request
request = dataclasses.replace(blueprint_request(GenerationRequest(), plan), seeds=resolved.seeds)
result = generate_blueprint(request, plan, load_models(base / "models" / "acestep"))
print(json.dumps({
    "codes": [len(item.codes) for item in plan.items],
    "captions_differ": plan.items[0].caption != plan.items[1].caption,
    "seeds": list(resolved.seeds),
    "cover_instruction": COVER_INSTRUCTION.strip(),
    "shape": list(audio["waveform"].shape),
    "latent_diff": float((result.latents.transpose(1, 2) - song["samples"]).abs().max()),
    "audio_diff": float((result.audio - audio["waveform"]).abs().max()),
    "engine_prompts": [p.caption for p in result.prompts.items],
    "node_prompts": [[p.caption for p in key] for key in conditioning.encoded if isinstance(key, tuple)],
}))
"""


def test_blueprint_nodes_match_the_engine(comfy_env: comfyui_test_env.TestEnv) -> None:
    report = run_report(comfy_env, BODY)
    assert report["codes"] == [50, 50] and report["captions_differ"]
    assert report["seeds"][0] == 7 and report["shape"] == [2, 2, 250 * 1920]
    assert report["node_prompts"] == [report["engine_prompts"]]
    assert all(report["cover_instruction"] in prompt for prompt in report["engine_prompts"])
    assert report["latent_diff"] == 0.0 and report["audio_diff"] == 0.0, report
