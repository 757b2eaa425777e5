"""The Python side of `bridge.mjs`: one headless Chromium page that pytest drives with JSON requests.

Page-side code is passed as the source of a JavaScript function of one argument (`evaluate`,
`wait_for`); values come back as JSON. Every request has a deadline, so a stuck browser fails a test
instead of hanging the session.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

BRIDGE = Path(__file__).with_name("bridge.mjs")


class BrowserError(RuntimeError):
    """The page or the bridge reported an error (the message holds the JavaScript stack)."""


class Browser:
    """A running `bridge.mjs` process with one page; `close()` ends it."""

    def __init__(self, node: Path, chromium: Path, node_modules: Path, user_data_dir: Path,
                 width: int = 1600, height: int = 1000):
        env = dict(os.environ, ACESTEP_CHROMIUM=str(chromium), ACESTEP_NODE_MODULES=str(node_modules),
                   ACESTEP_USER_DATA_DIR=str(user_data_dir))
        self._process = subprocess.Popen([str(node), str(BRIDGE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=env)
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._next_id = 0
        self.version = self.call("launch", {"width": width, "height": height}, timeout_s=60)["version"]

    def _read_stdout(self) -> None:
        for line in self._process.stdout:
            self._replies.put(json.loads(line))
        self._replies.put(None)

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            self._stderr.append(line)

    def call(self, op: str, args: dict[str, Any] | None = None, timeout_s: float = 60.0) -> Any:
        """Send one request and return its value; raise BrowserError on a page error or a timeout."""
        self._next_id += 1
        self._process.stdin.write(json.dumps({"id": self._next_id, "op": op, "args": args or {}}) + "\n")
        self._process.stdin.flush()
        try:
            reply = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            self.close()
            raise BrowserError(f"browser did not answer '{op}' within {timeout_s:.0f} s") from None
        if reply is None:
            raise BrowserError(f"the browser bridge exited: {''.join(self._stderr)[-3000:]}")
        if reply["id"] != self._next_id:
            raise BrowserError(f"out-of-order reply {reply!r} to request {self._next_id}")
        if not reply["ok"]:
            raise BrowserError(f"'{op}' failed: {reply['error']}")
        return reply["value"]

    def goto(self, url: str) -> None:
        self.call("goto", {"url": url}, timeout_s=90)

    def evaluate(self, fn: str, arg: Any = None, timeout_s: float = 60.0) -> Any:
        return self.call("evaluate", {"fn": fn, "arg": arg}, timeout_s=timeout_s)

    def wait_for(self, fn: str, arg: Any = None, timeout_s: float = 30.0) -> Any:
        """Poll the page function until it returns something truthy; return that."""
        return self.call("wait_for", {"fn": fn, "arg": arg, "timeout": int(timeout_s * 1000)}, timeout_s=timeout_s + 10)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.call("screenshot", {"path": str(path)})
        return path

    def mouse(self, steps: list[list[Any]]) -> None:
        """Mouse actions in page pixels: ["move", x, y, n_steps], ["down"], ["up"], ["click", x, y]."""
        self.call("mouse", {"steps": steps})

    def click(self, selector: str) -> None:
        self.call("click", {"selector": selector})

    def set_files(self, selector: str, files: list[Path]) -> None:
        """Choose files in an <input type=file>, as the file dialog would."""
        self.call("set_files", {"selector": selector, "files": [str(f) for f in files]})

    def focus(self, selector: str) -> None:
        self.call("focus", {"selector": selector})

    def type(self, text: str) -> None:
        self.call("type", {"text": text})

    def press(self, key: str) -> None:
        self.call("press", {"key": key})

    def console(self, clear: bool = True) -> list[dict[str, Any]]:
        """Console messages, page errors, failed requests and HTTP errors seen since the last call."""
        return self.call("console", {"clear": clear})

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=10)
