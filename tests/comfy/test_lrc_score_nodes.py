"""Lyric Timestamps (LRC), Score Takes and Best of N in the real ComfyUI server, on the tiny models.

The tiny DiTs' config.json names alignment heads they have (`tests/core/tiny_models.py`), so the nodes
run on their default settings. Songs are 10 s (the shortest) and only the kept takes are decoded; the tiny random
DiT attends almost evenly, so its timestamps are checked for shape (one per line, in order, inside the
song), not for musical sense: `tests/core/test_alignment_dit.py` checks the times on a planted DiT.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import comfyui_test_env
import numpy as np
import pytest
import soundfile

from .client import ComfyClient, execution_error
from .node_definitions import check_node_definitions
from .test_core_nodes import core_models, song_prompt  # noqa: F401  (core_models is a fixture)

pytestmark = pytest.mark.usefixtures("core_models")

LYRICS = "[verse]\nla la la\nsing along now\n\n[chorus]\noh oh oh\n"
LINES = [line.strip() for line in LYRICS.splitlines() if line.strip()]
SECONDS = 10.0
ERROR_TYPE = "acestep_core.errors.AceStepError"
STAMP = re.compile(r"^\[(\d\d):(\d\d\.\d\d)\](.*)$")
NEW_NODES = {
    "AceStepLyricTimestamps": ["dit", "conditioning", "latent", "alignment_seed", "alignment_heads", "source_latent",
                               "reference"],
    "AceStepScoreTakes": ["dit", "conditioning", "latent", "alignment_seed", "alignment_heads", "pmi_scale",
                          "source_latent", "reference", "lm"],
    "AceStepBestOf": ["scores", "latent", "top_k", "rank_by", "audio"],
}


def scored_prompt(*, batch: int, seed: int, lyrics: str = LYRICS, lm: bool = False) -> dict[str, Any]:
    """A batch through the sampler into LRC, Score Takes (report previewed) and Best of N (top 2, report
    previewed) → VAE Decode → ACE-Step Save Audio with the LRC of the kept takes."""
    prompt = song_prompt(seed=seed, seconds=SECONDS, batch=batch)
    prompt["cond"]["inputs"]["lyrics"] = lyrics
    del prompt["save"]
    song = {"dit": ["dit", 0], "conditioning": ["cond", 0], "alignment_seed": 42, "alignment_heads": ""}
    prompt["lrc_all"] = {"class_type": "AceStepLyricTimestamps", "inputs": {**song, "latent": ["sample", 0]}}
    prompt["score"] = {"class_type": "AceStepScoreTakes",
                       "inputs": {**song, "latent": ["sample", 0], "pmi_scale": 0.5}}
    if lm:
        prompt["lm"] = {"class_type": "AceStepLoadLM",
                        "inputs": {"lm_name": "acestep/acestep-5Hz-lm-0.6B", "dtype": "auto", "download": False}}
        prompt["score"]["inputs"]["lm"] = ["lm", 0]
    prompt["best"] = {"class_type": "AceStepBestOf", "inputs": {
        "scores": ["score", 0], "latent": ["sample", 0], "top_k": min(2, batch), "rank_by": "total"}}
    prompt["lrc_best"] = {"class_type": "AceStepLyricTimestamps", "inputs": {**song, "latent": ["best", 0]}}
    prompt["decode"]["inputs"]["latent"] = ["best", 0]
    prompt["save"] = {"class_type": "AceStepSaveAudio", "inputs": {
        "audio": ["decode", 0], "filename_prefix": f"acestep_lrc/{uuid.uuid4().hex[:8]}", "format": "flac",
        "bit_depth": "16", "mp3_bitrate": "128k", "lrc": ["lrc_best", 0]}}
    for name, source in (("show_lrc", ["lrc_all", 0]), ("show_scores", ["score", 1]), ("show_best", ["best", 2])):
        prompt[name] = {"class_type": "PreviewAny", "inputs": {"source": source}}
    return prompt


def shown(entry: dict[str, Any], node: str) -> str:
    return entry["outputs"][node]["text"][0]


def take_blocks(text: str, takes: int) -> list[str]:
    if takes == 1:
        return [text]
    numbers, blocks = [], []
    for line in text.split("\n"):
        header = re.fullmatch(r"\[take:(\d+)\]", line)
        if header:
            numbers.append(int(header.group(1)))
            blocks.append([])
        else:
            blocks[-1].append(line)
    assert numbers == list(range(1, takes + 1)), text
    return ["\n".join(block).strip("\n") for block in blocks]


def check_lrc(text: str, lines: list[str] = LINES, seconds: float = SECONDS) -> list[float]:
    """One `[MM:SS.xx]line` per lyric line, times never going back and inside the song."""
    stamps = [STAMP.match(line) for line in text.split("\n")]
    assert all(stamps), text
    assert [stamp.group(3) for stamp in stamps] == lines
    times = [int(stamp.group(1)) * 60 + float(stamp.group(2)) for stamp in stamps]
    assert times == sorted(times) and 0.0 <= times[0] and times[-1] < seconds, times
    return times


def score_rows(report: str) -> list[list[str]]:
    return [line.split() for line in report.split("\n")[1:]]


def saved(comfy_server: comfyui_test_env.ComfyServer, entry: dict[str, Any]) -> list[Path]:
    return [comfy_server.base / "output" / item["subfolder"] / item["filename"]
            for item in entry["outputs"]["save"]["audio"]]


@pytest.fixture(scope="module")
def batch_run(comfy: ComfyClient) -> dict[str, Any]:
    entry = comfy.run(scored_prompt(batch=3, seed=31), timeout_s=300)
    assert execution_error(entry) is None, execution_error(entry)
    return entry


def test_object_info_documents_the_nodes(comfy: ComfyClient) -> None:
    check_node_definitions(comfy, NEW_NODES, "audio/ACE-Step")
    assert "`lrc`" in comfy.get(f"/extensions/{comfyui_test_env.PACK_FOLDER_NAME}/docs/AceStepSaveAudio.md").decode()


def test_lrc_has_one_timestamp_per_lyric_line_for_every_take(batch_run: dict[str, Any]) -> None:
    for block in take_blocks(shown(batch_run, "show_lrc"), 3):
        check_lrc(block)


def test_best_of_ranks_by_score_and_keeps_seeds(batch_run: dict[str, Any]) -> None:
    rows = score_rows(shown(batch_run, "show_scores"))
    assert [row[0] for row in rows] == ["1", "2", "3"]
    totals = [float(row[2]) for row in rows]
    assert all(0.0 <= total <= 1.0 for total in totals)
    assert [row[2] for row in rows] == [row[3] for row in rows], "without an LM the total is the alignment score"
    expected = sorted(range(3), key=lambda index: (-totals[index], index))[:2]
    best = shown(batch_run, "show_best").split("\n")
    assert best[0] == "best 2 of 3 by total"
    assert best[1:] == [f"#{place + 1}: take {index + 1}, seed {rows[index][1]}, score {totals[index]:.4f}"
                        for place, index in enumerate(expected)]


def test_kept_takes_are_saved_with_their_own_lrc(comfy_server: comfyui_test_env.ComfyServer,
                                                 batch_run: dict[str, Any]) -> None:
    files = saved(comfy_server, batch_run)
    assert len(files) == 2 and all(path.suffix == ".flac" for path in files)
    kept = [int(line.split(",")[0].split()[-1]) - 1 for line in shown(batch_run, "show_best").split("\n")[1:]]
    whole_batch = take_blocks(shown(batch_run, "show_lrc"), 3)
    for path, take in zip(files, kept):
        lrc = path.with_suffix(".lrc").read_text(encoding="utf-8")
        check_lrc(lrc)
        assert lrc == whole_batch[take], "a kept take is timed as it was in its batch"
    assert not list(files[0].parent.glob("*take*"))


def test_scores_and_lrc_are_deterministic(comfy: ComfyClient, batch_run: dict[str, Any]) -> None:
    """The same song again, with the heads spelled out: ComfyUI cannot reuse its cache, the values agree."""
    prompt = scored_prompt(batch=3, seed=31)
    for node in ("lrc_all", "score", "lrc_best"):
        prompt[node]["inputs"]["alignment_heads"] = '{"0": [3], "1": [0, 2]}'
    again = comfy.run(prompt, timeout_s=300)
    assert execution_error(again) is None, execution_error(again)
    for node in ("show_lrc", "show_scores", "show_best"):
        assert shown(again, node) == shown(batch_run, node), node


def test_instrumental_songs_give_an_empty_lrc_and_no_scores(comfy: ComfyClient,
                                                            comfy_server: comfyui_test_env.ComfyServer) -> None:
    entry = comfy.run(scored_prompt(batch=2, seed=32, lyrics="[Instrumental]"), timeout_s=300)
    assert execution_error(entry) is None, execution_error(entry)
    assert take_blocks(shown(entry, "show_lrc"), 2) == ["", ""]
    assert [row[2:] for row in score_rows(shown(entry, "show_scores"))] == [["-", "-", "-", "-"]] * 2
    best = shown(entry, "show_best").split("\n")
    assert [line.split(",")[0] for line in best[1:]] == ["#1: take 1", "#2: take 2"], "unscored takes keep batch order"
    assert all(line.endswith("score unscored") for line in best[1:])
    files = saved(comfy_server, entry)
    assert [path.with_suffix(".lrc").read_text(encoding="utf-8") for path in files] == ["", ""]


def test_lm_quality_score_joins_the_total(comfy: ComfyClient) -> None:
    entry = comfy.run(scored_prompt(batch=2, seed=33, lm=True), timeout_s=300)
    assert execution_error(entry) is None, execution_error(entry)
    for row in score_rows(shown(entry, "show_scores")):
        total, alignment, quality = float(row[2]), float(row[3]), float(row[5])
        assert 0.0 <= quality <= 1.0 and "caption" in " ".join(row[6:])
        assert total == pytest.approx((alignment + quality) / 2, abs=1e-4)


def _error(comfy: ComfyClient, prompt: dict[str, Any]) -> dict[str, Any]:
    entry = comfy.run(prompt, timeout_s=300)
    error = execution_error(entry)
    assert error is not None, "the prompt ran"
    assert error["exception_type"] == ERROR_TYPE, error
    return error


@pytest.mark.parametrize("node, field, value, parts", [
    ("lrc_all", "alignment_heads", "6: [1]", ["alignment_heads '6: [1]' is not JSON"]),
    ("lrc_all", "alignment_heads", '{"9": [0]}', ["None of the lyric-alignment heads", "lyric_alignment_layers_config"]),
    ("best", "top_k", 3, ["ACE-Step Best of N: top_k is 3 but the batch holds 2 takes"]),
    ("lrc_all", "latent", ["latent", 0], ["latent: connect the LATENT output of ACE-Step DiT Sampler"]),
])
def test_bad_inputs_are_node_errors_naming_the_field(comfy: ComfyClient, node: str, field: str, value: Any,
                                                     parts: list[str]) -> None:
    prompt = scored_prompt(batch=2, seed=34)
    prompt[node]["inputs"][field] = value
    error = _error(comfy, prompt)
    assert error["node_id"] == node, error
    for part in parts:
        assert part in error["exception_message"], error["exception_message"]


def test_scores_of_another_batch_are_refused(comfy: ComfyClient) -> None:
    prompt = scored_prompt(batch=2, seed=35)
    prompt["other"] = song_prompt(seed=36, seconds=SECONDS, batch=2)["sample"]
    prompt["best"]["inputs"]["latent"] = ["other", 0]
    error = _error(comfy, prompt)
    assert error["node_id"] == "best" and "scores belong to takes with seeds" in error["exception_message"]


def test_a_cover_is_timed_with_its_source_and_refused_without(comfy: ComfyClient) -> None:
    prompt = song_prompt("cover", seed=37, source=True)
    prompt["cond"]["inputs"]["lyrics"] = LYRICS
    del prompt["save"], prompt["decode"]
    prompt["lrc"] = {"class_type": "AceStepLyricTimestamps", "inputs": {
        "dit": ["dit", 0], "conditioning": ["cond", 0], "latent": ["sample", 0], "alignment_seed": 42,
        "alignment_heads": "", "source_latent": ["latent", 0]}}
    prompt["show"] = {"class_type": "PreviewAny", "inputs": {"source": ["lrc", 0]}}
    entry = comfy.run(prompt, timeout_s=300)
    assert execution_error(entry) is None, execution_error(entry)
    check_lrc(shown(entry, "show"), seconds=6.0)
    del prompt["lrc"]["inputs"]["source_latent"]
    error = _error(comfy, prompt)
    assert error["node_id"] == "lrc"
    assert "ACE-Step Lyric Timestamps (LRC): source_latent: this song is a cover" in error["exception_message"]


def test_decoded_batch_passes_through_with_the_same_pick(comfy: ComfyClient,
                                                         comfy_server: comfyui_test_env.ComfyServer) -> None:
    """Best of N on AUDIO keeps the same takes as on the LATENT: decode-then-pick equals pick-then-decode."""
    prompt = scored_prompt(batch=3, seed=31)
    prompt["decode_all"] = {**prompt["decode"], "inputs": {**prompt["decode"]["inputs"], "latent": ["sample", 0]}}
    prompt["best"]["inputs"]["audio"] = ["decode_all", 0]
    prompt["save_picked"] = {"class_type": "AceStepSaveAudio", "inputs": {
        **prompt["save"]["inputs"], "audio": ["best", 1], "filename_prefix": f"acestep_lrc/{uuid.uuid4().hex[:8]}"}}
    entry = comfy.run(prompt, timeout_s=300)
    assert execution_error(entry) is None, execution_error(entry)
    picked = [comfy_server.base / "output" / item["subfolder"] / item["filename"]
              for item in entry["outputs"]["save_picked"]["audio"]]
    decoded = saved(comfy_server, entry)
    assert len(picked) == len(decoded) == 2
    for first, second in zip(picked, decoded):
        a, b = soundfile.read(first)[0], soundfile.read(second)[0]
        assert a.shape == b.shape and np.abs(a - b).max() < 2e-3
        assert first.with_suffix(".lrc").read_text(encoding="utf-8") == second.with_suffix(".lrc").read_text(
            encoding="utf-8")
