"""Keeps `benchmarks/bench_planner.py` working: its JSON structure, and that ours and the no-cache baseline
draw the same tokens. Timings are never asserted (they belong to the machine, not to the code)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_planner as bench
from tests.core.tiny_lm import single_thread  # noqa: F401 (fixture)


def test_quick_run_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    status = bench.main(["--quick", "--threads", "1", "--codes", "8", "--cot-tokens", "12",
                         "--batches", "2", "--out", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["settings"]["profile"] == "quick" and report["machine"]["torch_threads"] == 1
    assert [(case["phase"], case["batch"]) for case in report["cases"]] == [("cot", 1), ("codes", 2)]
    for case in report["cases"]:
        assert case["same_tokens_as_baseline"] is True
        assert case["ours"]["tokens"] > 0 and case["baseline_first_tokens"]["tokens"] > 0
        assert case["ratio_tokens_per_s"]["ours_vs_baseline_same_tokens"] > 0
    codes = report["cases"][1]
    assert codes["rows_per_step"] == 4 and codes["ours"]["tokens"] == 2 * (8 + 1)
    assert "same tokens" in capsys.readouterr().out
