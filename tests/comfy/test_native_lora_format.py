"""The single-file LoRA our trainer exports is read by ComfyUI's own LoRA code, with the deltas we mean.

ComfyUI 0.3.75 has no native ACE-Step 1.5 model, so its LoraLoaderModelOnly cannot run on one here. What
decides whether that loader takes a file is ComfyUI's key mapping (`comfy.lora.model_lora_keys_unet` over
the model's `diffusion_model.*` state-dict names, which for the native ACE-Step 1.5 model are the official
names: its DiT lives under `decoder.`) and its patch math (`load_lora`, `calculate_weight`). Both run here,
in the test ComfyUI's Python, on a stand-in model with the tiny DiT's weights under those names: every
tensor of the file must be taken, and every patched weight must equal our own merge.
"""

from __future__ import annotations

from typing import Any

import comfyui_test_env
import pytest

from .in_process import run_report

BODY = r"""
import comfy.lora
from acestep_core.lora import lora_adapter, weight_deltas
from acestep_core.training.export import save_comfy_lora
from tests.core.tiny_adapters import attention_modules, golden_shapes, random_lora, tiny_dit

dit = tiny_dit()
shapes = golden_shapes()
adapter = lora_adapter(random_lora(shapes, attention_modules(shapes), rank=4, seed=5), alpha=8.0)
path = save_comfy_lora(adapter, base / "exported.safetensors")
from safetensors.torch import load_file
lora = load_file(path)

class StandIn:
    class model_config:
        unet_config = {}
    def state_dict(self):
        return {"diffusion_model." + key: value for key, value in dit.state_dict().items()}

key_map = comfy.lora.model_lora_keys_unet(StandIn(), {})
patches = comfy.lora.load_lora(lora, key_map)
expected = weight_deltas(adapter, dit, key_prefix="diffusion_model.")
weights = StandIn().state_dict()
worst = 0.0
for key, delta in expected.items():
    patched = comfy.lora.calculate_weight([(1.0, patches[key], 1.0, None, None)], weights[key].clone(), key)
    worst = max(worst, float((patched - weights[key] - delta).abs().max()))
print(json.dumps({"file_keys": len(lora), "patched": sorted(patches), "expected": sorted(expected), "worst": worst}))
"""


@pytest.fixture(scope="module")
def report(comfy_env: comfyui_test_env.TestEnv) -> dict[str, Any]:
    return run_report(comfy_env, BODY)


def test_comfyui_maps_every_module_of_the_exported_file(report: dict[str, Any]) -> None:
    assert report["patched"] == report["expected"] and report["patched"]
    assert report["file_keys"] == 3 * len(report["expected"])  # lora_A, lora_B, alpha per module


def test_comfyui_patch_math_gives_our_deltas(report: dict[str, Any]) -> None:
    assert report["worst"] < 1e-6, report["worst"]
