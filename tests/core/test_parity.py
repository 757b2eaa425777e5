"""Parity of every network with the official implementation, on the golden tensors, per component."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_core import verify
from acestep_core.parity import check_case, load_cases
from tests.conftest import GOLDEN

CASES = {case.file: case for case in load_cases(GOLDEN)}


def _ids(kind: str) -> list[str]:
    return sorted(name for name, case in CASES.items() if kind in case.call["function"])


@pytest.mark.parametrize("case_file", _ids("encoder.forward"))
def test_condition_encoder(case_file):
    _assert_case(case_file)


@pytest.mark.parametrize("case_file", _ids("decoder.forward"))
def test_dit_decoder(case_file):
    _assert_case(case_file)


@pytest.mark.parametrize("case_file", [n for n in _ids("tokenize(") if "get_output_from_indices" not in
                                       CASES[n].call["function"]])
def test_audio_tokenizer(case_file):
    _assert_case(case_file)


@pytest.mark.parametrize("case_file", _ids("get_output_from_indices"))
def test_audio_detokenizer(case_file):
    _assert_case(case_file)


@pytest.mark.parametrize("case_file", _ids("AutoencoderOobleck"))
def test_vae(case_file):
    _assert_case(case_file)


@pytest.mark.parametrize("case_file", _ids("generate_audio"))
def test_sampling_run(case_file):
    _assert_case(case_file)


def test_verify_cli_on_the_whole_golden_folder(capsys):
    assert verify.main(["--golden", str(GOLDEN)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    outputs = sum(1 for case in CASES.values() for t in case.entry["tensors"] if t["name"].startswith("output."))
    assert lines[-1] == f"{outputs} passed, 0 failed"


def _assert_case(case_file: str) -> None:
    torch.set_num_threads(1)
    results = check_case(CASES[case_file])
    assert results, "the case has no output tensors"
    failures = [r for r in results if not r.passed]
    assert not failures, "\n".join(f"{r.name}: max_abs={r.max_abs:.3e} rel_l2={r.rel_l2:.3e} {r.note}"
                                   for r in failures)


def _copy_single_case(tmp_path, case_file):
    index = json.loads((GOLDEN / "index.json").read_text())
    entry = next(e for e in index["files"] if e["file"] == case_file)
    shutil.copytree(GOLDEN / "tiny_2b", tmp_path / "tiny_2b")
    (tmp_path / "index.json").write_text(json.dumps({"files": [entry]}))
    return tmp_path / case_file


def test_verify_cli_passes_a_matching_case(tmp_path, capsys):
    _copy_single_case(tmp_path, "tiny_2b/dit_decoder_t_ne_r.safetensors")
    assert verify.main(["--golden", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "output.velocity" in out and out.strip().endswith("1 passed, 0 failed")


def test_verify_cli_fails_on_a_perturbed_output(tmp_path, capsys):
    path = _copy_single_case(tmp_path, "tiny_2b/dit_decoder_t_ne_r.safetensors")
    tensors = load_file(str(path))
    tensors["output.velocity"] = tensors["output.velocity"] * (1 + 1e-3)
    save_file(tensors, str(path))
    assert verify.main(["--golden", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and out.strip().endswith("0 passed, 1 failed")


def test_verify_cli_counts_unknown_calls_as_failed(tmp_path, capsys):
    path = _copy_single_case(tmp_path, "tiny_2b/dit_decoder_t_ne_r.safetensors")
    index = json.loads((tmp_path / "index.json").read_text())
    index["files"][0]["call"]["function"] = "something.we.do.not.know"
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert verify.main(["--golden", str(tmp_path)]) == 1
    assert "not yet supported" in capsys.readouterr().out
    assert path.exists()
