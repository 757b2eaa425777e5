"""ACE-Step Save Audio and Preview Audio inside the real server: formats, embedded workflow, names, interop.

The embedded `prompt`/`workflow` are read back the way frontend 1.32.9 reads them when a file is
dropped on the canvas, and once more with PyAV (FFmpeg) in the server's own Python.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import comfyui_test_env
import numpy as np
import pytest
import soundfile as sf

from .client import ComfyClient, execution_error
from .test_audio_nodes import (LOAD, PREVIEW, decode, encode, flac_tags_like_frontend, load_and_save,
                               mp3_tags_like_frontend, save_inputs, saved_files, tone, unique, upload)

WORKFLOW = {"last_node_id": 2, "nodes": [{"id": 1, "type": LOAD}], "links": [], "version": 0.4,
            "extra": {"note": "Grüße ♪ 歌"}}


def as_sent(stored_prompt: dict[str, Any]) -> dict[str, Any]:
    """A prompt as the client sent it: ComfyUI adds each node's `is_changed` fingerprint before running."""
    return {key: {k: v for k, v in node.items() if k != "is_changed"} for key, node in stored_prompt.items()}


@pytest.fixture(scope="module")
def source(comfy: ComfyClient) -> tuple[str, np.ndarray]:
    """A 48 kHz stereo 16-bit WAV in the input folder, and its samples."""
    data = encode(tone(48000, 2, 1.5), 48000, "WAV", "PCM_16")
    return upload(comfy, f"{unique('source')}.wav", data), decode(data, "float64")[0]


def _pyav_tags(comfy_env: comfyui_test_env.TestEnv, paths: list[Path]) -> list[dict[str, str]]:
    script = "import av, json, sys\nprint(json.dumps([dict(av.open(p).metadata) for p in sys.argv[1:]]))"
    result = subprocess.run([str(comfy_env.python), "-c", script, *map(str, paths)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_formats_carry_the_audio_and_the_workflow(comfy: ComfyClient, comfy_env: comfyui_test_env.TestEnv,
                                                  comfy_server: comfyui_test_env.ComfyServer,
                                                  source: tuple[str, np.ndarray]) -> None:
    name, expected = source
    prefix = f"formats/{unique('song')}"
    settings = {"2": ("flac", "16", "PCM_16"), "3": ("flac", "24", "PCM_24"), "4": ("wav", "16", "PCM_16"),
                "5": ("wav", "24", "PCM_24"), "6": ("mp3", "16", "MPEG_LAYER_III")}
    prompt = {"1": {"class_type": LOAD, "inputs": {"audio": name}}}
    for node_id, (file_format, depth, _) in settings.items():
        prompt[node_id] = save_inputs(["1", 0], prefix, file_format, depth, mp3_bitrate="192k")
    entry = comfy.run(prompt, workflow=WORKFLOW)
    assert execution_error(entry) is None, execution_error(entry)
    names = {}
    for node_id, (file_format, _, subtype) in settings.items():
        [(item, data)] = saved_files(comfy, entry, node_id)
        names[node_id] = item["filename"]
        assert item["filename"].endswith(f"_.{file_format}") and item["subfolder"] == "formats"
        info = sf.info(io.BytesIO(data))
        assert (info.samplerate, info.channels, info.subtype) == (48000, 2, subtype)
        got = decode(data, "float64")[0]
        if file_format == "mp3":
            assert abs(got.shape[0] - expected.shape[0]) <= 1152
            length = min(got.shape[0], expected.shape[0])
            assert np.corrcoef(got[:length].ravel(), expected[:length].ravel())[0, 1] > 0.95
            tags = mp3_tags_like_frontend(data)
            assert tags["workflow"] == WORKFLOW and as_sent(tags["prompt"]) == prompt
        else:
            np.testing.assert_array_equal(got, expected)
        if file_format == "flac":
            tags = flac_tags_like_frontend(data)
            assert json.loads(tags["workflow"]) == WORKFLOW and as_sent(json.loads(tags["prompt"])) == prompt
    assert len(set(names.values())) == len(settings)
    output = comfy_server.base / "output" / "formats"
    stored = _pyav_tags(comfy_env, [output / names["2"], output / names["6"]])
    for tags in stored:
        assert json.loads(tags["workflow"]) == WORKFLOW and as_sent(json.loads(tags["prompt"])) == prompt


def test_repeated_saves_never_overwrite(comfy: ComfyClient, comfy_server: comfyui_test_env.ComfyServer,
                                        source: tuple[str, np.ndarray]) -> None:
    stem = unique("again")
    folder = comfy_server.base / "output" / "repeat"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}_00001_.flac").write_bytes(b"a file the user keeps")
    prompt = load_and_save(source[0], f"repeat/{stem}")
    prompt["3"] = save_inputs(["1", 0], f"repeat/{stem}", bit_depth="24")  # identical nodes would share one result
    first = comfy.run(prompt)
    assert execution_error(first) is None, execution_error(first)
    made = sorted(item["filename"] for node in ("2", "3") for item, _ in saved_files(comfy, first, node))
    hashes = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in made}
    prompt["2"]["inputs"]["mp3_bitrate"] = "320k"  # a changed input, so the node runs again
    second = comfy.run(prompt)
    assert execution_error(second) is None, execution_error(second)
    made += [item["filename"] for item, _ in saved_files(comfy, second, "2")]
    assert made == [f"{stem}_0000{n}_.flac" for n in (2, 3, 4)]
    assert (folder / f"{stem}_00001_.flac").read_bytes() == b"a file the user keeps"
    assert all(hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest for name, digest in hashes.items())


