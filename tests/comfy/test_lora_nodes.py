"""The LoRA nodes: the same weights and songs as the engine's `apply_adapters`, stacking, exact removal, bake,
inspect and the misfit error.

Most checks run in the test ComfyUI's own Python with ComfyUI imported as a library and the pack loaded as
ComfyUI loads it (as `test_core_nodes_parity`), so node outputs can be compared tensor for tensor with the
engine: the patched DiT that ComfyUI's model manager loads for a LoRA handle is compared with a fresh DiT
merged by `acestep_core.lora.apply_adapters`, and one song with the engine's `pipeline.generate` on that
merged DiT. The server tests check what only a real graph shows: the menu, the node error, and that a run
after the loader is removed from the graph gives the base song bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import comfyui_test_env
import pytest
import torch

from .client import ComfyClient, execution_error
from .in_process import run_report
from .node_definitions import check_node_definitions
from .test_core_nodes import core_models, song_prompt  # noqa: F401  (core_models is a fixture)
from .test_empty_latent import saved_latent
from .tiny_model_folders import LOKR_FILE, LORA_FILE, LORA_FOLDER, WIDE_LORA_FILE

BODY = r"""
from tests.comfy.tiny_model_folders import LOKR_FILE, LORA_FILE, LORA_FOLDER, WIDE_LORA_FILE

def run(node, **inputs):
    return nodes[node].execute(**inputs)

from acestep_core.checkpoints import load_dit
from acestep_core.errors import AceStepError
from acestep_core.lora import apply_adapters
from acestep_core.pipeline import generate
from acestep_core.pipeline_models import load_models
from acestep_core.tasks import GenerationRequest

loras = base / "models" / "loras"
turbo = base / "models" / "acestep" / "acestep-v15-turbo"
report = {}

def weights(handle):
    return {k: v.detach().clone() for k, v in handle.load().state_dict().items()}

def merged(stack):
    model = load_dit(turbo, require_silence_latent=False).model
    apply_adapters(model, [(loras / name, scale) for name, scale in stack])
    return model.state_dict()

def differing(a, b):
    return sorted(k for k in a if not torch.equal(a[k], b[k]))

def chain(dit, stack):
    for name, scale in stack:
        dit = run("AceStepLoraLoader", dit=dit, lora_name=name, strength=scale).result[0]
    return dit

dit = run("AceStepLoadDit", dit_name="acestep/acestep-v15-turbo", dtype="auto", variant="auto",
          download=False).result[0]
base_weights = weights(dit)
stacks = {"file": [(LORA_FILE, 0.8)], "peft": [(LORA_FOLDER, -0.5)], "lokr": [(LOKR_FILE, 1.3)],
          "chain": [(LORA_FILE, 0.8), (LORA_FOLDER, -0.5), (LOKR_FILE, 0.6)]}
for label, stack in stacks.items():
    patched = weights(chain(dit, stack))
    report[f"{label}_vs_engine"] = differing(patched, merged(stack))
    report[f"{label}_changed"] = len(differing(patched, base_weights))
patched = chain(dit, stacks["chain"])
slots = {}
for slot, (name, scale) in enumerate(stacks["chain"], 1):
    slots.update({f"lora_{slot}": name, f"strength_{slot}": scale})
stacked = run("AceStepLoraStack", dit=dit, **slots, lora_4="none", strength_4=1.0).result[0]
report["stack_vs_chain"] = differing(weights(stacked), weights(patched))
report["stack_adapters"] = [[a.name, s] for a, s in stacked.adapters]
zero = chain(dit, [(LORA_FILE, 0.0)])
report["zero_patches"] = len(zero.patcher.patches)
report["zero_vs_base"] = differing(weights(zero), base_weights)
weights(patched)
report["base_after_lora"] = differing(weights(dit), base_weights)
report["base_model_untouched"] = differing(dit.patcher.model.network.state_dict(), base_weights)

te = run("AceStepLoadTextEncoder", text_encoder_name="acestep/Qwen3-Embedding-0.6B", dtype="auto",
         download=False).result[0]
text = dict(caption="dream pop", lyrics="[verse]\nla la", language="en", bpm=0, keyscale="C major",
            timesignature="4", duration=0.0, track_name="none", track_classes="")
sampler = dict(steps=0, shift=3.0, guidance_scale=7.0, use_adg=False, cfg_interval_start=0.0, cfg_interval_end=1.0,
               infer_method="ode", sampler="euler", audio_cover_strength=1.0, cover_noise_strength=0.0)
