"""Downloading official models: never at import, offline errors that say what to do, and the Hub call itself.

No test reaches Hugging Face: every test runs with HF_HUB_OFFLINE=1 and `snapshot_download` replaced by a
function that fails loudly unless a test installs a fake that writes the files a real download would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from acestep_core import checkpoint_download as D
from acestep_core.checkpoints import load_dit
from acestep_core.errors import AceStepError
from tests.core import tiny_layouts as T


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"a test tried to reach Hugging Face: {args} {kwargs}")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[..., None]], list[dict]]:
    """Turn offline mode off and install `fake` as snapshot_download; returns the list of recorded calls."""
    def install(fake: Callable[..., None]) -> list[dict]:
        calls: list[dict] = []
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

        def record(**kwargs: Any) -> None:
            calls.append(kwargs)
            fake(**kwargs)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", record)
        return calls
    return install


def _fake_hub(repos: dict[str, dict[str, Callable[[Path], None]]]) -> Callable[..., None]:
    """A snapshot_download that writes the files of `repos` (repo id → path in repo → writer) that match the
    allow_patterns, with the Hub's fnmatch rules."""
    import fnmatch

    def download(repo_id: str, local_dir: str, allow_patterns: list[str], **_: Any) -> None:
        for repo_path, write in repos[repo_id].items():
            if any(fnmatch.fnmatch(repo_path, pattern) for pattern in allow_patterns):
                target = Path(local_dir) / repo_path
                target.parent.mkdir(parents=True, exist_ok=True)
                write(target)
    return download


def _copy_from(folder: Path, name: str) -> Callable[[Path], None]:
    return lambda target: target.write_bytes((folder / name).read_bytes())


def test_complete_folder_needs_no_network(tmp_path: Path) -> None:
    T.write_official_dit(tmp_path / "acestep-v15-turbo")
    assert D.missing_files("acestep-v15-turbo", tmp_path) == []
    assert D.ensure_model("acestep-v15-turbo", tmp_path) == tmp_path / "acestep-v15-turbo"


def test_offline_error_lists_files_folder_and_command(tmp_path: Path) -> None:
    T.write_official_vae(tmp_path / "vae")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(AceStepError) as error:
        D.ensure_model("vae", tmp_path)
    message = str(error.value)
    assert "offline mode is on" in message
    assert f"Missing in {tmp_path / 'vae'}: diffusion_pytorch_model.safetensors" in message
    assert "https://huggingface.co/ACE-Step/Ace-Step1.5/tree/main/vae" in message
    assert f'hf download ACE-Step/Ace-Step1.5 --include "vae/*" --local-dir "{tmp_path}"' in message


def test_separate_repo_instructions_and_download_switch(tmp_path: Path) -> None:
    with pytest.raises(AceStepError) as error:
        D.ensure_model("acestep-v15-sft", tmp_path, allow_download=False)
    message = str(error.value)
    assert "downloading is off" in message
    assert "config.json, model.safetensors, silence_latent.pt" in message
    assert f'hf download ACE-Step/acestep-v15-sft --local-dir "{tmp_path / "acestep-v15-sft"}"' in message


def test_missing_shards_count_as_missing(tmp_path: Path) -> None:
    folder = T.write_sharded_dit(tmp_path / "acestep-v15-xl-turbo", "xl", shards=2)
    (folder / "model-00001-of-00002.safetensors").unlink()
    assert D.missing_files("acestep-v15-xl-turbo", tmp_path) == ["model-00001-of-00002.safetensors"]


def test_unknown_model_name(tmp_path: Path) -> None:
    with pytest.raises(AceStepError, match="Unknown official model 'acestep-v2'"):
        D.ensure_model("acestep-v2", tmp_path)


