"""ACE-Step Empty Latent inside the real server: definition, execution, and how bad inputs come back."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import comfyui_test_env
import pytest
import torch
from safetensors.torch import load

from .client import ComfyClient, PromptRejected, execution_error

NODE = "AceStepEmptyLatent"


def frames_for(tenths_of_second: int) -> int:
    """The official ACE-Step length rule in exact integer arithmetic: whole 1920-sample hops at 48 kHz."""
    return tenths_of_second * 48000 // 10 // 1920


def _prompt(seconds: Any, batch_size: int, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": NODE, "inputs": {"seconds": seconds, "batch_size": batch_size}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": prefix}},
    }


def saved_latent(comfy: ComfyClient, entry: dict[str, Any], node_id: str) -> torch.Tensor:
    """The tensor a core SaveLatent node wrote, fetched the way the frontend fetches outputs."""
    files = entry["outputs"][node_id]["latents"]
    assert len(files) == 1 and files[0]["type"] == "output"
    return load(comfy.view(files[0]["filename"], files[0]["subfolder"]))["latent_tensor"]


def test_object_info_documents_the_node(comfy: ComfyClient) -> None:
    info = comfy.object_info(NODE)[NODE]
    assert info["display_name"] == "ACE-Step Empty Latent"
    assert info["category"] == "audio/ACE-Step"
    assert info["output"] == ["LATENT"] and info["output_node"] is False
    assert info["description"]
    required = info["input"]["required"]
    assert list(required) == ["seconds", "batch_size"]
    seconds_type, seconds = required["seconds"]
    assert seconds_type == "FLOAT"
    assert (seconds["min"], seconds["max"], seconds["default"]) == (10.0, 600.0, 60.0)
    assert "10" in seconds["tooltip"] and "600" in seconds["tooltip"]
    batch_type, batch = required["batch_size"]
    assert batch_type == "INT"
    assert (batch["min"], batch["max"], batch["default"]) == (1, 8, 1)
    assert batch["tooltip"]
    assert info["output_tooltips"][0]


@pytest.mark.parametrize("tenths, batch_size", [(101, 2), (600, 1)])
def test_runs_into_a_core_latent_node(comfy: ComfyClient, tenths: int, batch_size: int) -> None:
    entry = comfy.run(_prompt(tenths / 10, batch_size, f"latents/empty_{uuid.uuid4().hex[:8]}"))
    assert execution_error(entry) is None, execution_error(entry)
    latent = saved_latent(comfy, entry, "2")
    assert tuple(latent.shape) == (batch_size, 64, frames_for(tenths))
    assert latent.dtype.is_floating_point and not latent.any()


def test_out_of_range_widget_is_a_validation_error(comfy: ComfyClient) -> None:
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(_prompt(700.0, 1, "latents/too_long"))
    errors = rejected.value.node_errors["1"]["errors"]
    assert [(error["type"], error["details"]) for error in errors] == [("value_bigger_than_max", "seconds")]
    assert comfy.system_stats()["system"]["comfyui_version"]
    entry = comfy.run(_prompt(20.0, 1, f"latents/after_error_{uuid.uuid4().hex[:8]}"))
    assert execution_error(entry) is None


def test_wired_out_of_range_value_fails_with_our_message(comfy: ComfyClient) -> None:
    """A linked value skips ComfyUI's min/max check; the node itself must refuse it, readably."""
    prompt = _prompt(["3", 0], 1, "latents/wired")
    prompt["3"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 700.0}}
    entry = comfy.run(prompt)
    error = execution_error(entry)
    assert error is not None and error["node_id"] == "1"
    assert error["exception_type"] == "acestep_core.errors.AceStepError"
    assert error["exception_message"].startswith("ACE-Step Empty Latent: seconds is 700.0")
    entry = comfy.run(_prompt(30.0, 1, f"latents/after_failure_{uuid.uuid4().hex[:8]}"))
    assert execution_error(entry) is None


IN_PROCESS_CHECK = """
import asyncio, importlib.util, json, sys
from comfy.cli_args import args
args.cpu = True
spec = importlib.util.spec_from_file_location("acestep_pack_under_test", sys.argv[1] + "/__init__.py")
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
node = {cls.GET_SCHEMA().node_id: cls for cls in nodes}["AceStepEmptyLatent"].PREPARE_CLASS_CLONE({})
latent = node.execute(seconds=10.1, batch_size=3).result[0]
report = {"keys": sorted(latent), "type": latent["type"], "shape": list(latent["samples"].shape),
          "dtype": str(latent["samples"].dtype), "device": str(latent["samples"].device),
          "web": pack.WEB_DIRECTORY}
try:
    node.execute(seconds=5.0, batch_size=1)
except Exception as exc:
    report["error"] = [type(exc).__module__ + "." + type(exc).__name__, str(exc), exc.__suppress_context__]
print(json.dumps(report))
"""


def test_latent_dict_matches_the_native_layout(comfy_env: comfyui_test_env.TestEnv) -> None:
    """Called like ComfyUI calls it (entrypoint, schema, class clone), in the server's own Python."""
    result = subprocess.run([str(comfy_env.python), "-c", IN_PROCESS_CHECK, str(comfyui_test_env.REPO_ROOT)],
                            cwd=comfy_env.comfyui_dir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["keys"] == ["samples", "type"] and report["type"] == "audio"
    assert report["shape"] == [3, 64, frames_for(101)]
    assert report["dtype"] == "torch.float32" and report["device"] == "cpu"
    assert report["web"] == "./web"
    error_type, message, chain_dropped = report["error"]
    assert error_type == "acestep_core.errors.AceStepError" and chain_dropped
    assert message.startswith("ACE-Step Empty Latent: seconds is 5.0") and "10" in message and "600" in message