empty = run("AceStepEmptyLatent", seconds=10.0, batch_size=1).result[0]
conditioning = run("AceStepTextEncode", text_encoder=te, task="text2music", latent=empty, **text).result[0]

def song(handle):
    return run("AceStepDitSampler", dit=handle, conditioning=conditioning, latent=empty, seed=3,
               **sampler).result[0]["samples"]

lora_song, base_song = song(patched), song(dit)
models = load_models(base / "models" / "acestep")
apply_adapters(models.dit, [(loras / name, scale) for name, scale in stacks["chain"]])
request = GenerationRequest(caption=text["caption"], lyrics=text["lyrics"], language="en", keyscale="C major",
                            timesignature="4", seeds=(3,), batch_size=1, duration=10.0)
engine_song = generate(request, models).latents.transpose(1, 2)
report["song_vs_engine"] = float((engine_song - lora_song).abs().max())
report["song_vs_base"] = float((base_song - lora_song).abs().max())

baked = run("AceStepLoraBake", dit=patched, filename_prefix="tiny_baked", save_to="models/acestep")
path = Path(baked.result[0])
report["baked_path"] = path.relative_to(base).as_posix()
report["baked_files"] = sorted(p.name for p in path.parent.iterdir())
again = run("AceStepLoraBake", dit=patched, filename_prefix="tiny_baked", save_to="output").result[0]
report["second_bake"] = Path(again).relative_to(base).as_posix()
loaded = run("AceStepLoadDit", dit_name=f"acestep/{path.parent.name}", dtype="auto", variant="auto",
             download=False).result[0]
report["baked_variant"] = loaded.variant
report["baked_vs_patched"] = differing(weights(loaded), weights(patched))
report["baked_song_vs_lora"] = float((song(loaded) - lora_song).abs().max())
try:
    run("AceStepLoraBake", dit=dit, filename_prefix="plain", save_to="output")
except AceStepError as exc:
    report["bake_plain_error"] = str(exc)

report["inspect_peft"] = run("AceStepLoraInspect", lora_name=LORA_FOLDER, dit=patched).result[0]
report["inspect_lokr"] = run("AceStepLoraInspect", lora_name=LOKR_FILE).result[0]
report["inspect_wide"] = run("AceStepLoraInspect", lora_name=WIDE_LORA_FILE, dit=dit).result[0]
for node, inputs in (("AceStepLoraLoader", dict(lora_name=WIDE_LORA_FILE, strength=1.0)),
                     ("AceStepLoraStack", dict(lora_1=LORA_FILE, strength_1=1.0, lora_2=WIDE_LORA_FILE,
                                               strength_2=1.0, lora_3="none", strength_3=1.0, lora_4="none",
                                               strength_4=1.0))):
    try:
        run(node, dit=dit, **inputs)
    except AceStepError as exc:
        report[f"misfit_{node}"] = str(exc)
report["base_after_all"] = differing(weights(dit), base_weights)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(comfy_env: comfyui_test_env.TestEnv) -> dict[str, Any]:
    return run_report(comfy_env, BODY)


@pytest.mark.parametrize("stack", ["file", "peft", "lokr", "chain"])
def test_loader_weights_equal_the_engine_merge(report: dict[str, Any], stack: str) -> None:
    assert report[f"{stack}_vs_engine"] == [], report[f"{stack}_vs_engine"][:5]
    assert report[f"{stack}_changed"] >= 8


def test_stack_node_equals_chained_loaders(report: dict[str, Any]) -> None:
    assert report["stack_vs_chain"] == []
    assert report["stack_adapters"] == [[Path(LORA_FILE).stem, 0.8], [LORA_FOLDER, -0.5], [Path(LOKR_FILE).stem, 0.6]]


def test_strength_zero_and_removal_give_the_base_weights(report: dict[str, Any]) -> None:
    assert report["zero_patches"] == 0 and report["zero_vs_base"] == []
    assert report["base_after_lora"] == [] and report["base_after_all"] == []


def test_lora_song_equals_the_engine_song(report: dict[str, Any]) -> None:
    assert report["song_vs_engine"] == 0.0
    assert report["song_vs_base"] > 1e-3


def test_bake_writes_a_folder_load_dit_reads_back(report: dict[str, Any]) -> None:
    assert report["baked_path"] == "models/acestep/tiny_baked_00001_/model.safetensors"
    assert report["baked_files"] == ["config.json", "model.safetensors", "silence_latent.safetensors"]
    assert report["second_bake"] == "output/tiny_baked_00001_/model.safetensors"
    assert report["baked_variant"] == "turbo"
    assert report["baked_vs_patched"] == [] and report["baked_song_vs_lora"] == 0.0
    assert "dit carries no LoRA" in report["bake_plain_error"]


