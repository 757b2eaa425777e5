"""Browser tools for the web extension's tests (tests/web): Debian's Chromium and playwright-core from npm.

Why this exists: the web extension must be checked in a real browser against the real ComfyUI frontend,
and nothing may download a browser build of its own. So Chromium comes from Debian (`apt-get install
chromium`) and the browser driver is `playwright-core` (the npm package without the browser download),
installed into a cache folder next to the test ComfyUI (`$COMFYUI_ACESTEP_TEST_HOME/browser-tools`,
default `~/.cache/comfyui-acestep-tests/browser-tools`). Node.js itself comes from Debian when missing.

Command line: `python scripts/browser_test_tools.py` installs (or finds) the tools and prints their paths.
Tests call `setup()`; it raises `RegistryUnreachable` (the only reason tests may skip) when something must
be installed and no package registry answers, and `SetupError` for any other failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from comfyui_test_env import RegistryUnreachable, SetupError, _locked, default_home

PLAYWRIGHT_CORE = "playwright-core@1"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"


@dataclass(frozen=True)
class BrowserTools:
    """What a browser test needs: the Chromium binary, `node`, and the folder holding `playwright-core`."""

    chromium: Path
    node: Path
    node_modules: Path


def _log(message: str) -> None:
    print(f"[browser-test-tools] {message}", file=sys.stderr, flush=True)


def _answers(url: str, timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _apt_urls() -> list[str]:
    """The http(s) mirrors named in the apt sources (one-line and deb822 formats)."""
    files: list[Path] = []
    for source in APT_SOURCES:
        files += sorted(source.glob("*")) if source.is_dir() else [source] if source.is_file() else []
    urls = []
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            urls += [word for word in words if word.startswith(("http://", "https://"))]
    return urls


def _npm_registry(npm: str) -> str:
    result = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True)
    registry = result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else ""
    return registry if registry.startswith(("http://", "https://")) else DEFAULT_NPM_REGISTRY


def _run(cmd: list[str], what: str, registries: list[str], env: dict[str, str] | None = None) -> None:
    """Run one install step; on failure tell an unreachable registry apart from a real error."""
    _log(f"{what}: {' '.join(cmd)}")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if result.returncode == 0:
        return
    tail = (result.stdout + result.stderr)[-3000:]
    if not any(_answers(url) for url in registries):
        raise RegistryUnreachable(f"{what} failed and no package registry answers ({', '.join(registries)}):\n{tail}")
    raise SetupError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _find_chromium() -> Path | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _apt_install(packages: list[str]) -> None:
    if shutil.which("apt-get") is None:
        raise SetupError(f"{', '.join(packages)} missing and there is no apt-get to install them; install them by hand")
    if os.geteuid() != 0:
        raise SetupError(f"{', '.join(packages)} missing; install them as root: apt-get install -y {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    registries = _apt_urls()
    _run(["apt-get", "update", "-q"], "apt-get update", registries, env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
         f"apt-get install {' '.join(packages)}", registries, env)


def _playwright_ready(folder: Path) -> bool:
    package = folder / "node_modules" / "playwright-core" / "package.json"
    return package.is_file() and json.loads(package.read_text()).get("version", "").startswith("1.")


def setup(home: Path | None = None) -> BrowserTools:
    """Find or install Chromium, Node.js and playwright-core; safe to call from parallel sessions."""
    home = (home or default_home()).resolve()
    with _locked(home):
        missing = [] if _find_chromium() else ["chromium"]
        if shutil.which("node") is None or shutil.which("npm") is None:
            missing += ["nodejs", "npm"]
        if missing:
            _apt_install(missing)
        chromium = _find_chromium()
        node, npm = shutil.which("node"), shutil.which("npm")
        if chromium is None or node is None or npm is None:
            raise SetupError("chromium or node is still missing after apt-get install")
        folder = home / "browser-tools"
        if not _playwright_ready(folder):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "package.json").write_text('{"name": "acestep-browser-tools", "private": true}\n')
            env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
            _run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--loglevel=error",
                  PLAYWRIGHT_CORE], "npm install playwright-core", [_npm_registry(npm)], env)
            if not _playwright_ready(folder):
                raise SetupError(f"npm install left no playwright-core 1.x in {folder / 'node_modules'}")
    return BrowserTools(chromium=chromium, node=Path(node), node_modules=folder / "node_modules")


def main() -> int:
    try:
        tools = setup()
    except SetupError as exc:
        _log(str(exc))
        return 2
    _log(f"chromium {tools.chromium}, node {tools.node}, playwright-core in {tools.node_modules}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
