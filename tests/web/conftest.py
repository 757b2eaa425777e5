"""The web extension in the real ComfyUI 0.3.75 frontend, in headless Chromium.

The server comes from the tests/comfy harness (its fixtures are reused here; this folder gets its own
server instance), with the tiny checkpoints of tests/comfy in its model folders and a short recording in
its input folder. The browser is Debian's Chromium driven by playwright-core from npm, both installed by
`scripts/browser_test_tools.py`; tests skip only when that install needs a registry and none answers.
Screenshots of each step land in tests/web/artifacts/ (git-ignored), emptied at the start of a session.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.comfy.conftest import comfy, comfy_env, comfy_server  # noqa: F401  (session fixtures reused)
from tests.comfy.tiny_model_folders import install_model_folders

from .browser import Browser
from .comfy_page import ComfyPage

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import browser_test_tools  # noqa: E402
import comfyui_test_env  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"
SOURCE_FILE = "acestep_web_source.wav"
SOURCE_SECONDS = 6.0
SOURCE_RATE = 48000


def source_waveform() -> np.ndarray:
    """6 s of stereo 48 kHz: a chord with a beat that swells, so the waveform has a visible shape."""
    t = np.arange(int(SOURCE_SECONDS * SOURCE_RATE)) / SOURCE_RATE
    beat = 0.4 + 0.6 * (np.sin(2 * np.pi * 2 * t) > 0)
    swell = 0.2 + 0.8 * t / SOURCE_SECONDS
    left = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) * beat * swell
    right = sum(np.sin(2 * np.pi * f * t) for f in (196.0, 246.9, 293.7)) * beat * swell
    return (0.25 * np.stack([left, right], axis=1)).astype(np.float32)


@pytest.fixture(scope="session")
def browser_tools() -> browser_test_tools.BrowserTools:
    try:
        return browser_test_tools.setup()
    except comfyui_test_env.RegistryUnreachable as exc:
        pytest.skip(f"Chromium/playwright-core must be installed and no package registry answers: {exc}")


@pytest.fixture(scope="session")
def web_server(comfy_server: comfyui_test_env.ComfyServer,  # noqa: F811
               comfy_env: comfyui_test_env.TestEnv) -> comfyui_test_env.ComfyServer:  # noqa: F811
    """The test server with tiny models and the source recording in place (before the page lists them)."""
    install_model_folders(comfy_server.base / "models", comfy_env.home / "tiny-models")
    soundfile.write(comfy_server.base / "input" / SOURCE_FILE, source_waveform(), SOURCE_RATE, subtype="PCM_16")
    return comfy_server


@pytest.fixture(scope="session")
def page(browser_tools: browser_test_tools.BrowserTools, web_server: comfyui_test_env.ComfyServer,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyPage]:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    browser = Browser(browser_tools.node, browser_tools.chromium, browser_tools.node_modules,
                      user_data_dir=tmp_path_factory.mktemp("chromium-profile"))
    try:
        comfy_page = ComfyPage(browser, web_server.url, ARTIFACTS)
        comfy_page.open()
        yield comfy_page
    finally:
        browser.close()


@pytest.fixture
def ui(page: ComfyPage) -> Iterator[ComfyPage]:
    """The page for one test; afterwards the console must hold no error caused during the test."""
    page.close_dialogs()
    yield page
    problems = page.console_problems()
    assert not problems, "browser console:\n" + "\n".join(problems)
