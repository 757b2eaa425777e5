"""Load Audio, Save Audio and Preview Audio: files in and out of ComfyUI's folders, as standard `AUDIO`.

Reading and writing go through `acestep_core.audio` (soundfile, never torchaudio or PyAV). What the
native nodes do and we copy: files are listed from and uploaded to the input folder; saved names are
`<prefix>_<counter:05>_.<ext>` with the counter after the highest one already there; the UI gets
`{"audio": [{filename, subfolder, type}]}`; FLAC and MP3 carry the API prompt and the UI workflow as
JSON text under the keys `prompt` and `workflow` (skipped with `--disable-metadata`), which is what the
frontend reads back when such a file is dropped on the canvas. What we add: any channel count, WAV and
bit depths, prefixes that cannot leave the output folder, and names that are never reused.

libsndfile can only store its ten standard text fields, so the `prompt`/`workflow` tags are written into
the finished file here: a Vorbis comment block for FLAC, an ID3v2.4 tag with TXXX frames for MP3.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import string
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import io, ui

from acestep_core.audio import load_audio, resample, save_audio
from acestep_core.audio_io import MP3_BITRATES
from acestep_core.errors import AceStepError

from .common import CATEGORY, user_errors
from .lrc import split_takes

READABLE_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "aifc", "au", "snd", "w64", "caf", "rf64"}
)
FORMATS = ("flac", "wav", "mp3")
BIT_DEPTHS = ("16", "24", "32f")
MP3_CHOICES = tuple(f"{rate}k" for rate in MP3_BITRATES)
MP3_RATES = (32000, 44100, 48000)
MP3_MAX_CHANNELS = 2
FORBIDDEN_NAME_CHARS = set('<>:"|?*') | {chr(code) for code in range(32)}

_FLAC_MAGIC = b"fLaC"
_FLAC_VORBIS_COMMENT = 4
_FLAC_MAX_BLOCK = (1 << 24) - 1
_ID3_MAX_SIZE = (1 << 28) - 1


def _audio_batch(audio: Any) -> tuple[torch.Tensor, int]:
    """The `[B, C, N]` waveform and rate of an AUDIO value, refusing what no file can hold."""
    if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
        raise AceStepError("input 'audio' is not an AUDIO value ({waveform, sample_rate}); connect an AUDIO output.")
    waveform, sample_rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(waveform, torch.Tensor) or waveform.ndim not in (2, 3):
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise AceStepError(f"input 'audio' has a waveform of shape {shape}; expected [batch, channels, samples].")
    if not isinstance(sample_rate, (int, float)) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AceStepError(f"input 'audio' has sample rate {sample_rate}; it must be a positive whole number of Hz.")
    return (waveform.unsqueeze(0) if waveform.ndim == 2 else waveform), int(sample_rate)


def _output_target(prefix: str, base_dir: str) -> tuple[Path, str, int, str]:
    """(folder, file stem, first counter, subfolder) for `prefix` inside `base_dir`, or a clear refusal.

    Backslashes count as folder separators on every system and characters that Windows forbids in
    names are refused, so a workflow saved on one system writes the same files on another.
    """
    cleaned = prefix.strip().replace("\\", "/")
    if not cleaned or cleaned.endswith("/"):
        raise AceStepError(f"filename_prefix '{prefix}' has no file name; give one, like 'audio/song'.")
    bad = sorted(FORBIDDEN_NAME_CHARS & set(cleaned))
    if bad:
        raise AceStepError(f"filename_prefix '{prefix}' contains {bad!r}, which file names cannot hold; remove them.")
    parts = cleaned.split("/")
    if cleaned.startswith("/") or ".." in parts:
        raise AceStepError(
            f"filename_prefix '{prefix}' points outside ComfyUI's output folder; use a name or a subfolder "
            "inside it, like 'audio/song'."
        )
    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(cleaned, base_dir)
    return Path(folder), stem, counter, subfolder


def _tags(hidden: Any) -> dict[str, str]:
    """`prompt` and every `extra_pnginfo` item (the UI workflow) as JSON text, as the native save nodes store them.

    `json.dumps` keeps the ASCII escapes: the frontend decodes these tags byte by byte as Latin-1.
    """
    if args.disable_metadata or hidden is None:
        return {}
    tags = {}
    if hidden.prompt is not None:
        tags["prompt"] = json.dumps(hidden.prompt)
    for key, value in (hidden.extra_pnginfo or {}).items():
        tags[key] = json.dumps(value)
    return tags


def _vorbis_comment(vendor: bytes, comments: list[bytes]) -> bytes:
    body = [len(vendor).to_bytes(4, "little"), vendor, len(comments).to_bytes(4, "little")]
    for comment in comments:
        body += [len(comment).to_bytes(4, "little"), comment]
    return b"".join(body)


def _parse_vorbis_comment(block: bytes) -> tuple[bytes, list[bytes]]:
    vendor_end = 4 + int.from_bytes(block[:4], "little")
    count = int.from_bytes(block[vendor_end:vendor_end + 4], "little")
    comments, offset = [], vendor_end + 4
    for _ in range(count):
        size = int.from_bytes(block[offset:offset + 4], "little")
        comments.append(block[offset + 4:offset + 4 + size])
        offset += 4 + size
    return block[4:vendor_end], comments


def _flac_header_with_tags(source: Any, tags: Mapping[str, str]) -> bytes:
    """`fLaC` and the metadata blocks of an open FLAC file, with `tags` set in its Vorbis comment block.

    Leaves `source` at the first audio frame. STREAMINFO stays first, as the format requires.
    """
    if source.read(4) != _FLAC_MAGIC:
        raise ValueError("not a FLAC stream")
    blocks, vendor, comments = [], b"", []
    while True:
        header = source.read(4)
        kind, size = header[0] & 0x7F, int.from_bytes(header[1:], "big")
        body = source.read(size)
        if kind == _FLAC_VORBIS_COMMENT:
            vendor, comments = _parse_vorbis_comment(body)
        else:
            blocks.append((kind, body))
        if header[0] & 0x80:
            break
    ours = {key.lower() for key in tags}
    kept = [comment for comment in comments if comment.split(b"=", 1)[0].decode("ascii", "replace").lower() not in ours]
    comment = _vorbis_comment(vendor, kept + [f"{key}={value}".encode() for key, value in tags.items()])
    if len(comment) > _FLAC_MAX_BLOCK:
        raise ValueError(f"the tags take {len(comment)} bytes, more than a FLAC block holds ({_FLAC_MAX_BLOCK})")
    blocks.insert(1, (_FLAC_VORBIS_COMMENT, comment))
    out = [_FLAC_MAGIC]
    for index, (kind, body) in enumerate(blocks):
        last = 0x80 if index == len(blocks) - 1 else 0
        out += [bytes([last | kind]), len(body).to_bytes(3, "big"), body]
    return b"".join(out)


def _synchsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _id3_tag(tags: Mapping[str, str]) -> bytes:
    """An ID3v2.4 tag of UTF-8 TXXX frames `description\\0value\\0`, the layout the frontend's MP3 reader expects."""
    frames = b""
    for key, value in tags.items():
        body = b"\x03" + key.encode() + b"\x00" + value.encode() + b"\x00"
        frames += b"TXXX" + _synchsafe(len(body)) + b"\x00\x00" + body
    if len(frames) > _ID3_MAX_SIZE:
        raise ValueError(f"the tags take {len(frames)} bytes, more than an ID3v2 tag holds ({_ID3_MAX_SIZE})")
    return b"ID3\x04\x00\x00" + _synchsafe(len(frames)) + frames


