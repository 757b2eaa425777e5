"""The extension's pure modules (lyrics linter, waveform arithmetic) under Node's own test runner."""

from __future__ import annotations

import subprocess
from pathlib import Path

import browser_test_tools

UNIT_TESTS = sorted(Path(__file__).parent.glob("*.test.mjs"))


def test_js_unit_tests_pass(browser_tools: browser_test_tools.BrowserTools) -> None:
    assert UNIT_TESTS, "no *.test.mjs files found"
    result = subprocess.run([str(browser_tools.node), "--test", *map(str, UNIT_TESTS)],
                            capture_output=True, text=True, timeout=120)
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok"))]
    assert result.returncode == 0, "\n".join(summary) + "\n" + result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout, result.stdout[-2000:]
