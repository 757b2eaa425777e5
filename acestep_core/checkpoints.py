"""Find, identify and load ACE-Step 1.5 model files: the DiT, the VAE, the text encoder and the 5 Hz LM.

Accepted inputs, for every loader:
- an official Hugging Face folder (`acestep-v15-turbo/`, `vae/`, `Qwen3-Embedding-0.6B/`, `acestep-5Hz-lm-*/`,
  `config.json` plus `model.safetensors`, its sharded form, or `diffusion_pytorch_model.safetensors`), or a
  weights file inside one;
- a ComfyUI file: `diffusion_models/acestep_v1.5_*.safetensors`, `vae/ace_1.5_vae.safetensors`,
  `text_encoders/qwen_*_ace15.safetensors`, or the all-in-one `checkpoints/*.safetensors`, from which each loader
  takes its own network.

Renaming to the official names happens in `checkpoint_keys`, identification in `checkpoint_identify`; this
module builds the network without random initialisation, checks every name and shape before reading data
(strict, with a message naming the file), then reads the tensors straight into the requested dtype/device.

Silence latent: a DiT folder ships `silence_latent.pt`; ComfyUI files ship none (ComfyUI synthesises an
approximation in code, which we do not copy because it differs from the official tensor). The DiT loader
therefore looks beside the weights, then takes `silence_latent=` if given, and otherwise raises an error that
says where to get the 3.8 MB official file (or call `checkpoint_download.download_silence_latent`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from acestep_core.checkpoint_identify import (
    DitVariant, ModelInfo, identify_dit, infer_dit_config, infer_qwen_config, infer_vae_config, name_tokens,
)
from acestep_core.checkpoint_io import (
    CheckpointFiles, PathLike, describe_dtypes, open_checkpoint, read_json, read_silence_latent, read_tensors,
    resolve_dtype,
)
from acestep_core.checkpoint_keys import DIT, LM, QWEN, TEXT_ENCODER, VAE, Component, find_components, qwen_role
from acestep_core.errors import AceStepError

Device = Union[str, torch.device]
DtypeLike = Union[str, torch.dtype, None]

# Weight file names of the official folders, in order of preference.
FOLDER_WEIGHTS = ("model.safetensors.index.json", "model.safetensors",
                  "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors")
SILENCE_LATENT_FILES = ("silence_latent.pt", "silence_latent.safetensors")
SILENCE_LATENT_URL = "https://huggingface.co/ACE-Step/Ace-Step1.5/blob/main/acestep-v15-turbo/silence_latent.pt"
_SHARD_NAME = re.compile(r"^(.+)-\d{5}-of-\d{5}\.safetensors$")
_INFERRED_NOTE = "{} not stored in the weights: the released models' values assumed"
_KIND_LABELS = {DIT: "DiT", VAE: "VAE", TEXT_ENCODER: "text encoder", LM: "5 Hz LM"}
_LOADERS = {DIT: "load_dit", VAE: "load_vae", TEXT_ENCODER: "load_text_encoder", LM: "read_qwen(role='lm')"}


@dataclass(frozen=True)
class Located:
    """The weights to read (a file or a shard index) and the official folder around them, if any."""

    path: Path
    weights: Path
    folder: Optional[Path]

    @property
    def names(self) -> tuple[str, ...]:
        """Folder and file names that may carry variant tokens (never the user's parent folders)."""
        return (self.folder.name,) if self.folder else (self.weights.stem,)


@dataclass(frozen=True)
class LoadedDit:
    """A DiT ready to run, what it is, and its silence latent `[1, T, C]` in the model dtype (None if absent)."""

    model: Any
    info: ModelInfo
    silence_latent: Optional[torch.Tensor]


@dataclass(frozen=True)
class LoadedVae:
    model: Any
    info: ModelInfo


@dataclass(frozen=True)
class QwenWeights:
    """A Qwen3 stack in official form: `config.json` dict, un-prefixed tensors, and the folder holding its
    tokenizer files (None for a single file)."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    info: ModelInfo
    tokenizer_folder: Optional[Path]


@dataclass(frozen=True)
class LoadedTextEncoder:
    encoder: Any
    info: ModelInfo


def locate(path: PathLike) -> Located:
    """Resolve a model folder or weights file to the weights to read and the folder with `config.json`."""
    path = Path(path).expanduser()
    if path.is_dir():
        return Located(path, _folder_weights(path), path)
    if not path.exists():
        raise AceStepError(
            f"{path}: not found. Check the path, or download the model (acestep_core.checkpoint_download)."
        )
    shard = _SHARD_NAME.match(path.name)
    if shard and (path.parent / f"{shard.group(1)}.safetensors.index.json").is_file():
        return Located(path, path.parent / f"{shard.group(1)}.safetensors.index.json", path.parent)
    official_name = path.name in FOLDER_WEIGHTS and (path.parent / "config.json").is_file()
    return Located(path, path, path.parent if official_name else None)


def _folder_weights(folder: Path) -> Path:
    for name in FOLDER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    files = [p for p in folder.glob("*.safetensors") if p.stem != "silence_latent"]
    if len(files) == 1:
        return files[0]
    models = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file())
    hint = f" It looks like a folder of models; pick one of: {', '.join(models)}." if models else ""
    raise AceStepError(
        f"{folder}: no model weights found (expected model.safetensors, its sharded index, or "
        f"diffusion_pytorch_model.safetensors).{hint}"
    )


def _select(files: CheckpointFiles, kind: str) -> Component:
    """The one network of `kind` (DIT, VAE, TEXT_ENCODER or LM) in the checkpoint, else a clear error."""
    components = find_components(files)
    if kind in (TEXT_ENCODER, LM):
        qwens = [c for c in components if c.kind == QWEN]
        matching = [c for c in qwens if qwen_role(c) == kind] or [c for c in qwens if qwen_role(c) is None]
    else:
        matching = [c for c in components if c.kind == kind]
    if len(matching) == 1:
        return matching[0]
    what = _KIND_LABELS[kind]
    if len(matching) > 1:
        raise AceStepError(
            f"{files.source}: holds {len(matching)} {what} networks ({', '.join(c.describe() for c in matching)}); "
            "use a file with one."
        )
    if components:
        loaders = sorted({_LOADERS[_role(c) or TEXT_ENCODER] for c in components})
        raise AceStepError(
            f"{files.source}: not a {what} checkpoint; it holds {', '.join(c.describe() for c in components)}. "
            f"Load it with {' / '.join(loaders)}, or pick the {what} file."
        )
    first = ", ".join(sorted(files.tensors)[:4])
    raise AceStepError(
        f"{files.source}: not an ACE-Step 1.5 checkpoint: none of its {len(files.tensors)} tensors has a known "
        f"name (first: {first}). Pick the {what} file of ACE-Step 1.5."
    )


def _role(component: Component) -> Optional[str]:
    return qwen_role(component) if component.kind == QWEN else component.kind


def _info(kind: str, located: Located, files: CheckpointFiles, component: Component, config_source: str,
          config: Any, dit: Optional[DitVariant] = None, notes: tuple[str, ...] = ()) -> ModelInfo:
    stored = describe_dtypes(ref.dtype for ref in component.refs.values())
    return ModelInfo(kind, located.path, tuple(files.files), component.layout, stored, config_source, config,
                     dit, notes)


def _config_json(located: Located) -> Optional[dict[str, Any]]:
    if located.folder is None or not (located.folder / "config.json").is_file():
        return None
    return read_json(located.folder / "config.json")


def _describe_dit(located: Located, files: CheckpointFiles, component: Component, config: Any = None,
                 variant: Optional[str] = None) -> ModelInfo:
    """Config and identity of a DiT component without reading tensor data."""
    from acestep_core.models.config import AceStepConfig

    config_json = _config_json(located)
    notes: list[str] = []
    if isinstance(config, AceStepConfig):
        values, source = config.to_dict(), "given"
    elif config is not None:
        values, source = (dict(config) if isinstance(config, Mapping) else read_json(config)), "given"
    elif config_json is not None:
        values, source = config_json, "config.json"
    else:
        values, source = infer_dit_config(component.shapes(), str(files.source)), "inferred from weights"
        notes.append(_INFERRED_NOTE.format("sliding window, layer types, RoPE theta, RMSNorm eps, FSQ levels"))
    parsed = AceStepConfig.from_dict(values)
    dit = identify_dit(parsed.family, config_json if source == "config.json" else values, located.names, variant)
    if "xl" in name_tokens(*located.names) and not parsed.is_xl:
        notes.append("the name says XL but the config is a 2B one")
    return _info(DIT, located, files, component, source, parsed, dit, tuple(notes))


def _describe_vae(located: Located, files: CheckpointFiles, component: Component) -> ModelInfo:
    from acestep_core.models.vae import OobleckConfig

    config_json = _config_json(located)
    if config_json is not None:
        return _info(VAE, located, files, component, "config.json", OobleckConfig.from_dict(config_json))
    values = infer_vae_config(component.shapes(), str(files.source))
    return _info(VAE, located, files, component, "inferred from weights", OobleckConfig.from_dict(values),
                 notes=(_INFERRED_NOTE.format("48 kHz sample rate"),))


def _describe_qwen(located: Located, files: CheckpointFiles, component: Component, role: str) -> ModelInfo:
    config_json = _config_json(located)
    if config_json is not None:
        return _info(role, located, files, component, "config.json", config_json)
    values = infer_qwen_config(component.shapes(), role, str(files.source))
    return _info(role, located, files, component, "inferred from weights", values,
                 notes=(_INFERRED_NOTE.format("RoPE theta, RMSNorm eps, context length"),))


def _instantiate(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build without allocating or initialising weights (on the meta device); a network with buffers, which
    are computed at construction and not stored, is built for real instead."""
    with torch.device("meta"):
        model = factory()
    if any(True for _ in model.buffers()):
        model = factory()
    return model


def check_fit(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], source: str,
              what: str, config_source: str) -> None:
    """Raise an AceStepError listing missing, unexpected and mis-shaped tensors (a few of each), if any."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or mismatched):
        return

    def few(keys: list[str], show: Callable[[str], str] = str) -> str:
        return ", ".join(show(k) for k in keys[:4]) + (", …" if len(keys) > 4 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({few(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} with other shapes "
                     f"({few(mismatched, lambda k: f'{k}: file {list(found[k])} vs model {list(expected[k])}')})")
    if mismatched and config_source == "config.json":
        fix = ("the config.json beside the weights does not describe them: use the config.json shipped with this "
               "file, or remove it to infer the config from the weights")
    elif mismatched and config_source == "given":
        fix = "the given config does not describe these weights: pass the one shipped with them, or none"
    else:
        fix = f"the file is incomplete or not an ACE-Step 1.5 {what}; download it again"
    raise AceStepError(f"{source}: the {what} weights do not fit: {'; '.join(parts)}. Fix: {fix}.")


def _load_into(factory: Callable[[], nn.Module], component: Component, info: ModelInfo, dtype: torch.dtype,
               device: Device, what: str) -> nn.Module:
    model = _instantiate(factory)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    check_fit(expected, component.shapes(), str(info.path), what, info.config_source)
    tensors = read_tensors(component.refs, dtype, device)
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_dit(path: PathLike, dtype: DtypeLike = torch.float32, device: Device = "cpu", *, config: Any = None,
             variant: Optional[str] = None, silence_latent: Optional[PathLike] = None,
             require_silence_latent: bool = True) -> LoadedDit:
    """Load a DiT (official folder, ComfyUI file or all-in-one checkpoint) with its silence latent.

    `config` (an AceStepConfig, a dict or a config.json path) replaces the folder's config.json or the one
    inferred from weights; `variant` ("turbo", "sft", "base") overrides identification.
    """
    from acestep_core.models.acestep import AceStepModel

    dtype = resolve_dtype(dtype)
    located = locate(path)
    files = open_checkpoint(located.weights)
    component = _select(files, DIT)
    info = _describe_dit(located, files, component, config, variant)
    model = _load_into(lambda: AceStepModel(info.config), component, info, dtype, device, "DiT")
    silence = _silence_latent(located, info, silence_latent, require_silence_latent)
    if silence is not None:
        silence = silence.to(device=device, dtype=dtype)
    return LoadedDit(model, info, silence)


def _silence_latent(located: Located, info: ModelInfo, given: Optional[PathLike], required: bool) -> Optional[
        torch.Tensor]:
    folder = located.folder or located.weights.parent
    candidates = [Path(given).expanduser()] if given is not None else [folder / name for name in SILENCE_LATENT_FILES]
    for candidate in candidates:
        if candidate.is_file() or given is not None:
            return read_silence_latent(candidate, info.config.audio_acoustic_hidden_dim)
    if not required:
        return None
    raise AceStepError(
        f"{located.path}: no silence latent found (looked for {' and '.join(str(c) for c in candidates)}). "
        "ComfyUI's single-file DiTs ship none, and ACE-Step needs it (text2music sources, padding, repaint). "
        f"Download silence_latent.pt (3.8 MB) from {SILENCE_LATENT_URL} into {folder}, pass silence_latent=<path>, "
        f"or call acestep_core.checkpoint_download.download_silence_latent('{folder}')."
    )


def load_vae(path: PathLike, dtype: DtypeLike = torch.float32, device: Device = "cpu") -> LoadedVae:
    """Load the Oobleck VAE from the official `vae/` folder, ComfyUI's VAE file or an all-in-one checkpoint."""
    from acestep_core.models.vae import OobleckVAE

    dtype = resolve_dtype(dtype)
    located = locate(path)
    files = open_checkpoint(located.weights)
    component = _select(files, VAE)
    info = _describe_vae(located, files, component)
    return LoadedVae(_load_into(lambda: OobleckVAE(info.config), component, info, dtype, device, "VAE"), info)