def _embed_tags(path: Path, file_format: str, tags: Mapping[str, str]) -> None:
    """Rewrite the file we just created with `tags` in its header (atomically: a temp file, then a rename).

    A workflow too large for the container is logged and left out, so the audio itself is never lost.
    """
    if not tags or file_format == "wav":
        return
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with open(path, "rb") as source, os.fdopen(handle, "wb") as target:
            target.write(_flac_header_with_tags(source, tags) if file_format == "flac" else _id3_tag(tags))
            shutil.copyfileobj(source, target)
        os.replace(temp_name, path)
    except ValueError as exc:
        logging.warning("ACE-Step: '%s' saved without the workflow metadata: %s", path, exc)
    except OSError as exc:
        raise AceStepError(f"Saved '{path}' but could not add the workflow to it ({exc}); check the disk.") from exc
    finally:
        Path(temp_name).unlink(missing_ok=True)


def _free_name(folder: Path, stem: str, counter: int, extension: str, with_lrc: bool) -> tuple[str, int]:
    """The first `stem_<counter>_.<extension>` (and its `.lrc` when asked) that no file uses yet."""
    while True:
        name = f"{stem}_{counter:05}_.{extension}"
        lrc = (folder / name).with_suffix(".lrc")
        if not (folder / name).exists() and not (with_lrc and lrc.exists()):
            return name, counter
        counter += 1


