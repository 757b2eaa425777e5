"""ACE-Step Load Audio inside the real server: definitions, uploads of every readable format, bad files.

Files go in the way the frontend sends them (`POST /upload/image`, field `image`); what a node produced
comes back through a 32-bit float WAV written by ACE-Step Save Audio, which stores samples unchanged.
The helpers here are shared with `test_audio_nodes_save.py`.
"""

from __future__ import annotations

import io
import json
import re
import urllib.request
import uuid
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from .client import ComfyClient, PromptRejected, execution_error

LOAD, SAVE, PREVIEW = "AceStepLoadAudio", "AceStepSaveAudio", "AceStepPreviewAudio"
CATEGORY = "audio/ACE-Step"


def tone(sample_rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    """`[samples, channels]` float32: a different chord per channel plus a little noise, peak below 0.8."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    columns = [0.3 * np.sin(2 * np.pi * (220 + 55 * c) * t) + 0.2 * np.sin(2 * np.pi * (330 + 40 * c) * t)
               + 0.05 * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(columns, axis=1).astype(np.float32)


def encode(samples: np.ndarray, sample_rate: int, file_format: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=file_format, subtype=subtype)
    return buffer.getvalue()


def decode(data: bytes, dtype: str = "float32") -> tuple[np.ndarray, int]:
    samples, sample_rate = sf.read(io.BytesIO(data), dtype=dtype, always_2d=True)
    return samples, sample_rate


def upload(comfy: ComfyClient, filename: str, data: bytes) -> str:
    """Upload like the frontend's audio widget does; return the name the Load node's combo gets."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{comfy.url}/upload/image", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=comfy.timeout_s) as response:
        reply = json.loads(response.read())
    return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]


def save_inputs(audio: list, prefix: str, file_format: str = "flac", bit_depth: str = "16",
                mp3_bitrate: str = "128k") -> dict[str, Any]:
    return {"class_type": SAVE, "inputs": {"audio": audio, "filename_prefix": prefix, "format": file_format,
                                           "bit_depth": bit_depth, "mp3_bitrate": mp3_bitrate}}


def load_and_save(name: str, prefix: str, **save: str) -> dict[str, Any]:
    return {"1": {"class_type": LOAD, "inputs": {"audio": name}}, "2": save_inputs(["1", 0], prefix, **save)}


def saved_files(comfy: ComfyClient, entry: dict[str, Any], node_id: str) -> list[tuple[dict[str, str], bytes]]:
    """(ui entry, file bytes) for every file a save/preview node reported, fetched through /view."""
    files = entry["outputs"][node_id]["audio"]
    return [(item, comfy.view(item["filename"], item["subfolder"], item["type"])) for item in files]


def unique(label: str) -> str:
    return f"{label}_{uuid.uuid4().hex[:8]}"


def flac_tags_like_frontend(data: bytes) -> dict[str, str]:
    """The Vorbis comments of a FLAC, read the way frontend 1.32.9 reads them (Latin-1 per byte, key=value)."""
    assert data[:4] == b"fLaC"
    offset, comments = 4, {}
    while offset < len(data):
        last, kind = data[offset] & 0x80, data[offset] & 0x7F
        size = int.from_bytes(data[offset + 1:offset + 4], "big")
        offset += 4
        if kind == 4:
            block = data[offset:offset + size]
            position = 4 + int.from_bytes(block[:4], "little")
            count = int.from_bytes(block[position:position + 4], "little")
            position += 4
            for _ in range(count):
                length = int.from_bytes(block[position:position + 4], "little")
                key, _, value = block[position + 4:position + 4 + length].decode("latin-1").partition("=")
                comments[key] = value
                position += 4 + length
        offset += size
        if last:
            break
    return comments


def mp3_tags_like_frontend(data: bytes) -> dict[str, Any]:
    """`prompt`/`workflow` of an MP3 found the way frontend 1.32.9 finds them: a regex before the first frame."""
    text = data.decode("latin-1")
    head = text[:text.index("\xff\xfb") + 4096]
    found = {}
    for key in ("prompt", "workflow"):
        match = re.search(key + r"\x00(\{.*?\})\x00", head, re.S)
        if match:
            found[key] = json.loads(match.group(1))
    return found


