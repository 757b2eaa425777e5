"""The pack registers with ComfyUI cleanly, and the harness keeps the server on loopback."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import comfyui_test_env
import pytest

from .client import ComfyClient

FAILURE_PATTERNS = (
    r"Cannot import {pack}",
    r"IMPORT FAILED\): {pack}",
    r"Error while calling comfy_entrypoint in {pack}",
    r"Skip {pack} module for custom nodes",
    r"comfy_entrypoint in {pack} (is not callable|did not return)",
)


def test_pack_imports_without_errors(comfy_server: comfyui_test_env.ComfyServer) -> None:
    log = comfy_server.log_text()
    pack_path = comfy_server.base / "custom_nodes" / comfyui_test_env.PACK_FOLDER_NAME
    pack = re.escape(str(pack_path)) + r"(?![\w.-])"
    failures = [line for line in log.splitlines()
                if any(re.search(pattern.format(pack=pack), line) for pattern in FAILURE_PATTERNS)]
    assert not failures, "the pack failed to load:\n" + "\n".join(failures) + "\n\n" + log[-3000:]
    timing_lines = [line for line in log.splitlines() if "seconds" in line and line.rstrip().endswith(str(pack_path))]
    assert timing_lines, f"ComfyUI's import summary does not mention the pack:\n{log[-3000:]}"


def test_help_page_is_served(comfy: ComfyClient) -> None:
    """WEB_DIRECTORY works: ComfyUI serves web/docs/<node id>.md for the node's help panel."""
    page = comfy.get(f"/extensions/{comfyui_test_env.PACK_FOLDER_NAME}/docs/AceStepEmptyLatent.md").decode()
    assert page.startswith("# ACE-Step Empty Latent")


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.is_file():
            continue
        for row in path.read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, words), int(port_hex, 16)))
    return found


@pytest.mark.skipif(not Path("/proc/self/net/tcp").is_file(), reason="needs Linux /proc to list sockets")
def test_server_listens_on_loopback_only(comfy_server: comfyui_test_env.ComfyServer) -> None:
    addresses = _listening_addresses(comfy_server.process.pid)
    assert ("127.0.0.1", comfy_server.port) in addresses
    assert all(address in ("127.0.0.1", "::1") for address, _ in addresses), addresses