def _mp3_ready(waveform: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, int]:
    """MP3 holds mono or stereo at 32, 44.1 or 48 kHz: other rates are resampled up to the next of these."""
    if waveform.shape[0] > MP3_MAX_CHANNELS:
        raise AceStepError(
            f"format 'mp3' holds at most {MP3_MAX_CHANNELS} channels and this audio has {waveform.shape[0]}; "
            "choose flac or wav."
        )
    if sample_rate in MP3_RATES:
        return waveform, sample_rate
    target = next((rate for rate in MP3_RATES if rate >= sample_rate), MP3_RATES[-1])
    return resample(waveform, sample_rate, target), target


def save_batch(audio: Any, filename_prefix: str, folder_type: io.FolderType, file_format: str = "flac",
               bit_depth: str = "16", mp3_bitrate: str = "128k", hidden: Any = None,
               lrc: str | None = None) -> list[ui.SavedResult]:
    """Write every batch item of `audio` to a new file in the output or temp folder; return the UI entries.

    `%batch_num%` in the prefix becomes the item's index. With `lrc` text (even empty: a song without
    lyrics), a `.lrc` file of the same name sits beside each audio file: the item's own `[take:N]` block
    of a batch's LRC, or the whole text when it has no such blocks.
    """
    if file_format not in FORMATS:
        raise AceStepError(f"format '{file_format}' is not supported; choose one of {list(FORMATS)}.")
    if file_format == "flac" and bit_depth == "32f":
        raise AceStepError("bit_depth '32f' (32-bit float) exists only for wav; choose 16 or 24 for flac.")
    if mp3_bitrate not in MP3_CHOICES:
        raise AceStepError(f"mp3_bitrate '{mp3_bitrate}' is not available; choose one of {list(MP3_CHOICES)}.")
    waveforms, sample_rate = _audio_batch(audio)
    base_dir = folder_paths.get_output_directory() if folder_type == io.FolderType.output \
        else folder_paths.get_temp_directory()
    folder, stem, counter, subfolder = _output_target(filename_prefix, base_dir)
    lyrics = split_takes(lrc, waveforms.shape[0]) if lrc is not None else None
    tags = _tags(hidden)
    results = []
    for index, waveform in enumerate(waveforms):
        rate = sample_rate
        if file_format == "mp3":
            waveform, rate = _mp3_ready(waveform, sample_rate)
        name, counter = _free_name(folder, stem.replace("%batch_num%", str(index)), counter, file_format,
                                   lyrics is not None)
        path = save_audio(waveform, rate, folder / name, format=file_format,
                          bit_depth=None if file_format == "mp3" else bit_depth,
                          mp3_bitrate=int(mp3_bitrate.rstrip("k")))
        _embed_tags(path, file_format, tags)
        if lyrics is not None:
            with open(path.with_suffix(".lrc"), "x", encoding="utf-8") as lrc_file:
                lrc_file.write(lyrics[index])
        results.append(ui.SavedResult(name, subfolder, folder_type))
        counter += 1
    return results


def _input_path(name: str) -> Path:
    """The file a combo value names, inside the input folder (or the `[output]`/`[temp]` folder it is marked with).

    The check is on the written path, not the resolved one: a link the user placed in the folder is allowed.
    """
    relative, base = folder_paths.annotated_filepath(name)
    base = Path(os.path.abspath(base or folder_paths.get_input_directory()))
    path = Path(os.path.abspath(base / relative))
    if path != base and base not in path.parents:
        raise AceStepError(f"audio '{name}' points outside ComfyUI's input folder; pick a file from the list.")
    return path


