"""Dataset scan (sidecar text/JSON files, CSV), the editable JSON file, and clear errors for malformed input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_core.errors import AceStepError
from acestep_core.training import (
    Dataset, Sample, dataset_json, load_dataset, parse_dataset_json, save_dataset, scan_folder,
)


def write_song(path: Path, seconds: float = 0.5, rate: int = 44100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * rate)
    sf.write(str(path), np.zeros((frames, 2), dtype=np.float32) + 0.01, rate)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "songs"
    write_song(root / "a.wav", 0.5)
    write_song(root / "b.flac", 1.0, 48000)
    write_song(root / "sub" / "c.ogg", 0.25)
    (root / "a.caption.txt").write_text("dreamy synth pop\n")
    (root / "a.lyrics.txt").write_text("[verse]\nla la\n")
    (root / "b.txt").write_text("legacy lyrics")
    (root / "b.json").write_text(json.dumps({"caption": "from json", "bpm": 96, "keyscale": "A minor",
                                             "timesignature": "4", "language": "en"}))
    (root / "notes.md").write_text("not audio")
    return root


def test_scan_reads_sidecars_in_official_order(folder: Path) -> None:
    dataset = scan_folder(folder, custom_tag="mytag")
    assert [s.audio for s in dataset.samples] == ["a.wav", "b.flac", "sub/c.ogg"]
    a, b, c = dataset.samples
    assert (a.caption, a.lyrics, a.bpm) == ("dreamy synth pop", "[verse]\nla la", None)
    assert (b.caption, b.lyrics, b.bpm, b.keyscale, b.timesignature, b.language) == (
        "from json", "legacy lyrics", 96, "A minor", "4", "en")
    assert c == Sample(audio="sub/c.ogg", duration=c.duration) and c.duration == pytest.approx(0.25, abs=1e-3)
    assert a.duration == pytest.approx(0.5, abs=1e-3) and b.duration == pytest.approx(1.0)
    assert dataset.name == "songs" and dataset.audio_path(c) == folder / "sub" / "c.ogg"
    assert set(c.missing()) == {"caption", "keyscale", "timesignature", "language", "bpm"} and not b.missing()


def test_csv_overrides_json_and_text(folder: Path) -> None:
    (folder / "meta.csv").write_text("File;BPM;Key;Caption;language\nb.flac;120.4;C major;csv caption;de\n"
                                     "a.wav;;;;\n")
    a, b, _ = scan_folder(folder).samples
    assert (b.bpm, b.keyscale, b.caption, b.language, b.timesignature) == (120, "C major", "csv caption", "de", "4")
    assert a.caption == "dreamy synth pop"


def test_trigger_word_positions() -> None:
    sample = Sample(audio="x.wav", caption="lofi beat")
    captions = {pos: Dataset(Path("."), (sample,), custom_tag="zz", tag_position=pos).training_caption(sample)
                for pos in ("prepend", "append", "replace")}
    assert captions == {"prepend": "zz, lofi beat", "append": "lofi beat, zz", "replace": "zz"}
    assert Dataset(Path("."), (sample,)).training_caption(sample) == "lofi beat"
    empty = Sample(audio="y.wav")
    assert Dataset(Path("."), (empty,), custom_tag="zz").training_caption(empty) == "zz"


def test_json_round_trip_edit_and_no_overwrite(folder: Path, tmp_path: Path) -> None:
    dataset = scan_folder(folder, custom_tag="tag", tag_position="append")
    path = save_dataset(dataset, tmp_path / "out" / "dataset.json")
    assert load_dataset(path) == dataset
    with pytest.raises(AceStepError, match="already exists"):
        save_dataset(dataset, path)
    edited = json.loads(path.read_text())
    edited["samples"][2]["caption"] = "hand written"
    edited["samples"][2]["bpm"] = 140
    path.write_text(json.dumps(edited))
    loaded = load_dataset(path)
    assert loaded.samples[2] == replace(dataset.samples[2], caption="hand written", bpm=140)
    assert parse_dataset_json(dataset_json(loaded)) == loaded
    save_dataset(loaded, path, overwrite=True)
    assert load_dataset(path) == loaded


@pytest.mark.parametrize("change, words", [
    (lambda d: d["samples"][0].update(bpm="fast"), "sample 1: bpm 'fast'"),
    (lambda d: d["samples"][1].update(tempo=120), "sample 2 has unknown field"),
    (lambda d: d["samples"][0].update(audio="missing.wav"), "missing.wav does not exist"),
    (lambda d: d["samples"][0].pop("audio"), "no \"audio\" path"),
    (lambda d: d.update(format="other"), "not an ACE-Step LoRA dataset"),
    (lambda d: d.update(samples=[]), "lists no samples"),
    (lambda d: d.update(tag_position="middle"), "tag_position 'middle'"),
    (lambda d: d["samples"][0].update(duration=-1), "duration -1"),
])
def test_malformed_dataset_files_name_the_problem(folder: Path, tmp_path: Path, change, words: str) -> None:
    data = json.loads(dataset_json(scan_folder(folder)))
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AceStepError, match=words.replace("(", r"\(")) as error:
        load_dataset(path)
    assert "bad.json" in str(error.value)


def test_broken_json_text_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text("{\"format\": ")
    with pytest.raises(AceStepError, match="fix the JSON"):
        load_dataset(tmp_path / "d.json")
    with pytest.raises(AceStepError, match="does not exist"):
        load_dataset(tmp_path / "none.json")
    with pytest.raises(AceStepError, match="not valid JSON"):
        parse_dataset_json("[1,")


@pytest.mark.parametrize("setup, words", [
    (lambda root: (root / "a.json").write_text("[1, 2]"), "must hold a JSON object"),
    (lambda root: (root / "a.json").write_text("{\"caption\": "), "fix the JSON"),
    (lambda root: (root / "a.json").write_text("{\"tempo\": 3}"), "unknown field"),
    (lambda root: (root / "a.json").write_text("{\"bpm\": 999}"), "bpm 999"),
    (lambda root: (root / "m.csv").write_text("name,bpm\na.wav,120\n"), "no 'file' column"),
    (lambda root: (root / "m.csv").write_text("file,bpm\nzzz.wav,120\n"), "line 2 names 'zzz.wav'"),
    (lambda root: (root / "broken.wav").write_bytes(b"RIFF0000WAVEjunk"), "Cannot read audio file"),
])
def test_malformed_sidecars_name_the_file(tmp_path: Path, setup, words: str) -> None:
    root = tmp_path / "songs"
    write_song(root / "a.wav")
    setup(root)
    with pytest.raises(AceStepError, match=words):
        scan_folder(root)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(AceStepError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("lyrics without a song")
    with pytest.raises(AceStepError, match="holds no audio files"):
        scan_folder(tmp_path / "empty")
    write_song(tmp_path / "flat" / "a.wav")
    write_song(tmp_path / "flat" / "deep" / "b.wav")
    assert [s.audio for s in scan_folder(tmp_path / "flat", recursive=False).samples] == ["a.wav"]
    with pytest.raises(AceStepError, match="tag_position"):
        scan_folder(tmp_path / "flat", tag_position="front")
