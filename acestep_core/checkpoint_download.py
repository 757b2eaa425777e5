"""Downloading the official ACE-Step 1.5 models into a folder the caller names, only when asked.

The official layout (lm-text-vae.md §6.1) is one folder per model under a models folder: the main repo
`ACE-Step/Ace-Step1.5` holds `acestep-v15-turbo/`, `vae/`, `Qwen3-Embedding-0.6B/` and `acestep-5Hz-lm-1.7B/`;
every other model is a repo of its own (`ACE-Step/acestep-v15-sft`, …) downloaded into `<models>/<name>/`.
Only weights, configs, tokenizer files and the silence latent are fetched; the repos' Python files are not
(we never run them). Nothing touches the network at import time, and when Hugging Face cannot be reached
(offline mode or a connection error) the error lists the missing files, where they go and how to fetch them
by hand.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from acestep_core.checkpoint_io import PathLike, read_json
from acestep_core.errors import AceStepError

MAIN_REPO = "ACE-Step/Ace-Step1.5"
HUB_URL = "https://huggingface.co"
FILE_PATTERNS = ("*.json", "*.safetensors", "*.pt", "*.txt", "*.jinja")
SILENCE_LATENT = "silence_latent.pt"
SILENCE_SOURCE = "acestep-v15-turbo/silence_latent.pt"
_STAGING = ".acestep-download"
_TRUE = {"1", "on", "yes", "true"}

_DIT_FILES = (("config.json",), ("model.safetensors", "model.safetensors.index.json"), (SILENCE_LATENT,))
_QWEN_FILES = (("config.json",), ("model.safetensors", "model.safetensors.index.json"), ("tokenizer.json",),
               ("tokenizer_config.json",))
_VAE_FILES = (("config.json",), ("diffusion_pytorch_model.safetensors",))


@dataclass(frozen=True)
class OfficialModel:
    """One downloadable model: its folder name, repo, subfolder in the main repo (or None) and needed files.

    `required` lists alternatives per slot: any one file of a tuple will do (single or sharded weights).
    """

    name: str
    kind: str
    repo_id: str
    subfolder: Optional[str]
    required: tuple[tuple[str, ...], ...]

    def page(self) -> str:
        return f"{HUB_URL}/{self.repo_id}" + (f"/tree/main/{self.subfolder}" if self.subfolder else "")


def _separate(name: str, kind: str, required: tuple[tuple[str, ...], ...]) -> OfficialModel:
    return OfficialModel(name, kind, f"ACE-Step/{name}", None, required)


OFFICIAL_MODELS: dict[str, OfficialModel] = {m.name: m for m in (
    OfficialModel("acestep-v15-turbo", "dit", MAIN_REPO, "acestep-v15-turbo", _DIT_FILES),
    OfficialModel("vae", "vae", MAIN_REPO, "vae", _VAE_FILES),
    OfficialModel("Qwen3-Embedding-0.6B", "text_encoder", MAIN_REPO, "Qwen3-Embedding-0.6B", _QWEN_FILES),
    OfficialModel("acestep-5Hz-lm-1.7B", "lm", MAIN_REPO, "acestep-5Hz-lm-1.7B", _QWEN_FILES),
    *(_separate(f"acestep-v15-{v}", "dit", _DIT_FILES)
      for v in ("sft", "base", "turbo-shift1", "turbo-shift3", "turbo-continuous", "xl-turbo", "xl-sft", "xl-base")),
    *(_separate(f"acestep-5Hz-lm-{size}", "lm", _QWEN_FILES) for size in ("0.6B", "4B")),
)}


def official_model(name: str) -> OfficialModel:
    if name not in OFFICIAL_MODELS:
        raise AceStepError(f"Unknown official model {name!r}; known: {', '.join(OFFICIAL_MODELS)}.")
    return OFFICIAL_MODELS[name]


def is_offline() -> bool:
    """Hugging Face offline mode, read from the environment now (huggingface_hub reads it once at import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def missing_files(name: str, models_dir: PathLike) -> list[str]:
    """Files of `name` that `<models_dir>/<name>/` lacks (one name per slot; shards listed by an index too)."""
    model = official_model(name)
    folder = Path(models_dir).expanduser() / name
    missing = []
    for slot in model.required:
        present = [f for f in slot if (folder / f).is_file()]
        if not present:
            missing.append(slot[0])
        elif present[0].endswith(".index.json"):
            shards = sorted(set(read_json(folder / present[0]).get("weight_map", {}).values()))
            missing += [s for s in shards if not (folder / s).is_file()]
    return missing


def manual_instructions(model: OfficialModel, models_dir: Path, missing: list[str]) -> str:
    """Which files to fetch, from where, into which folder, and a command that does it."""
    folder = models_dir / model.name
    if model.subfolder:
        command = f'hf download {model.repo_id} --include "{model.subfolder}/*" --local-dir "{models_dir}"'
    else:
        command = f'hf download {model.repo_id} --local-dir "{folder}"'
    return (f"Missing in {folder}: {', '.join(missing)}. Download them from {model.page()} into {folder}, "
            f"e.g. with `{command}` (`huggingface-cli download` on older huggingface_hub versions).")


def _network_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises when the Hub cannot be reached or refuses (requests- and httpx-based versions)."""
    from huggingface_hub import errors

    names = ("HTTPError", "HfHubHTTPError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "XetDownloadError",
             "IncompleteSnapshotError")
    found = [getattr(errors, n, None) for n in names]
    return (OSError, *(cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseException)))


def _snapshot(repo_id: str, local_dir: Path, patterns: list[str], what: str, instructions: str,
              tqdm_class: Any = None) -> None:
    import huggingface_hub

    local_dir.mkdir(parents=True, exist_ok=True)
    options = {"tqdm_class": tqdm_class} if tqdm_class is not None else {}
    try:
        huggingface_hub.snapshot_download(repo_id=repo_id, local_dir=str(local_dir), allow_patterns=patterns, **options)
    except _network_errors() as error:
        raise AceStepError(
            f"Could not download {what} from Hugging Face ({type(error).__name__}: {error}). {instructions}"
        ) from error


def ensure_model(name: str, models_dir: PathLike, *, allow_download: bool = True, tqdm_class: Any = None) -> Path:
    """`<models_dir>/<name>/` with every needed file, downloading what is missing when allowed and online.

    A DiT repo that ships no `silence_latent.pt` gets the main repo's (the VAE latent of silence, shared by the
    DiTs; the sft repo's copy is the same file as turbo's).
    """
    model = official_model(name)
    models_dir = Path(models_dir).expanduser()
    folder = models_dir / name
    missing = missing_files(name, models_dir)
    if not missing:
        return folder
    instructions = manual_instructions(model, models_dir, missing)
    if not allow_download:
        raise AceStepError(f"{name} is not complete and downloading is off. {instructions}")
    if is_offline():
        raise AceStepError(
            f"{name} is not complete and Hugging Face offline mode is on (HF_HUB_OFFLINE). {instructions}"
        )
    prefix = f"{model.subfolder}/" if model.subfolder else ""
    target = models_dir if model.subfolder else folder
    _snapshot(model.repo_id, target, [prefix + p for p in FILE_PATTERNS], name, instructions, tqdm_class)
    if model.kind == "dit" and missing_files(name, models_dir) == [SILENCE_LATENT]:
        download_silence_latent(folder)
    still = missing_files(name, models_dir)
    if still:
        raise AceStepError(
            f"Downloaded {model.repo_id} but {folder} still lacks {', '.join(still)}; the repo layout may have "
            f"changed. {manual_instructions(model, models_dir, still)}"
        )
    return folder


def download_silence_latent(folder: PathLike, *, allow_download: bool = True) -> Path:
    """Put the official `silence_latent.pt` (3.8 MB, from the turbo folder of the main repo) into `folder`.

    For ComfyUI single-file DiTs, which ship none. An existing file is kept as it is.
    """
    folder = Path(folder).expanduser()
    target = folder / SILENCE_LATENT
    if target.is_file():
        return target
    instructions = (f"Download {HUB_URL}/{MAIN_REPO}/blob/main/{SILENCE_SOURCE} and save it as {target}, e.g. with "
                    f'`hf download {MAIN_REPO} {SILENCE_SOURCE} --local-dir "{folder / _STAGING}"` and moving it.')
    if not allow_download or is_offline():
        reason = "downloading is off" if not allow_download else "Hugging Face offline mode is on (HF_HUB_OFFLINE)"
        raise AceStepError(f"{target} is missing and {reason}. {instructions}")
    staging = folder / _STAGING
    try:
        _snapshot(MAIN_REPO, staging, [SILENCE_SOURCE], "the silence latent", instructions)
        fetched = staging / SILENCE_SOURCE
        if not fetched.is_file():
            raise AceStepError(f"The download of {SILENCE_SOURCE} from {MAIN_REPO} gave no file. {instructions}")
        shutil.move(str(fetched), str(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