@pytest.mark.parametrize("prefix", ["../../{x}", "..\\..\\{x}", "/tmp/{x}", "audio/../../{x}", "C:/{x}"])
def test_prefix_cannot_leave_the_output_folder(comfy: ComfyClient, comfy_server: comfyui_test_env.ComfyServer,
                                               source: tuple[str, np.ndarray], prefix: str) -> None:
    marker = unique("escape")
    entry = comfy.run(load_and_save(source[0], prefix.format(x=marker)))
    error = execution_error(entry)
    assert error is not None and error["node_id"] == "2"
    assert error["exception_type"] == "acestep_core.errors.AceStepError"
    assert error["exception_message"].startswith("ACE-Step Save Audio: filename_prefix ")
    assert not list(comfy_server.base.parent.glob(f"**/{marker}*")) and not list(Path("/tmp").glob(f"{marker}*"))


def test_lrc_text_is_saved_beside_the_audio(comfy: ComfyClient, comfy_server: comfyui_test_env.ComfyServer,
                                            source: tuple[str, np.ndarray]) -> None:
    lyrics = "[00:00.00] Grüße ♪\n[00:01.00] 歌\n"
    prompt = load_and_save(source[0], f"lyrics/{unique('song')}", file_format="wav")
    prompt["3"] = {"class_type": "PrimitiveString", "inputs": {"value": lyrics}}
    prompt["2"]["inputs"]["lrc"] = ["3", 0]
    entry = comfy.run(prompt)
    assert execution_error(entry) is None, execution_error(entry)
    [(item, _)] = saved_files(comfy, entry, "2")
    audio = comfy_server.base / "output" / item["subfolder"] / item["filename"]
    assert audio.with_suffix(".lrc").read_text(encoding="utf-8") == lyrics


def test_preview_and_core_nodes_exchange_audio(comfy: ComfyClient, comfy_server: comfyui_test_env.ComfyServer,
                                               source: tuple[str, np.ndarray]) -> None:
    """Our AUDIO feeds core SaveAudio; core LoadAudio (PyAV) reads our FLAC back; Preview writes a temp FLAC."""
    name, expected = source
    core_prefix = f"core/{unique('native')}"
    prompt = {"1": {"class_type": LOAD, "inputs": {"audio": name}},
              "2": save_inputs(["1", 0], f"core/{unique('ours')}"),
              "3": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": core_prefix}},
              "4": {"class_type": PREVIEW, "inputs": {"audio": ["1", 0]}}}
    entry = comfy.run(prompt, workflow=WORKFLOW)
    assert execution_error(entry) is None, execution_error(entry)
    [(ours, _)] = saved_files(comfy, entry, "2")
    [(_, native)] = saved_files(comfy, entry, "3")
    np.testing.assert_allclose(decode(native, "float64")[0], expected, atol=1 / 32768)
    [(preview, preview_data)] = saved_files(comfy, entry, "4")
    assert preview["type"] == "temp" and (comfy_server.base / "temp" / preview["filename"]).is_file()
    np.testing.assert_array_equal(decode(preview_data, "float64")[0], expected)
    assert json.loads(flac_tags_like_frontend(preview_data)["workflow"]) == WORKFLOW

    annotated = f"{ours['subfolder']}/{ours['filename']} [output]"
    back = {"1": {"class_type": "LoadAudio", "inputs": {"audio": annotated}},
            "2": save_inputs(["1", 0], f"core/{unique('roundtrip')}", "wav", "32f")}
    entry = comfy.run(back)
    assert execution_error(entry) is None, execution_error(entry)
    [(_, data)] = saved_files(comfy, entry, "2")
    np.testing.assert_allclose(decode(data, "float64")[0], expected, atol=1e-7)


