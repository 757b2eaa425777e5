"""A small HTTP client for a running ComfyUI (standard library only, so any test Python can use it).

It polls `/history` instead of listening on the websocket: simpler, and enough for tests that only
need the end state of a prompt.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any


class PromptRejected(Exception):
    """ComfyUI refused a prompt before running it (HTTP 400); `body` holds `error` and `node_errors`."""

    def __init__(self, body: dict[str, Any]):
        super().__init__(json.dumps(body, indent=1)[:4000])
        self.body = body

    @property
    def node_errors(self) -> dict[str, Any]:
        return self.body.get("node_errors", {})


class ComfyClient:
    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return response.read()

    def get(self, path: str) -> bytes:
        return self._request(path)

    def get_json(self, path: str) -> Any:
        return json.loads(self._request(path))

    def system_stats(self) -> dict[str, Any]:
        return self.get_json("/system_stats")

    def object_info(self, node: str | None = None) -> dict[str, Any]:
        """All node definitions, or the one of `node` (`{}` when ComfyUI does not know it)."""
        return self.get_json(f"/object_info/{urllib.parse.quote(node)}" if node else "/object_info")

    def queue(self, prompt: dict[str, Any], workflow: dict[str, Any] | None = None) -> str:
        """Queue an API-format prompt (with the UI workflow as metadata, like the frontend); return its id."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        try:
            return json.loads(self._request("/prompt", body))["prompt_id"]
        except urllib.error.HTTPError as exc:
            if exc.code == 400:
                raise PromptRejected(json.loads(exc.read())) from None
            raise

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The history entry once the prompt finished (successfully or not)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("completed") or status.get("status_str") == "error":
                return entry
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout_s:.0f} s")

    def run(self, prompt: dict[str, Any], workflow: dict[str, Any] | None = None,
            timeout_s: float = 60.0) -> dict[str, Any]:
        return self.wait(self.queue(prompt, workflow), timeout_s)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only `prompt_id`, when given and running)."""
        self._request("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def is_running(self, prompt_id: str) -> bool:
        return any(item[1] == prompt_id for item in self.get_json("/queue")["queue_running"])

    def interrupt_when_running(self, prompt_id: str, settle_s: float, start_timeout_s: float = 60.0,
                               stop_timeout_s: float = 60.0) -> tuple[dict[str, Any], float]:
        """Wait until `prompt_id` runs, let it work `settle_s`, interrupt it; its history entry and the seconds
        from the interrupt to its end. Fails if it never starts or ends before it could be interrupted."""
        deadline = time.monotonic() + start_timeout_s
        while not self.is_running(prompt_id):
            assert time.monotonic() < deadline, "the prompt never started"
            assert self.history(prompt_id) is None, "the prompt finished before it could be interrupted"
            time.sleep(0.05)
        time.sleep(settle_s)
        asked = time.monotonic()
        self.interrupt(prompt_id)
        entry = self.wait(prompt_id, timeout_s=stop_timeout_s)
        return entry, time.monotonic() - asked

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self._request(f"/view?{query}")


def messages(entry: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The data of every status message of one kind (`execution_error`, `execution_success`, ...)."""
    return [data for name, data in entry.get("status", {}).get("messages", []) if name == kind]


def execution_error(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The `execution_error` message of a finished prompt (node_id, exception_type, exception_message)."""
    errors = messages(entry, "execution_error")
    return errors[0] if errors else None
