"""The `acestep` command line: every task end to end on the tiny models, errors as one line and no file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_core import cli
from tests.core.tiny_models import write_tiny_models

ROOT = Path(__file__).parents[2]
SR = 48000


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of a stereo chord at 44.1 kHz (the CLI resamples it)."""
    t = np.arange(3 * 44100) / 44100
    tone = sum(np.sin(2 * np.pi * f * t) for f in (196.0, 246.9, 293.7)) / 5
    path = tmp_path_factory.mktemp("audio") / "song.flac"
    sf.write(path, np.stack([tone, 0.7 * tone], axis=1), 44100)
    return path


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main(["generate", "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def takes(out: str) -> list[tuple[int, Path]]:
    """(seed, path) of each "take N: seed S -> PATH" line."""
    found = []
    for number, line in enumerate(out.strip().splitlines(), start=1):
        head, path = line.split(" -> ")
        assert head.startswith(f"take {number}: seed ")
        found.append((int(head.rsplit(" ", 1)[1]), Path(path)))
    return found


def test_text2music_with_lyrics_file_batch_and_seeds(models_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("[verse]\nneon rain on the window\n", encoding="utf-8")
    out = tmp_path / "out"
    common = ["--caption", "synthwave", "--lyrics", str(lyrics), "--duration", "10", "--steps", "2",
              "--models-dir", str(models_dir), "--out", str(out)]
    code, stdout, stderr = run_cli(capsys, *common, "--seed", "7,8", "--batch", "2")
    assert code == 0, stderr
    first = takes(stdout)
    assert [seed for seed, _ in first] == [7, 8]
    for number, (seed, path) in enumerate(first, start=1):
        assert path.parent == out and path.name == f"acestep_{number}_seed{seed}.flac"
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (SR, 2, 250 * 1920)
    code, stdout, _ = run_cli(capsys, *common, "--seed", "7,8", "--batch", "2")
    second = takes(stdout)
    assert code == 0 and second[0][1].name == "acestep_1_seed7_2.flac"  # never overwritten
    assert np.array_equal(sf.read(first[0][1])[0], sf.read(second[0][1])[0])  # same seed, same song
    assert not np.array_equal(sf.read(first[0][1])[0], sf.read(first[1][1])[0])


TASKS = [
    ("cover", "acestep-v15-turbo", ["--duration", "60"]),
    ("cover-nofsq", "acestep-v15-turbo", ["--cover-strength", "0.5", "--cover-noise", "0.2", "--format", "mp3"]),
    ("repaint", "acestep-v15-turbo", ["--repaint-start", "1", "--repaint-end", "2", "--repaint-mode", "conservative"]),
    ("extend", "acestep-v15-turbo", ["--repaint-start", "3", "--repaint-end", "6"]),
    ("lego", "acestep-v15-base", ["--track", "guitar", "--guidance", "4"]),
    ("extract", "acestep-v15-base", ["--track", "vocals"]),
    ("complete", "acestep-v15-base", ["--tracks", "drums,bass"]),
]


@pytest.mark.parametrize("task, dit, extra", TASKS, ids=[t[0] for t in TASKS])
def test_every_source_task(models_dir: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                           task: str, dit: str, extra: list[str]) -> None:
    code, stdout, stderr = run_cli(capsys, "--task", task, "--src", str(source), "--caption", "acoustic",
                                   "--seed", "3", "--steps", "2", "--dit", dit, "--models-dir", str(models_dir),
                                   "--out", str(tmp_path), *extra)
    assert code == 0, stderr
    ((seed, path),) = takes(stdout)
    samples = (150 if task == "extend" else 128) * 1920
    info = sf.info(path)
    assert seed == 3 and (info.samplerate, info.channels) == (SR, 2) and path.suffix == f".{info.format.lower()}"
    assert info.frames == samples if info.format == "FLAC" else abs(info.frames - samples) < 3000  # MP3 padding


def test_audio_codes_file_and_wav(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("".join(f"<|audio_code_{i * 1231}|>" for i in range(26)) + "\n", encoding="utf-8")
    code, stdout, stderr = run_cli(capsys, "--codes", str(codes), "--instrumental", "--steps", "1", "--format", "wav",
                                   "--models-dir", str(models_dir), "--out", str(tmp_path / "out"))
    assert code == 0, stderr
    ((_, path),) = takes(stdout)
    info = sf.info(path)
    assert path.suffix == ".wav" and (info.samplerate, info.channels, info.frames) == (SR, 2, 130 * 1920)


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "empty.wav", np.zeros((0, 2)), SR)
    sf.write(folder / "nan.wav", np.full((SR, 2), np.nan, dtype=np.float32), SR, subtype="FLOAT")
    (folder / "garbage.flac").write_bytes(b"this is no audio" * 20)
    return {path.stem: path for path in (folder / "empty.wav", folder / "nan.wav", folder / "garbage.flac")}


ERRORS = [
    (["--duration", "5"], "duration"),
    (["--batch", "9"], "Batch size is 9"),
    (["--task", "repaint", "--src", "{source}", "--repaint-start", "4"], "at or after the end of the source"),
    (["--task", "cover", "--src", "{empty}"], "holds no samples"),
    (["--task", "cover", "--src", "{nan}"], "NaN"),
    (["--task", "cover", "--src", "{garbage}"], "Cannot read audio file"),
    (["--task", "lego", "--src", "{source}", "--track", "drums"], "needs an ACE-Step 1.5 base model"),
    (["--task", "extract", "--src", "{source}", "--track", "theremin"], "Track name 'theremin' is unknown"),
    (["--task", "cover"], "needs source audio"),
    (["--lyrics", "{missing}"], "Cannot read the lyrics file"),
    (["--dit", "acestep-v15-xl-base"], "Add --download"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "nonsense"], "Device"),
    (["--task", "remix"], "invalid choice"),
]


@pytest.mark.parametrize("args, words", ERRORS, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(ERRORS)])
def test_errors_are_one_line_exit_2_and_leave_no_file(models_dir: Path, source: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture, args: list[str],
                                                      words: str) -> None:
    names = {"source": str(source), "missing": str(tmp_path / "missing.txt")}
    names |= {name: str(path) for name, path in _bad_files(tmp_path / "inputs").items()}
    filled = [arg.format(**names) if arg.startswith("{") else arg for arg in args]
    out = tmp_path / "out"
    try:
        code, stdout, stderr = run_cli(capsys, "--steps", "1", "--models-dir", str(models_dir), "--out", str(out),
                                       *filled)
    except SystemExit as exit_:  # argparse rejects the arguments themselves
        code, stdout, stderr = exit_.code, *capsys.readouterr()
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acestep") and "error:" in lines[0] and words in lines[0], stderr
    assert not out.exists() or not any(out.iterdir())


def test_download_fetches_missing_official_models(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id: str, local_dir: str, allow_patterns: list[str], **_: object) -> str:
        calls.append(repo_id)
        folder = allow_patterns[0].split("/")[0]
        shutil.copytree(models_dir / folder, Path(local_dir) / folder, dirs_exist_ok=True)
        return local_dir

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    empty = tmp_path / "models"
    codes = tmp_path / "codes.txt"
    codes.write_text("<|audio_code_9|>" * 20, encoding="utf-8")  # 100 frames: the cheapest song, 128 frames
    args = ["--codes", str(codes), "--steps", "1", "--models-dir", str(empty), "--out", str(tmp_path / "out")]
    code, _, stderr = run_cli(capsys, *args)
    assert code == 2 and "Add --download" in stderr and "hf download" in stderr and not calls
    code, stdout, stderr = run_cli(capsys, "--download", *args)
    assert code == 0, stderr
    assert calls == ["ACE-Step/Ace-Step1.5"] * 3 and len(takes(stdout)) == 1


def test_console_script_is_declared_and_module_runs() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["acestep"] == "acestep_core.cli:main"
    done = subprocess.run([sys.executable, "-m", "acestep_core", "generate", "--batch", "12"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "acestep: error: Batch size is 12; it must be a whole number from 1 to 8."