IN_PROCESS_CHECK = """
import json, sys, tempfile, types
from pathlib import Path
from comfy.cli_args import args
args.cpu = True
import folder_paths, torch
root = Path(tempfile.mkdtemp())
for name in ("input", "output", "temp"):
    (root / name).mkdir()
folder_paths.set_output_directory(str(root / "output"))
folder_paths.set_temp_directory(str(root / "temp"))
sys.path.append(sys.argv[1])
package = types.ModuleType("acestep_nodes_under_test")
package.__path__ = [sys.argv[1] + "/nodes"]
sys.modules[package.__name__] = package
from acestep_nodes_under_test import audio_io
hidden = {"PROMPT": {"1": {}}, "EXTRA_PNGINFO": {"workflow": {"nodes": []}}}
save = audio_io.AceStepSaveAudio.PREPARE_CLASS_CLONE(hidden)
report = {}
batch = {"waveform": torch.rand(3, 2, 2205) - 0.5, "sample_rate": 22050}
out = save.execute(batch, "b/item%batch_num%", "mp3", "16", "320k")
report["batch"] = [[e["filename"], e["subfolder"], e["type"]] for e in out.ui.as_dict()["audio"]]
import soundfile as sf
report["mp3_rate"] = sf.info(str(root / "output" / "b" / report["batch"][0][0])).samplerate
out = save.execute({"waveform": torch.zeros(2, 4800), "sample_rate": 48000}, "flat", "flac", "24", "128k")
report["two_dim"] = [e["filename"] for e in out.ui.as_dict()["audio"]]
args.disable_metadata = True
out = save.execute({"waveform": torch.zeros(1, 1, 4800), "sample_rate": 48000}, "plain", "flac", "16", "128k")
report["plain"] = (root / "output" / out.ui.as_dict()["audio"][0]["filename"]).read_bytes().count(b"workflow=")
errors = {}
for label, audio, fmt, depth in [
        ("channels", {"waveform": torch.zeros(1, 6, 4800), "sample_rate": 48000}, "mp3", "16"),
        ("depth", {"waveform": torch.zeros(1, 2, 4800), "sample_rate": 48000}, "flac", "32f"),
        ("not_audio", {"samples": torch.zeros(1, 64, 10)}, "flac", "16"),
        ("empty", {"waveform": torch.zeros(1, 2, 0), "sample_rate": 48000}, "flac", "16")]:
    try:
        save.execute(audio, "errors/x", fmt, depth, "128k")
    except Exception as exc:
        errors[label] = [type(exc).__name__, str(exc)]
report["errors"] = errors
report["left_behind"] = sorted(p.name for p in (root / "output").rglob("*") if p.is_file() and "errors" in p.parts)
print(json.dumps(report))
"""


def test_batches_layouts_and_refusals_in_process(comfy_env: comfyui_test_env.TestEnv) -> None:
    """What the graph cannot easily make: batches, `%batch_num%`, 2-D waveforms, metadata off, refusals."""
    result = subprocess.run([str(comfy_env.python), "-c", IN_PROCESS_CHECK, str(comfyui_test_env.REPO_ROOT)],
                            cwd=comfy_env.comfyui_dir, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(comfy_env.stubs_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["batch"] == [[f"item{i}_0000{i + 1}_.mp3", "b", "output"] for i in range(3)]
    assert report["mp3_rate"] == 32000
    assert report["two_dim"] == ["flat_00001_.flac"]
    assert report["plain"] == 0
    errors = report["errors"]
    assert set(errors) == {"channels", "depth", "not_audio", "empty"}
    assert all(kind == "AceStepError" and message.startswith("ACE-Step Save Audio: ")
               for kind, message in errors.values())
    assert "'mp3' holds at most 2 channels" in errors["channels"][1] and "flac or wav" in errors["channels"][1]
    assert "bit_depth '32f'" in errors["depth"][1]
    assert "input 'audio'" in errors["not_audio"][1]
    assert "shape (2, 0)" in errors["empty"][1]
    assert report["left_behind"] == []