def read_qwen(path: PathLike, role: str = TEXT_ENCODER, dtype: DtypeLike = torch.float32,
              device: Device = "cpu") -> QwenWeights:
    """The text encoder (role TEXT_ENCODER) or 5 Hz LM (role LM) weights in official, un-prefixed form."""
    if role not in (TEXT_ENCODER, LM):
        raise AceStepError(f"role must be {TEXT_ENCODER!r} or {LM!r}, got {role!r}.")
    located = locate(path)
    files = open_checkpoint(located.weights)
    component = _select(files, role)
    info = _describe_qwen(located, files, component, role)
    tensors = read_tensors(component.refs, resolve_dtype(dtype), device)
    return QwenWeights(dict(info.config), tensors, info, located.folder)


def load_text_encoder(path: PathLike, dtype: DtypeLike = torch.float32, device: Device = "cpu", *,
                      tokenizer_folder: Optional[PathLike] = None) -> LoadedTextEncoder:
    """The Qwen3-Embedding text encoder with its tokenizer (from the model folder or `tokenizer_folder`)."""
    from acestep_core.text.encoder import TextEncoder, load_tokenizer

    dtype = resolve_dtype(dtype)
    weights = read_qwen(path, TEXT_ENCODER, dtype, device)
    folder = Path(tokenizer_folder).expanduser() if tokenizer_folder is not None else weights.tokenizer_folder
    if folder is None:
        raise AceStepError(
            f"{path}: a single-file text encoder carries no tokenizer. Pass tokenizer_folder=<folder with "
            "tokenizer.json>, e.g. the Qwen3-Embedding-0.6B folder of ACE-Step/Ace-Step1.5."
        )
    tokenizer = load_tokenizer(folder)
    try:
        encoder = TextEncoder.from_state_dict(weights.config, weights.state_dict, tokenizer, dtype, device)
    except AceStepError as error:
        raise AceStepError(f"{path}: {error}") from error
    return LoadedTextEncoder(encoder, weights.info)


def identify(path: PathLike) -> list[ModelInfo]:
    """What a folder or file holds (one entry per network), from headers and config.json only.

    A Qwen3 stack whose role neither its vocabulary nor its folder name tells is reported with kind "qwen".
    """
    located = locate(path)
    files = open_checkpoint(located.weights)
    infos = []
    for component in find_components(files):
        if component.kind == DIT:
            infos.append(_describe_dit(located, files, component))
        elif component.kind == VAE:
            infos.append(_describe_vae(located, files, component))
        else:
            role = qwen_role(component) or _role_from_name(located)
            infos.append(_describe_qwen(located, files, component, role or QWEN))
    return infos


def _role_from_name(located: Located) -> Optional[str]:
    """The official folder names say it: `Qwen3-Embedding-0.6B` is the text encoder, `acestep-5Hz-lm-*` an LM."""
    tokens = name_tokens(*located.names)
    if "embedding" in tokens:
        return TEXT_ENCODER
    return LM if {"lm", "5hz"} <= tokens else None
