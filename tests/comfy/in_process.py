"""Run the pack's nodes in a ComfyUI process without a server, beside the core engine, and compare them.

Parity tests need the nodes' tensors, which a server only hands out as files; so a script runs in the test
ComfyUI's Python with the pack loaded as ComfyUI loads it (`comfy_entrypoint`), the tiny model folders
installed in a scratch base folder, and `nodes[<node id>]` ready to `execute`. The script prints a JSON
report as its last line.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import comfyui_test_env

PRELUDE = r"""
import asyncio, dataclasses, importlib.util, json, sys, tempfile
from pathlib import Path
from comfy.cli_args import args
args.cpu = True
base = Path(tempfile.mkdtemp())
args.base_directory = str(base)
repo, cache = sys.argv[1], Path(sys.argv[2])
sys.path.insert(0, repo)
sys.path.insert(0, repo + "/scripts")
import torch
from tests.comfy.tiny_model_folders import install_model_folders
install_model_folders(base / "models", cache)
spec = importlib.util.spec_from_file_location("acestep_pack_under_test", repo + "/__init__.py",
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
nodes = {cls.GET_SCHEMA().node_id: cls.PREPARE_CLASS_CLONE({})
         for cls in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
"""


def run_report(comfy_env: comfyui_test_env.TestEnv, body: str, timeout_s: int = 600) -> dict[str, Any]:
    """Run `PRELUDE + body` in the test ComfyUI's Python (offline) and return the JSON it printed last."""
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(comfy_env.stubs_dir), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [str(comfy_env.python), "-c", PRELUDE + body, str(comfyui_test_env.REPO_ROOT),
         str(comfy_env.home / "tiny-models")],
        cwd=comfy_env.comfyui_dir, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