class AceStepLoadAudio(io.ComfyNode):
    """An audio file from ComfyUI's input folder as AUDIO, at its own rate and channel count."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        input_dir = folder_paths.get_input_directory()
        files = sorted(
            name for name in os.listdir(input_dir)
            if os.path.isfile(os.path.join(input_dir, name)) and name.rsplit(".", 1)[-1].lower() in READABLE_EXTENSIONS
        ) if os.path.isdir(input_dir) else []
        return io.Schema(
            node_id="AceStepLoadAudio",
            display_name="ACE-Step Load Audio",
            category=CATEGORY,
            description=(
                "Loads an audio file (WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, ...) from ComfyUI's input folder, "
                "keeping its sample rate and channels. Upload files with the button."
            ),
            inputs=[
                io.Combo.Input(
                    "audio", options=files, upload=io.UploadType.audio,
                    tooltip="Audio file in ComfyUI's input folder; 'choose file to upload' adds one.",
                ),
            ],
            outputs=[io.Audio.Output(tooltip="AUDIO {waveform [1, channels, samples] float32, sample_rate}.")],
        )

    @classmethod
    def validate_inputs(cls, audio: str) -> bool | str:
        try:
            path = _input_path(audio)
        except AceStepError as exc:
            return str(exc)
        return True if path.is_file() else f"audio '{audio}' is not in ComfyUI's input folder; pick or upload a file."

    @classmethod
    def fingerprint_inputs(cls, audio: str) -> str:
        """Re-run when the file's content changes, even under the same name."""
        digest = hashlib.sha256()
        try:
            with open(_input_path(audio), "rb") as file:
                for chunk in iter(lambda: file.read(1 << 20), b""):
                    digest.update(chunk)
        except (AceStepError, OSError):
            return audio  # validation reports the problem
        return digest.hexdigest()

    @classmethod
    def execute(cls, audio: str) -> io.NodeOutput:
        with user_errors("ACE-Step Load Audio"):
            try:
                waveform, sample_rate = load_audio(_input_path(audio))
            except AceStepError as exc:
                raise AceStepError(f"audio '{audio}': {exc}") from None
        return io.NodeOutput({"waveform": waveform.unsqueeze(0), "sample_rate": sample_rate})


class AceStepSaveAudio(io.ComfyNode):
    """AUDIO to FLAC, WAV or MP3 files in the output folder, with the workflow inside FLAC and MP3."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepSaveAudio",
            display_name="ACE-Step Save Audio",
            category=CATEGORY,
            description=(
                "Saves audio to ComfyUI's output folder as FLAC (default), WAV or MP3, one file per batch item, "
                "never replacing a file. FLAC and MP3 files carry the workflow: drop them on the canvas to get it back."
            ),
            inputs=[
                io.Audio.Input("audio", tooltip="The audio to save; every batch item becomes its own file."),
                io.String.Input(
                    "filename_prefix", default="audio/ACE-Step",
                    tooltip=(
                        "Name of the files, optionally with subfolders inside the output folder "
                        "('audio/song' → audio/song_00001_.flac). %batch_num% becomes the batch index."
                    ),
                ),
                io.Combo.Input(
                    "format", options=list(FORMATS), default="flac",
                    tooltip="flac: lossless, carries the workflow. wav: lossless, no workflow. mp3: small, carries the workflow.",
                ),
                io.Combo.Input(
                    "bit_depth", options=list(BIT_DEPTHS), default="16",
                    tooltip="flac and wav: 16 or 24 bit; wav also 32f (32-bit float, keeps values beyond ±1). Not used by mp3.",
                ),
                io.Combo.Input(
                    "mp3_bitrate", options=list(MP3_CHOICES), default="128k",
                    tooltip="mp3 only: constant bitrate. Rates other than 32/44.1/48 kHz are resampled up for mp3.",
                ),
                io.String.Input(
                    "lrc", optional=True, force_input=True,
                    tooltip=("Optional synced lyrics (LRC text, e.g. from ACE-Step Lyric Timestamps): saved as a .lrc "
                             "file next to each audio file; a batch's [take:N] blocks go to their own takes."),
                ),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, audio: dict, filename_prefix: str, format: str, bit_depth: str, mp3_bitrate: str,
                lrc: str | None = None) -> io.NodeOutput:
        with user_errors("ACE-Step Save Audio"):
            results = save_batch(audio, filename_prefix, io.FolderType.output, format, bit_depth, mp3_bitrate,
                                 hidden=cls.hidden, lrc=lrc)
        return io.NodeOutput(ui=ui.SavedAudios(results))


class AceStepPreviewAudio(io.ComfyNode):
    """AUDIO to a FLAC in the temp folder, for the player only (cleared when ComfyUI restarts)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepPreviewAudio",
            display_name="ACE-Step Preview Audio",
            category=CATEGORY,
            description="Plays audio in the node without keeping it: the file goes to ComfyUI's temp folder.",
            inputs=[io.Audio.Input("audio", tooltip="The audio to listen to; every batch item gets its own file.")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, audio: dict) -> io.NodeOutput:
        prefix = "AceStep_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))
        with user_errors("ACE-Step Preview Audio"):
            results = save_batch(audio, prefix, io.FolderType.temp, hidden=cls.hidden)
        return io.NodeOutput(ui=ui.SavedAudios(results))