def test_object_info_documents_the_nodes(comfy: ComfyClient) -> None:
    info = {node: comfy.object_info(node)[node] for node in (LOAD, SAVE, PREVIEW)}
    for node, names in ((LOAD, ["audio"]), (SAVE, ["audio", "filename_prefix", "format", "bit_depth", "mp3_bitrate"]),
                        (PREVIEW, ["audio"])):
        assert info[node]["category"] == CATEGORY and info[node]["description"]
        assert info[node]["display_name"].startswith("ACE-Step ")
        assert list(info[node]["input"]["required"]) == names
        assert all(spec[1].get("tooltip") for spec in info[node]["input"]["required"].values()), node
        page = comfy.get(f"/extensions/comfyui-acestep/docs/{node}.md").decode()
        assert page.startswith(f"# {info[node]['display_name']}")
    load = info[LOAD]
    assert load["output"] == ["AUDIO"] and load["output_node"] is False and load["output_tooltips"][0]
    kind, options = load["input"]["required"]["audio"]
    assert kind == "COMBO" and options["audio_upload"] is True
    for node in (SAVE, PREVIEW):
        assert info[node]["output"] == [] and info[node]["output_node"] is True
        assert set(info[node]["input"]["hidden"]) == {"prompt", "extra_pnginfo"}
    required = info[SAVE]["input"]["required"]
    assert required["audio"][0] == "AUDIO"
    assert required["filename_prefix"][0] == "STRING" and required["filename_prefix"][1]["default"] == "audio/ACE-Step"
    assert required["format"][1]["options"] == ["flac", "wav", "mp3"] and required["format"][1]["default"] == "flac"
    assert required["bit_depth"][1]["options"] == ["16", "24", "32f"]
    assert "128k" in required["mp3_bitrate"][1]["options"] and "320k" in required["mp3_bitrate"][1]["options"]
    lrc_type, lrc = info[SAVE]["input"]["optional"]["lrc"]
    assert lrc_type == "STRING" and lrc["forceInput"] is True and lrc["tooltip"]


@pytest.mark.parametrize("extension, file_format, subtype, sample_rate, channels", [
    ("wav", "WAV", "PCM_16", 22050, 1),
    ("flac", "FLAC", "PCM_24", 44100, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 48000, 2),
    ("ogg", "OGG", "VORBIS", 32000, 1),
    ("opus", "OGG", "OPUS", 48000, 2),
    ("wav", "WAV", "FLOAT", 16000, 6),
])
def test_uploaded_file_loads_unchanged(comfy: ComfyClient, extension: str, file_format: str, subtype: str,
                                       sample_rate: int, channels: int) -> None:
    """Rate, channel count and every sample survive Load → AUDIO → 32-bit float WAV."""
    data = encode(tone(sample_rate, channels, 0.7, seed=channels), sample_rate, file_format, subtype)
    name = upload(comfy, f"{unique('load')}.{extension}", data)
    assert name in comfy.object_info(LOAD)[LOAD]["input"]["required"]["audio"][1]["options"]
    entry = comfy.run(load_and_save(name, f"loaded/{unique(extension)}", file_format="wav", bit_depth="32f"))
    assert execution_error(entry) is None, execution_error(entry)
    [(item, saved)] = saved_files(comfy, entry, "2")
    assert item["type"] == "output" and item["subfolder"] == "loaded"
    expected, expected_rate = decode(data)
    got, got_rate = decode(saved)
    assert sf.info(io.BytesIO(saved)).subtype == "FLOAT"
    assert (got_rate, got.shape) == (expected_rate, expected.shape) == (sample_rate, expected.shape)
    assert got.shape[1] == channels
    np.testing.assert_array_equal(got, expected)


def _bad_files() -> dict[str, bytes]:
    nan = tone(16000, 1, 0.2)
    nan[100, 0] = np.nan
    return {"garbage.wav": b"RIFF this is not audio at all" * 10,
            "empty.wav": encode(np.zeros((0, 1), np.float32), 16000, "WAV", "PCM_16"),
            "nan.wav": encode(nan, 16000, "WAV", "FLOAT")}


@pytest.mark.parametrize("kind, needle", [("garbage.wav", "Cannot read"), ("empty.wav", "no samples"),
                                          ("nan.wav", "NaN")])
def test_bad_file_is_a_node_error_and_the_server_keeps_running(comfy: ComfyClient, kind: str, needle: str) -> None:
    name = upload(comfy, f"{unique('bad')}_{kind}", _bad_files()[kind])
    entry = comfy.run(load_and_save(name, f"bad/{unique('x')}"))
    error = execution_error(entry)
    assert error is not None and error["node_id"] == "1"
    assert error["exception_type"] == "acestep_core.errors.AceStepError"
    assert error["exception_message"].startswith(f"ACE-Step Load Audio: audio '{name}': ")
    assert needle in error["exception_message"]
    good = upload(comfy, f"{unique('good')}.wav", encode(tone(16000, 1, 0.2), 16000, "WAV", "PCM_16"))
    entry = comfy.run(load_and_save(good, f"bad/{unique('after')}"))
    assert execution_error(entry) is None, execution_error(entry)


@pytest.mark.parametrize("name", ["no_such_file.wav", "../../etc/passwd"])
def test_missing_or_outside_file_is_refused_before_the_run(comfy: ComfyClient, name: str) -> None:
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(load_and_save(name, f"bad/{unique('missing')}"))
    [error] = rejected.value.node_errors["1"]["errors"]
    assert name in error["details"] and "input folder" in error["details"]
    assert comfy.system_stats()["system"]["comfyui_version"]
