"""Listing the ACE-Step 1.5 models under one or more models folders, for loader menus and the CLI.

Two layouts are recognised in every root, and may be mixed:
- official Hugging Face folders (a folder with `config.json` and weights), directly under the root or one
  level deeper (`<root>/acestep-v15-turbo/`, `<root>/Ace-Step1.5/vae/`, `<root>/checkpoints/Qwen3-Embedding-0.6B/`);
- ComfyUI's model folders under the root (`diffusion_models`, `unet`, `vae`, `text_encoders`, `clip`,
  `checkpoints`), searched recursively for `.safetensors` files; an all-in-one checkpoint yields one entry per
  network it holds, all pointing at the same file.

Only headers and `config.json` are read. Files of other models are skipped silently; files that look damaged
are listed with their error, so a menu can say why a download does not show up as usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from acestep_core.checkpoint_identify import ModelInfo
from acestep_core.checkpoint_io import PathLike
from acestep_core.checkpoints import FOLDER_WEIGHTS, identify
from acestep_core.errors import AceStepError

COMFY_FOLDERS = ("diffusion_models", "unet", "vae", "text_encoders", "clip", "checkpoints")
KINDS = ("dit", "vae", "text_encoder", "lm")


@dataclass(frozen=True)
class ModelEntry:
    """One usable network: its kind, what to pass to the loader, a menu label, and how it was found.

    `error` is set (and `info` is None) for a file that could not be read; such entries have kind "unknown".
    """

    kind: str
    path: Path
    label: str
    layout: str
    info: Optional[ModelInfo] = None
    error: Optional[str] = None


def discover_models(roots: Iterable[PathLike], kinds: Iterable[str] = KINDS) -> list[ModelEntry]:
    """Every model of the given kinds under `roots`, sorted by kind and label, each weights file once."""
    wanted = set(kinds)
    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    for root in (Path(r).expanduser() for r in roots):
        if not root.is_dir():
            continue
        for folder in _official_folders(root):
            entries += _entries(folder, folder.name, seen)
        for file in _comfy_files(root):
            entries += _entries(file, file.relative_to(root).as_posix(), seen)
    usable = [e for e in entries if e.kind in wanted or e.error is not None]
    return sorted(usable, key=lambda e: (e.kind, e.label))


def _official_folders(root: Path) -> Iterator[Path]:
    for child in _subfolders(root):
        if _is_model_folder(child):
            yield child
        else:
            yield from (grandchild for grandchild in _subfolders(child) if _is_model_folder(grandchild))


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in FOLDER_WEIGHTS)


def _comfy_files(root: Path) -> Iterator[Path]:
    for name in COMFY_FOLDERS:
        folder = root / name
        if folder.is_dir():
            yield from sorted(p for p in folder.rglob("*.safetensors")
                              if p.is_file() and not _is_model_folder(p.parent) and p.stem != "silence_latent")


def _entries(path: Path, name: str, seen: set[Path]) -> list[ModelEntry]:
    key = path.resolve()
    if key in seen:
        return []
    seen.add(key)
    try:
        infos = identify(path)
    except AceStepError as error:
        return [ModelEntry("unknown", path, f"{name} (unreadable)", "unknown", error=str(error))]
    aio = len(infos) > 1
    return [ModelEntry(info.kind, path, _label(name, info, aio), info.layout, info) for info in infos]


def _label(name: str, info: ModelInfo, aio: bool) -> str:
    what = info.dit.describe().removeprefix("ACE-Step 1.5 ") if info.dit is not None else info.kind.replace("_", " ")
    return f"{name} ({what}{', all-in-one' if aio else ''})"
