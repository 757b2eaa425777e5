"""Keeps `benchmarks/bench_networks.py` working: structure of its JSON and agreement of ours with the
eager baseline. Timings are never asserted (they belong to the machine, not to the code)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_networks as bench

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_networks.py"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--cases", "dit-30s-b1", "--repeats", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agreement on the small config" in proc.stdout
    return json.loads(out.read_text())


def test_report_structure(quick_report):
    assert quick_report["machine"]["cpu_count"] >= 1
    assert quick_report["machine"]["torch"] == torch.__version__
    assert quick_report["settings"]["profile"] == "quick"
    rows = quick_report["measurements"]
    assert [(row["name"], row["variant"]) for row in rows] == [("dit-30s-b1", "ours"), ("dit-30s-b1", "ours-cached")]
    for row in rows:
        assert "error" not in row and "error" not in row["baseline"]
        assert row["dtype"] == "float32"
        assert row["shapes"]["hidden_states"][0] == 1
        for key in ("median_s", "min_s"):
            assert row[key] > 0 and row["baseline"][key] > 0
        assert row["ratio_seconds"] == pytest.approx(row["median_s"] / row["baseline"]["median_s"])
        assert row["peak_mb"] is not None and row["peak_mb"] >= 0
        assert "extrapolation" not in row  # the quick profile builds the whole (tiny) depth
    assert sorted(run["variant"] for run in quick_report["runs"]) == ["baseline", "ours", "ours-cached"]


def test_report_agreement(quick_report):
    check = quick_report["agreement"]
    assert check["ok"]
    assert set(check["max_relative_difference"]) == {"dit_first_step", "dit_second_step_with_cache",
                                                     "condition_encoder", "vae_decode"}
    for row in quick_report["measurements"]:
        assert row["max_relative_difference_vs_baseline"] <= bench.AGREEMENT_TOLERANCE


@pytest.mark.parametrize("case_name", list(bench.CASES))
def test_every_case_agrees_with_baseline(case_name):
    case = bench.CASES[case_name]
    outputs = {}
    with torch.inference_mode():
        for variant in case.variants:
            call, shapes, facts = bench.build_workload(case, variant, "quick", None, "float32", seed=3)
            outputs[variant] = call()
            assert facts["params"] > 0 and shapes
    reference = outputs.pop("baseline")
    assert reference.abs().max() > 0
    for output in outputs.values():
        assert bench.relative_difference(output, reference) <= bench.AGREEMENT_TOLERANCE


def test_extrapolation_is_labelled():
    case = bench.CASES["dit-30s-b1"]
    run = {"median_s": 2.0, "min_s": 1.9, "peak_mb": 10.0, "layers": 2, "layers_full_depth": 24, "params": 10,
           "params_full_depth": 100, "weights_mb": 1.0}
    row = bench._measurement(case, "ours", run, {"median_s": 4.0, "min_s": 4.0, "peak_mb": 20.0}, 0.0, "float32")
    extra = row["extrapolation"]
    assert extra["label"].startswith("EXTRAPOLATION, not a measurement")
    assert extra["seconds_full_depth"] == pytest.approx(24.0)
    assert extra["baseline_seconds_full_depth"] == pytest.approx(48.0)
    assert row["median_s"] == 2.0 and row["ratio_seconds"] == pytest.approx(0.5)
