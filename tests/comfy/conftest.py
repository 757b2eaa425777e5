"""The pack inside a real ComfyUI 0.3.75 server on CPU, started once per test session.

`scripts/comfyui_test_env.py` installs ComfyUI into a cache folder (first run about 35 s, later runs
reuse it) and starts it on 127.0.0.1 with our repo linked into `custom_nodes/`. Tests skip only when a
download is needed and no package registry answers; any other setup problem fails them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .client import ComfyClient

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import comfyui_test_env  # noqa: E402

_TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def comfy_env() -> comfyui_test_env.TestEnv:
    started = time.monotonic()
    try:
        env = comfyui_test_env.setup()
    except comfyui_test_env.RegistryUnreachable as exc:
        pytest.skip(f"ComfyUI test environment needs a download and no package registry is reachable: {exc}")
    _TIMINGS["setup_s"] = time.monotonic() - started
    return env


@pytest.fixture(scope="session")
def comfy_server(comfy_env: comfyui_test_env.TestEnv,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[comfyui_test_env.ComfyServer]:
    base = comfyui_test_env.prepare_base(tmp_path_factory.mktemp("comfy-base"), REPO_ROOT)
    _training_songs(base / "input" / "acestep_lora_dataset")
    server = comfyui_test_env.start_server(comfy_env, base)
    _TIMINGS["startup_s"] = server.startup_s
    try:
        yield server
    finally:
        server.stop()


def _training_songs(folder: Path) -> None:
    """Two 0.8 s songs in the folder `workflows/lora_train.json` scans (users put theirs there)."""
    import numpy as np
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(38400) / 48000
    for name, freq in (("first.wav", 220.0), ("second.flac", 330.0)):
        tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        soundfile.write(folder / name, np.stack([tone, tone], axis=1), 48000)


@pytest.fixture(scope="session")
def comfy(comfy_server: comfyui_test_env.ComfyServer) -> ComfyClient:
    return ComfyClient(comfy_server.url)


@pytest.fixture(scope="session")
def object_info(comfy: ComfyClient) -> dict[str, Any]:
    """The server's node definitions, for `workflow_api.workflow_to_prompt`."""
    return comfy.object_info()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TIMINGS:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _TIMINGS.items())
        terminalreporter.write_line(f"ComfyUI harness: {parts}")
