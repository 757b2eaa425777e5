"""Reading and writing audio files: round trips per format, clear errors, no overwrite, no partial files."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import acestep_core.audio_io as audio_io
from acestep_core.audio_io import load_audio, save_audio, unique_path
from acestep_core.errors import AceStepError

SR = 48000


def _stereo(seconds: float = 0.5) -> torch.Tensor:
    """Different content per channel (440 Hz left, 1 kHz right) so swapped or merged channels show."""
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t), 0.25 * torch.sin(2 * math.pi * 1000 * t)]).float()


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fmt, depth, tolerance", [
    ("flac", None, 1 / 2 ** 15),
    ("flac", "24", 1 / 2 ** 23),
    ("wav", "16", 1 / 2 ** 15),
    ("wav", "24", 1 / 2 ** 23),
    ("wav", "32f", 0.0),
])
def test_lossless_round_trip(tmp_path: Path, fmt: str, depth, tolerance: float) -> None:
    audio = _stereo()
    path = save_audio(audio, SR, tmp_path / f"song.{fmt}", format=fmt, bit_depth=depth)
    assert path == tmp_path / f"song.{fmt}"
    loaded, rate = load_audio(path)
    assert rate == SR and loaded.shape == audio.shape and loaded.dtype == torch.float32
    assert (loaded - audio).abs().max().item() <= tolerance
    expected_subtype = {None: "PCM_16", "16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}[depth]
    assert sf.info(str(path)).subtype == expected_subtype
    assert _only(tmp_path) == [f"song.{fmt}"]


@pytest.mark.parametrize("bitrate, level_tol_db", [(320, 0.05), (128, 1.0)])
def test_mp3_round_trip_keeps_channels_and_level(tmp_path: Path, bitrate: int, level_tol_db: float) -> None:
    audio = _stereo(2.0)
    loaded, rate = load_audio(save_audio(audio, SR, tmp_path / "song.mp3", mp3_bitrate=bitrate))
    assert rate == SR and loaded.shape[0] == 2
    assert abs(loaded.shape[1] - audio.shape[1]) <= 2 * 1152  # at most the codec's padding frames
    for channel, amp in ((0, 0.5), (1, 0.25)):
        core = loaded[channel, SR // 2: 3 * SR // 2]
        rms_db = 20 * math.log10(core.pow(2).mean().sqrt().item() / (amp / math.sqrt(2)))
        assert abs(rms_db) < level_tol_db
    # the channels are still the two different tones: each correlates with its own original
    length = min(loaded.shape[1], audio.shape[1])
    corr = torch.corrcoef(torch.cat([loaded[:, :length], audio[:, :length]]))[0:2, 2:4]
    assert corr[0, 0] > corr[0, 1] and corr[1, 1] > corr[1, 0]


@pytest.mark.parametrize("bitrate", [64, 128, 192, 256, 320])
def test_mp3_file_has_the_requested_bitrate(tmp_path: Path, bitrate: int) -> None:
    seconds = 4.0
    path = save_audio(_stereo(seconds), SR, tmp_path / "rate.mp3", mp3_bitrate=bitrate)
    measured_kbps = path.stat().st_size * 8 / seconds / 1000
    assert abs(measured_kbps - bitrate) < 0.03 * bitrate


def test_ogg_and_mono_files_load(tmp_path: Path) -> None:
    path = tmp_path / "mono.ogg"
    sf.write(str(path), _stereo()[0].numpy(), 44100, format="OGG", subtype="VORBIS")
    loaded, rate = load_audio(path)
    assert rate == 44100 and loaded.shape[0] == 1 and abs(loaded.shape[1] - _stereo().shape[1]) < 1024


def test_loud_samples_are_clamped_not_wrapped(tmp_path: Path) -> None:
    audio = torch.tensor([[0.5, 1.7, -3.0, 0.2]])
    pcm, _ = load_audio(save_audio(audio, SR, tmp_path / "a.wav", format="wav"))
    assert pcm[0, 1] > 0.99 and pcm[0, 2] < -0.99
    flt, _ = load_audio(save_audio(audio, SR, tmp_path / "b.wav", format="wav", bit_depth="32f"))
    assert torch.equal(flt, audio)
    mono, _ = load_audio(save_audio(audio[0], SR, tmp_path / "c.flac"))
    assert mono.shape == (1, 4)


def test_format_follows_the_extension(tmp_path: Path) -> None:
    assert sf.info(str(save_audio(_stereo(), SR, tmp_path / "a.wav"))).format == "WAV"
    assert sf.info(str(save_audio(_stereo(), SR, tmp_path / "b.MP3"))).format == "MP3"
    assert sf.info(str(save_audio(_stereo(), SR, tmp_path / "c.audio"))).format == "FLAC"
    assert sf.info(str(save_audio(_stereo(), SR, tmp_path / "d.audio", format="wav"))).format == "WAV"


def test_metadata_is_written(tmp_path: Path) -> None:
    path = save_audio(_stereo(), SR, tmp_path / "m.flac", metadata={"title": "Song", "comment": '{"seed": 1}'})
    with sf.SoundFile(str(path)) as f:
        assert f.title == "Song" and f.comment == '{"seed": 1}'
    with pytest.raises(AceStepError, match="workflow"):
        save_audio(_stereo(), SR, tmp_path / "n.flac", metadata={"workflow": "{}"})
    assert _only(tmp_path) == ["m.flac"]


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "song.flac"
    target.write_bytes(b"keep me")
    with pytest.raises(AceStepError, match="already exists"):
        save_audio(_stereo(), SR, target)
    assert target.read_bytes() == b"keep me"
    assert _only(tmp_path) == ["song.flac"]
    free = unique_path(target)
    assert free == tmp_path / "song_2.flac"
    save_audio(_stereo(), SR, free)
    assert unique_path(target) == tmp_path / "song_3.flac"
    assert unique_path(tmp_path / "new.wav") == tmp_path / "new.wav"


def test_file_appearing_during_write_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer grabs the name between our check and our link: their file wins, ours is dropped."""
    target = tmp_path / "race.flac"
    real_link = os.link

    def link_after_rival(src, dst):
        Path(dst).write_bytes(b"rival")
        return real_link(src, dst)

    monkeypatch.setattr(audio_io.os, "link", link_after_rival)
    with pytest.raises(AceStepError, match="already exists"):
        save_audio(_stereo(), SR, target)
    assert target.read_bytes() == b"rival" and _only(tmp_path) == ["race.flac"]


