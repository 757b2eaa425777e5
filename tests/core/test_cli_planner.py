"""`acestep generate --lm/--blueprint`: the planner before the DiT, on the tiny models and the tiny LM."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from acestep_core import cli
from acestep_core.planner import load_blueprint
from tests.core.tiny_lm import single_thread, write_lm_folder  # noqa: F401 (fixture)
from tests.core.tiny_models import write_tiny_models

LM = "acestep-5Hz-lm-0.6B"
SR = 48000
HOP = 1920


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_tiny_models(tmp_path_factory.mktemp("models"))
    write_lm_folder(root / LM)
    return root


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main(["generate", "--quiet", "--steps", "2", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def outputs(stdout: str) -> tuple[list[Path], list[Path]]:
    """(take files, plan files) named on stdout."""
    takes = [Path(line.split(" -> ")[1]) for line in stdout.splitlines() if line.startswith("take ")]
    plans = [Path(line.split(" -> ")[1]) for line in stdout.splitlines() if line.startswith("plan ")]
    return takes, plans


def test_planned_songs_follow_their_codes_and_replay_from_the_saved_plan(models_dir: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    common = ["--caption", "city pop, bright synths", "--duration", "10", "--bpm", "100", "--models-dir",
              str(models_dir), "--lm-max-text-tokens", "40"]
    code, stdout, stderr = run(capsys, *common, "--lm", LM, "--batch", "2", "--seed", "5,6", "--save-blueprint",
                               "--out", str(tmp_path / "planned"))
    assert code == 0, stderr
    takes, plans = outputs(stdout)
    assert len(takes) == 2 and len(plans) == 1
    blueprint = load_blueprint(plans[0])
    assert blueprint.seeds == (5, 6)
    for item, path in zip(blueprint.items, takes):
        assert item.bpm == 100 and len(item.codes) == 50  # exactly duration × 5 codes
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (SR, 2, 250 * HOP)

    code, stdout, stderr = run(capsys, "--blueprint", str(plans[0]), "--models-dir", str(models_dir),
                               "--out", str(tmp_path / "replayed"))
    assert code == 0, stderr
    replayed, _ = outputs(stdout)
    for first, second in zip(takes, replayed):
        assert (sf.read(first)[0] == sf.read(second)[0]).all()


def test_planner_options_refused_where_they_cannot_apply(models_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "song.wav"
    sf.write(source, [[0.1, 0.1]] * SR, SR)
    code, _, stderr = run(capsys, "--task", "cover", "--src", str(source), "--lm", LM, "--models-dir",
                          str(models_dir), "--out", str(tmp_path / "out"))
    assert code == 2 and "--lm plans text2music songs" in stderr and not (tmp_path / "out").exists()
    code, _, stderr = run(capsys, "--lm", LM, "--blueprint", "plan.json", "--models-dir", str(models_dir))
    assert code == 2 and "either --lm" in stderr
    code, _, stderr = run(capsys, "--lm", LM, "--key", "H major", "--models-dir", str(models_dir),
                          "--out", str(tmp_path / "out"))
    assert code == 2 and "H major" in stderr and not (tmp_path / "out").exists()