def test_inspect_reports_format_rank_alpha_and_fit(report: dict[str, Any]) -> None:
    peft = report["inspect_peft"]
    for part in ("acestep_tiny_peft: PEFT LoRA folder", "rank: 2; alpha: 4", "q_proj, v_proj",
                 "fits the loaded DiT: yes", "adapters on it: acestep_tiny_lora (0.8), acestep_tiny_peft (-0.5)"):
        assert part in peft, peft
    assert "LoKr file" in report["inspect_lokr"] and "fits the loaded DiT" not in report["inspect_lokr"]
    wide = report["inspect_wide"]
    assert "fits the loaded DiT: NO" in wide and "does not fit this DiT" in wide, wide


def test_misfit_lora_is_an_error_naming_the_field_and_the_fix(report: dict[str, Any]) -> None:
    loader, stack = report["misfit_AceStepLoraLoader"], report["misfit_AceStepLoraStack"]
    assert loader.startswith(f"ACE-Step LoRA Loader: lora_name '{WIDE_LORA_FILE}'"), loader
    assert stack.startswith(f"ACE-Step LoRA Stack: lora_2 '{WIDE_LORA_FILE}'"), stack
    for message in (loader, stack):
        assert "load the DiT it was trained on" in message, message


LORA_NODES = {
    "AceStepLoraLoader": ["dit", "lora_name", "strength"],
    "AceStepLoraStack": ["dit"] + [f"{kind}_{slot}" for slot in range(1, 5) for kind in ("lora", "strength")],
    "AceStepLoraInspect": ["lora_name", "dit"],
    "AceStepLoraBake": ["dit", "filename_prefix", "save_to"],
}


def _with_loras(prompt: dict[str, Any], *loras: tuple[str, float]) -> dict[str, Any]:
    """`prompt` with a chain of LoRA Loaders between Load DiT and the sampler."""
    source = ["dit", 0]
    for index, (name, strength) in enumerate(loras):
        prompt[f"lora{index}"] = {"class_type": "AceStepLoraLoader",
                                  "inputs": {"dit": source, "lora_name": name, "strength": strength}}
        source = [f"lora{index}", 0]
    prompt["sample"]["inputs"]["dit"] = source
    return prompt


@pytest.mark.usefixtures("core_models")
def test_nodes_menu_and_help_pages(comfy: ComfyClient) -> None:
    info = check_node_definitions(comfy, LORA_NODES, "audio/ACE-Step/LoRA")
    menu = info["AceStepLoraLoader"]["input"]["required"]["lora_name"][1]["options"]
    assert {LORA_FILE, LORA_FOLDER, LOKR_FILE, WIDE_LORA_FILE} <= set(menu), menu
    assert not any(name.startswith(f"{LORA_FOLDER}/") for name in menu), menu
    assert info["AceStepLoraStack"]["input"]["required"]["lora_1"][1]["options"][0] == "none"


@pytest.mark.usefixtures("core_models")
def test_removing_the_loader_gives_the_base_song_bit_for_bit(comfy: ComfyClient) -> None:
    """Base, then with two chained LoRAs, then base again: the last run re-samples (steps 8 instead of the
    equal "auto") on the DiT that ComfyUI had patched for the LoRA run."""
    base = saved_latent(comfy, comfy.run(song_prompt(seed=41, save="latent"), timeout_s=240), "save")
    lora_prompt = _with_loras(song_prompt(seed=41, save="latent"), (LORA_FILE, 0.8), (LORA_FOLDER, -0.5))
    lora = saved_latent(comfy, comfy.run(lora_prompt, timeout_s=240), "save")
    again = saved_latent(comfy, comfy.run(song_prompt(seed=41, steps=8, save="latent"), timeout_s=240), "save")
    assert (lora - base).abs().max() > 1e-3
    assert torch.equal(again, base)


@pytest.mark.usefixtures("core_models")
def test_misfit_lora_is_a_node_error(comfy: ComfyClient) -> None:
    entry = comfy.run(_with_loras(song_prompt(seed=42, save="latent"), (WIDE_LORA_FILE, 1.0)), timeout_s=240)
    error = execution_error(entry)
    assert error is not None and error["node_id"] == "lora0", error
    assert error["exception_type"] == "acestep_core.errors.AceStepError", error
    message = error["exception_message"]
    assert f"lora_name '{WIDE_LORA_FILE}'" in message and "load the DiT it was trained on" in message, message