def test_file_systems_without_hard_links_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src, dst):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(audio_io.os, "link", no_links)
    path = save_audio(_stereo(), SR, tmp_path / "sub" / "plain.wav", format="wav")
    assert load_audio(path)[0].shape == (2, SR // 2)
    assert _only(tmp_path / "sub") == ["plain.wav"]


def test_failure_while_writing_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_write(self, data):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf.SoundFile, "write", broken_write)
    with pytest.raises(AceStepError, match="disk full"):
        save_audio(_stereo(), SR, tmp_path / "x.flac")
    assert _only(tmp_path) == []


def test_unwritable_folder_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"")
    with pytest.raises(AceStepError, match="Cannot write to the folder"):
        save_audio(_stereo(), SR, blocker / "song.flac")
    assert _only(tmp_path) == ["not_a_folder"]


@pytest.mark.parametrize("kwargs, match", [
    ({"format": "aac"}, "not supported"),
    ({"format": "wav", "path": "out.flac"}, "make them agree"),
    ({"format": "flac", "bit_depth": "32f"}, "Bit depth"),
    ({"format": "wav", "bit_depth": "8"}, "Bit depth"),
    ({"format": "mp3", "mp3_bitrate": 100}, "bitrate 100"),
    ({"format": "mp3", "sample_rate": 12345}, "12345 Hz"),
    ({"waveform": torch.tensor([[0.0, float("nan")]])}, "NaN"),
    ({"waveform": torch.zeros(1, 2, 10)}, "one at a time"),
    ({"waveform": torch.zeros(2, 0)}, "at least one sample"),
])
def test_bad_save_requests_give_one_clear_error_and_no_file(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"waveform": _stereo(), "sample_rate": SR, **kwargs, "path": tmp_path / kwargs.get("path", "out.file")}
    with pytest.raises(AceStepError, match=match):
        save_audio(**args)
    assert _only(tmp_path) == []


def test_bad_files_give_one_clear_error_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), dtype=np.float32), SR)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.array([[0.1, np.nan], [np.inf, 0.0]], dtype=np.float32), SR, subtype="FLOAT")
    cases = [
        (tmp_path / "missing.flac", "does not exist"),
        (tmp_path, "is a folder"),
        (garbage, "Cannot read"),
        (empty, "no samples"),
        (nan, "NaN or infinite"),
    ]
    for path, match in cases:
        with pytest.raises(AceStepError, match=match) as error:
            load_audio(path)
        assert str(path) in str(error.value)