def test_main_repo_subfolder_download(tmp_path: Path, online) -> None:
    source = T.write_official_dit(tmp_path / "source", "2b", torch.bfloat16)
    hub = {f"acestep-v15-turbo/{name}": _copy_from(source, name)
           for name in ("config.json", "model.safetensors", "silence_latent.pt")}
    hub["acestep-v15-turbo/modeling_acestep_v15_turbo.py"] = lambda target: target.write_text("code")
    calls = online(_fake_hub({D.MAIN_REPO: hub}))
    models = tmp_path / "models"
    folder = D.ensure_model("acestep-v15-turbo", models)
    assert folder == models / "acestep-v15-turbo"
    assert calls == [{"repo_id": "ACE-Step/Ace-Step1.5", "local_dir": str(models),
                      "allow_patterns": [f"acestep-v15-turbo/{p}" for p in D.FILE_PATTERNS]}]
    assert not (folder / "modeling_acestep_v15_turbo.py").exists()
    assert load_dit(folder).info.dit.variant == "turbo"


def test_separate_repo_without_silence_latent_gets_the_main_repos(tmp_path: Path, online) -> None:
    source = T.write_official_dit(tmp_path / "source", "xl", is_turbo=False)
    hub = {"ACE-Step/acestep-v15-xl-sft": {n: _copy_from(source, n) for n in ("config.json", "model.safetensors")},
           D.MAIN_REPO: {"acestep-v15-turbo/silence_latent.pt": _copy_from(source, "silence_latent.pt"),
                         "acestep-v15-turbo/config.json": _copy_from(source, "config.json")}}
    calls = online(_fake_hub(hub))
    folder = D.ensure_model("acestep-v15-xl-sft", tmp_path / "models")
    assert [c["repo_id"] for c in calls] == ["ACE-Step/acestep-v15-xl-sft", "ACE-Step/Ace-Step1.5"]
    assert calls[0]["local_dir"] == str(folder)
    assert calls[1]["allow_patterns"] == ["acestep-v15-turbo/silence_latent.pt"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "silence_latent.pt"]
    loaded = load_dit(folder)
    assert loaded.info.dit.variant == "sft" and loaded.info.dit.family == "xl"


@pytest.mark.parametrize("failure", [
    OSError("Network is unreachable"),
    LocalEntryNotFoundError("cannot reach the Hub"),
])
def test_connection_errors_become_instructions(tmp_path: Path, online, failure: Exception) -> None:
    def fail(**_: Any) -> None:
        raise failure
    online(fail)
    with pytest.raises(AceStepError) as error:
        D.ensure_model("Qwen3-Embedding-0.6B", tmp_path)
    message = str(error.value)
    assert "Could not download Qwen3-Embedding-0.6B" in message and type(failure).__name__ in message
    assert "config.json, model.safetensors, tokenizer.json, tokenizer_config.json" in message


def test_incomplete_download_is_reported(tmp_path: Path, online) -> None:
    online(_fake_hub({"ACE-Step/acestep-5Hz-lm-4B": {
        "config.json": lambda target: target.write_text(json.dumps({"model_type": "qwen3"}))}}))
    with pytest.raises(AceStepError) as error:
        D.ensure_model("acestep-5Hz-lm-4B", tmp_path)
    assert "still lacks model.safetensors, tokenizer.json, tokenizer_config.json" in str(error.value)


def test_silence_latent_for_a_comfy_file(tmp_path: Path, online) -> None:
    file = T.write_comfy_dit(tmp_path / "diffusion_models" / "acestep_v1.5_turbo.safetensors")
    with pytest.raises(AceStepError) as error:
        D.download_silence_latent(file.parent)
    assert "offline mode is on" in str(error.value) and "silence_latent.pt" in str(error.value)
    source = T.write_official_dit(tmp_path / "source")
    online(_fake_hub({D.MAIN_REPO: {"acestep-v15-turbo/silence_latent.pt": _copy_from(source, "silence_latent.pt"),
                                    "acestep-v15-turbo/config.json": _copy_from(source, "config.json")}}))
    assert D.download_silence_latent(file.parent) == file.parent / "silence_latent.pt"
    assert sorted(p.name for p in file.parent.iterdir()) == ["acestep_v1.5_turbo.safetensors", "silence_latent.pt"]
    assert torch.equal(load_dit(file).silence_latent, T.golden_silence("2b"))


def test_importing_does_not_download() -> None:
    """The modules do not even import huggingface_hub until a download is asked for."""
    code = ("import sys, acestep_core.checkpoints, acestep_core.checkpoint_download, "
            "acestep_core.checkpoint_discovery; print('huggingface_hub' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
