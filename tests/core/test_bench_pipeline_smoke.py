"""Keeps `benchmarks/bench_pipeline.py` working: one quick run through every engine stage, checked for the
structure of its JSON and for the labelling of what it extrapolates. Timings are never asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_pipeline as bench
from tests.core import qwen_vocab

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pipeline.py"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> dict:
    """30 s at tiny dims: two VAE windows, of which the budget lets only the first run; 1 of 2 DiT layers."""
    qwen_vocab.rank_file()  # skips the module when the vocabulary cannot be fetched
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--threads", "1", "--durations", "30", "--steps",
                           "2", "--layers", "1", "--decode-budget-s", "1e-6", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EXTRAPOLATED whole song" in proc.stdout
    return json.loads(out.read_text())


def test_report_structure(quick_report):
    assert quick_report["machine"]["cpu_count"] >= 1 and quick_report["machine"]["torch"] == torch.__version__
    assert quick_report["settings"]["profile"] == "quick" and quick_report["settings"]["dit_layers"] == 1
    (run,) = quick_report["runs"]
    assert "error" not in run and run["duration_s"] == 30 and run["frames"] == 750 and run["steps"] == 2
    assert list(run["stages"]) == list(bench.STAGES)
    for stage in run["stages"].values():
        assert stage["seconds"] >= 0 and stage["peak_mb"] is not None and stage["peak_mb"] >= 0
    text = run["stages"]["text_encode"]
    assert text["caption_tokens"] > 50 and text["lyric_tokens"] > 50  # the real vocabulary tokenized the prompts
    dit = run["stages"]["dit"]
    assert len(dit["steps_s"]) == 2 and dit["layers"] == 1 and dit["latents_finite"]
    assert 0 < dit["layer_s"] < dit["seconds"] and dit["condition_rows"] > text["lyric_tokens"]
    assert run["models"]["dit"]["layers_full_depth"] == 2
    assert run["models"]["dit"]["params"] < run["models"]["dit"]["params_full_depth"]
    assert run["audio_shape"] == [1, 2, 750 * 1920] and run["audio_finite"]


def test_stopped_decode_and_shallow_dit_are_labelled(quick_report):
    (run,) = quick_report["runs"]
    decode, dit, summary = run["stages"]["vae_decode"], run["stages"]["dit"], run["summary"]
    assert not decode["complete"] and len(decode["windows_s"]) == 1 and len(decode["window_frames"]) == 2
    assert run["stages"]["postprocess"]["input"].startswith("stand-in")
    for extra in (decode["extrapolation"], dit["extrapolation"], summary["extrapolation"]):
        assert extra["label"].startswith("EXTRAPOLATION, not a measurement")
    assert not summary["nothing_extrapolated"]
    assert summary["measured_seconds"] == pytest.approx(sum(run["stages"][s]["seconds"] for s in bench.STAGES))
    assert summary["extrapolation"]["seconds_full"] > summary["measured_seconds"]


def test_dit_extrapolation_scales_only_the_layer_time():
    extra = bench.dit_extrapolation([3.0, 2.0], layer_s=4.0, layers=2, full=24, condition_s=1.0)
    assert extra["sampling_seconds_full_depth"] == pytest.approx(1.0 + 4.0 * 12)
    assert extra["stage_seconds_full_depth"] == pytest.approx(2.0 + 4.0 * 12)
    assert extra["seconds_per_layer_per_step"] == pytest.approx(1.0)
    assert bench.dit_extrapolation([3.0], layer_s=2.0, layers=24, full=24, condition_s=1.0) is None


def test_decode_extrapolation_uses_the_measured_rate_per_frame():
    extra = bench.decode_extrapolation([2.0, 4.0], [100, 200, 300, 50])
    assert extra["seconds_full"] == pytest.approx(6.0 + 350 * 0.02)
    assert bench.decode_extrapolation([2.0], [100]) is None
