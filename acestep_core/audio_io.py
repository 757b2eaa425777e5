"""Reading and writing audio files with soundfile (libsndfile), never torchaudio.

Reading gives float32 `[channels, samples]` at the file's own rate; `acestep_core.audio.to_model_audio`
turns that into what the VAE wants. Writing never replaces an existing file and never leaves a partial one:
the data goes to a hidden temporary file in the target folder, which is then hard-linked (or, on file
systems without hard links, renamed) to the final name only if that name is still free.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch

from acestep_core.errors import AceStepError

PathLike = Union[str, os.PathLike]

# format name -> (libsndfile container, {bit depth -> libsndfile subtype}, default bit depth)
_FORMATS: dict[str, tuple[str, dict[str, str], str]] = {
    "flac": ("FLAC", {"16": "PCM_16", "24": "PCM_24"}, "16"),
    "wav": ("WAV", {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}, "16"),
    "mp3": ("MP3", {"": "MPEG_LAYER_III"}, ""),
}
# The string fields libsndfile can store (FLAC Vorbis comments, WAV INFO chunks, MP3 ID3 tags).
# MPEG-1 Layer III constant bitrates (kbit/s) at 32/44.1/48 kHz. libsndfile maps compression_level linearly
# onto 320…32 kbit/s and picks the nearest of these, so (320 − rate) / 288 selects `rate` exactly.
MP3_BITRATES = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_TOP, _MP3_BOTTOM = 320, 32
METADATA_FIELDS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license",
                   "tracknumber", "genre")


def load_audio(path: PathLike) -> tuple[torch.Tensor, int]:
    """Read any file libsndfile understands (wav, flac, ogg/vorbis/opus, mp3, aiff, ...).

    Returns `(waveform [channels, samples] float32, sample_rate)`. Empty files and files holding NaN or
    infinite samples are refused here, with the file named, because they would otherwise surface later as
    a shape error or a silent NaN song.
    """
    file = Path(path)
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise AceStepError(f"Audio file '{file}' {what}; check the path.")
    try:
        data, sample_rate = sf.read(str(file), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as exc:
        raise AceStepError(
            f"Cannot read audio file '{file}' ({exc}). Supported: WAV, FLAC, OGG (Vorbis/Opus), MP3, AIFF; "
            "convert other formats (AAC/M4A, ...) to FLAC or WAV first."
        ) from exc
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AceStepError(f"Audio file '{file}' holds no samples; choose a file with audio in it.")
    if not np.isfinite(data).all():
        raise AceStepError(f"Audio file '{file}' contains NaN or infinite samples; re-export it from its source.")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def unique_path(path: PathLike) -> Path:
    """`path` if nothing exists there, else the first free `stem_2.ext`, `stem_3.ext`, ... beside it."""
    candidate = Path(path)
    number = 2
    while candidate.exists():
        candidate = candidate.with_name(f"{Path(path).stem}_{number}{Path(path).suffix}")
        number += 1
    return candidate


def save_audio(waveform: torch.Tensor, sample_rate: int, path: PathLike, format: str | None = None,
               bit_depth: str | None = None, mp3_bitrate: int = 128,
               metadata: Mapping[str, str] | None = None) -> Path:
    """Write `[channels, samples]` (or `[samples]` for mono) to a new file and return its path.

    `format`: "flac" (bit depth "16" or "24"), "wav" ("16", "24" or "32f" for 32-bit float) or "mp3"
    (LAME inside libsndfile, constant `mp3_bitrate` kbit/s from `MP3_BITRATES`; 128 as the official
    default, 32/44.1/48 kHz only). Left out, it follows the file extension, and FLAC when the extension
    names none of these. Integer and MP3 formats are clamped to [-1, 1] here rather than left to each
    codec; 32-bit float WAV stores the values as they are. An existing `path` is never replaced: the call
    raises `AceStepError` (use `unique_path` to pick a free name). On any failure no file is left behind.
    """
    container, subtypes, default_depth = _format_spec(format, Path(path))
    depth = default_depth if bit_depth is None else str(bit_depth)
    if depth not in subtypes:
        raise AceStepError(
            f"Bit depth '{bit_depth}' is not available for {container.lower()}; choose one of {sorted(subtypes)}."
        )
    data = _to_numpy_frames(waveform, clamp=subtypes[depth] != "FLOAT", target=path)
    if container == "MP3" and mp3_bitrate not in MP3_BITRATES:
        raise AceStepError(f"MP3 bitrate {mp3_bitrate} kbit/s is not available; choose one of {list(MP3_BITRATES)}.")
    unknown = sorted(set(metadata or {}) - set(METADATA_FIELDS))
    if unknown:
        raise AceStepError(f"Metadata fields {unknown} cannot be stored; use only {list(METADATA_FIELDS)}.")
    final = Path(path)
    if final.exists():
        raise AceStepError(f"'{final}' already exists and is never overwritten; choose another name.")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    except OSError as exc:
        raise AceStepError(f"Cannot write to the folder of '{final}' ({exc}); choose another folder.") from exc
    os.close(handle)
    temp = Path(temp_name)
    # mkstemp creates the file private (0600); a finished song gets the permissions any new file would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)
    try:
        extra = {}
        if container == "MP3":
            level = (_MP3_TOP - mp3_bitrate) / (_MP3_TOP - _MP3_BOTTOM)
            extra = {"compression_level": level, "bitrate_mode": "CONSTANT"}
        try:
            with sf.SoundFile(temp, "w", samplerate=int(sample_rate), channels=data.shape[1],
                              format=container, subtype=subtypes[depth], **extra) as out:
                for key, value in (metadata or {}).items():
                    setattr(out, key, str(value))
                out.write(data)
            _publish(temp, final)
        except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError) as exc:
            hint = "MP3 needs 32000, 44100 or 48000 Hz" if container == "MP3" else "check the disk and folder"
            raise AceStepError(
                f"Cannot write '{final}' as {container.lower()} at {sample_rate} Hz ({exc}); {hint}."
            ) from exc
    finally:
        temp.unlink(missing_ok=True)
    return final


def _format_spec(format: str | None, path: Path) -> tuple[str, dict[str, str], str]:
    suffix = path.suffix.lower().lstrip(".")
    key = (format or (suffix if suffix in _FORMATS else "flac")).lower().lstrip(".")
    if key not in _FORMATS:
        raise AceStepError(f"Audio format '{format}' is not supported; choose one of {sorted(_FORMATS)}.")
    if suffix in _FORMATS and suffix != key:
        raise AceStepError(f"'{path}' has a .{suffix} extension but the format is {key}; make them agree.")
    container = _FORMATS[key][0]
    if container not in sf.available_formats():
        raise AceStepError(
            f"This libsndfile ({sf.__libsndfile_version__}) cannot write {key}; "
            "upgrade soundfile (pip install -U soundfile) or choose FLAC/WAV."
        )
    return _FORMATS[key]


def _to_numpy_frames(waveform: torch.Tensor, clamp: bool, target: PathLike) -> np.ndarray:
    """`[channels, samples]` tensor → `[samples, channels]` float32 array, the layout soundfile writes."""
    if waveform.ndim == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.ndim != 2 or waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise AceStepError(
            f"Cannot save '{target}': audio has shape {tuple(waveform.shape)}, expected [channels, samples] "
            "with at least one sample; save batch items one at a time."
        )
    data = waveform.detach().to("cpu", torch.float32)
    if not torch.isfinite(data).all():
        raise AceStepError(f"Cannot save '{target}': the audio contains NaN or infinite samples.")
    if clamp:
        data = data.clamp(-1.0, 1.0)
    return np.ascontiguousarray(data.T.numpy())


def _publish(temp: Path, final: Path) -> None:
    """Give the finished temp file its final name without ever replacing a file that appeared meanwhile."""
    try:
        os.link(temp, final)
    except FileExistsError as exc:
        raise AceStepError(f"'{final}' already exists and is never overwritten; choose another name.") from exc
    except OSError:
        # File systems without hard links (FAT, some network shares): check, then rename.
        if final.exists():
            raise AceStepError(f"'{final}' already exists and is never overwritten; choose another name.")
        os.rename(temp, final)
