"""Load ACE-Step DiT / VAE / Text Encoder / LM: the model loaders, with menus over ComfyUI's model folders.

Each menu lists, in this order: the official models of that kind as `acestep/<name>` (present or not,
so a shared workflow names the same entry everywhere; a missing one is downloaded only when the node's
`download` switch is on), other official-layout folders found under `models/acestep/`, then the
`.safetensors` files of ComfyUI's own folders (`diffusion_models`, `vae`, `text_encoders`, plus
`checkpoints` for all-in-one files, from which each loader takes its own network; the LM menu lists only
the `text_encoders` files named like ComfyUI's `qwen_*_ace15` LMs). Files are listed
without reading them, as ComfyUI's own loaders do; a file of the wrong kind is refused at load time
with a message that says what it holds.

Weights are read by `acestep_core.checkpoints` onto ComfyUI's offload device in the chosen dtype and
handed to `model_handles`, which lets ComfyUI's model manager move them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import folder_paths
from comfy_api.latest import io, ui

from acestep_core.checkpoint_discovery import discover_models
from acestep_core.checkpoint_download import OFFICIAL_MODELS, download_silence_latent, ensure_model, missing_files
from acestep_core.checkpoint_identify import VARIANTS
from acestep_core.checkpoints import SILENCE_LATENT_FILES, identify, load_dit, load_text_encoder, load_vae
from acestep_core.errors import AceStepError
from acestep_core.planner import load_planner

from .common import CATEGORY, user_errors
from .lm_handle import LM_KIND, LM_TYPE, lm_offload_device, make_lm_handle
from .model_handles import (
    DIT_TYPE, DTYPE_CHOICES, TEXT_ENCODER_TYPE, VAE_TYPE, choose_dtype, describe_dtype, make_dit_handle,
    make_text_encoder_handle, make_vae_handle, offload_device,
)

ACESTEP_FOLDER = "acestep"
FILE_FOLDERS = {
    "dit": ("diffusion_models", "checkpoints"),
    "vae": ("vae", "checkpoints"),
    "text_encoder": ("text_encoders", "checkpoints"),
    "lm": ("text_encoders",),
}
# Name parts that mark a text_encoders file as an ACE-Step LM (ComfyUI ships `qwen_1.7b_ace15.safetensors`).
LM_FILE_MARKS = ("ace15", "acestep", "5hz")
TOKENIZER_MODEL = "Qwen3-Embedding-0.6B"
DOWNLOAD_TOOLTIP = (
    "Download a missing official model (acestep/... entries) from Hugging Face into models/acestep/ "
    "with huggingface_hub. Off by default: without it a missing model stops the node with the files to get."
)


def register_acestep_folder() -> None:
    """Make `models/acestep/` a ComfyUI model folder (kept if `extra_model_paths.yaml` already names one).

    The extensions are set explicitly: a new key added by `add_model_folder_path` would list every file.
    """
    default = os.path.join(folder_paths.models_dir, ACESTEP_FOLDER)
    if ACESTEP_FOLDER in folder_paths.folder_names_and_paths:
        paths, _ = folder_paths.folder_names_and_paths[ACESTEP_FOLDER]
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[ACESTEP_FOLDER] = (paths, folder_paths.supported_pt_extensions)
    else:
        folder_paths.folder_names_and_paths[ACESTEP_FOLDER] = ([default], folder_paths.supported_pt_extensions)


register_acestep_folder()


def acestep_roots() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(ACESTEP_FOLDER)]


def model_choices(kind: str) -> list[str]:
    """The menu of a loader: official names, other folders under models/acestep/, then ComfyUI files."""
    choices = [f"{ACESTEP_FOLDER}/{name}" for name, model in OFFICIAL_MODELS.items() if model.kind == kind]
    for root in acestep_roots():
        for entry in discover_models([root], kinds=(kind,)):
            if entry.error is None and entry.path.is_dir():
                choice = f"{ACESTEP_FOLDER}/{entry.path.relative_to(root).as_posix()}"
                if choice not in choices:
                    choices.append(choice)
    for folder in FILE_FOLDERS[kind]:
        choices += [f"{folder}/{name}" for name in folder_paths.get_filename_list(folder)
                    if name.lower().endswith(".safetensors") and Path(name).stem != "silence_latent"
                    and (kind != "lm" or any(mark in name.lower() for mark in LM_FILE_MARKS))]
    return choices


def resolve_choice(field: str, choice: str, kind: str, download: bool) -> Path:
    """The folder or file a menu entry names, downloading a missing official model when allowed."""
    folder, _, rest = choice.partition("/")
    if folder == ACESTEP_FOLDER and rest:
        roots = acestep_roots()
        official = rest in OFFICIAL_MODELS
        for root in roots:
            candidate = root / rest
            if candidate.exists() and (not official or not missing_files(rest, root)):
                return candidate
        if official:
            try:
                return ensure_model(rest, roots[0], allow_download=download)
            except AceStepError as exc:
                hint = "" if download else " Or turn on 'download' on this node to fetch it."
                raise AceStepError(f"{field} '{choice}': {exc}{hint}") from None
        raise AceStepError(f"{field} '{choice}': no such folder under {', '.join(map(str, roots))}; "
                           "pick another entry (the menu refreshes with R).")
    if folder in FILE_FOLDERS[kind] and rest:
        full = folder_paths.get_full_path(folder, rest)
        if full is not None:
            return Path(full)
        raise AceStepError(f"{field} '{choice}': the file is gone from the {folder} folder; refresh the menu (R) "
                           "and pick another.")
    raise AceStepError(f"{field} '{choice}' is not a {kind.replace('_', ' ')} entry; pick one from the menu.")


def _load(field: str, choice: str, loader: Callable[[], Any]) -> Any:
    """Run a core loader; its error is prefixed with the menu field and entry the user picked."""
    try:
        return loader()
    except AceStepError as exc:
        raise AceStepError(f"{field} '{choice}': {exc}") from None


def _model_input(field: str, kind: str, what: str) -> io.Combo.Input:
    return io.Combo.Input(
        field, options=model_choices(kind),
        tooltip=(f"The {what}: acestep/<name> is an official model folder in models/acestep/ (downloaded if "
                 f"'download' is on); other entries are files in ComfyUI's model folders "
                 f"({', '.join(FILE_FOLDERS[kind])})."),
    )


def _dtype_input() -> io.Combo.Input:
    return io.Combo.Input(
        "dtype", options=list(DTYPE_CHOICES), default="auto",
        tooltip=("Weight and compute precision. auto: ComfyUI's command-line choice if given, else bf16 on GPUs "
                 "that support it, fp16 on older GPUs, fp32 on the CPU."),
    )


def _download_input() -> io.Boolean.Input:
    return io.Boolean.Input("download", default=False, tooltip=DOWNLOAD_TOOLTIP)


def _described(text: str) -> io.String.Output:
    return io.String.Output(display_name="description", tooltip=text)


class AceStepLoadDit(io.ComfyNode):
    """Load the diffusion transformer (turbo, sft or base; 2B or XL) with its silence latent."""

    DISPLAY_NAME = "Load ACE-Step DiT"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoadDit", display_name=cls.DISPLAY_NAME, category=CATEGORY,
            description=("Loads an ACE-Step 1.5 diffusion transformer (DiT) and shows which one it is "
                         "(2B or XL; turbo, sft or base)."),
            inputs=[
                _model_input("dit_name", "dit", "DiT"),
                _dtype_input(),
                io.Combo.Input("variant", options=["auto", *VARIANTS], default="auto",
                               tooltip=("auto: read it from config.json or the name. Set it for a renamed "
                                        "single file: turbo takes 8 steps without guidance, sft/base 32-50 "
                                        "steps with guidance; only base can do lego, extract and complete.")),
                _download_input(),
            ],
            outputs=[DIT_TYPE.Output(display_name="dit", tooltip="The DiT, for the DiT Sampler (and LoRA nodes)."),
                     _described("What was loaded: family, variant, dtype.")],
        )

    @classmethod
    def execute(cls, dit_name: str, dtype: str, variant: str, download: bool) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            path = resolve_choice("dit_name", dit_name, "dit", download)
            if download and path.is_file() and not any((path.parent / n).is_file() for n in SILENCE_LATENT_FILES):
                _load("dit_name", dit_name, lambda: download_silence_latent(path.parent))
            torch_dtype = choose_dtype(dtype, "dit")
            chosen = None if variant == "auto" else variant
            loaded = _load("dit_name", dit_name,
                           lambda: load_dit(path, torch_dtype, offload_device("dit"), variant=chosen))
        found = loaded.info.dit.variant if loaded.info.dit is not None else None
        handle = make_dit_handle(loaded, dit_name, torch_dtype, found)
        text = f"{loaded.info.dit.describe() if loaded.info.dit else 'ACE-Step 1.5 DiT'}, {describe_dtype(torch_dtype)}"
        return io.NodeOutput(handle, text, ui=ui.PreviewText(text))


class AceStepLoadVae(io.ComfyNode):
    """Load the Oobleck audio VAE (48 kHz stereo, 1920 samples per latent frame)."""

    DISPLAY_NAME = "Load ACE-Step VAE"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoadVae", display_name=cls.DISPLAY_NAME, category=CATEGORY,
            description="Loads the ACE-Step 1.5 audio VAE, which turns latents into 48 kHz stereo audio and back.",
            inputs=[_model_input("vae_name", "vae", "VAE"), _dtype_input(), _download_input()],
            outputs=[VAE_TYPE.Output(display_name="vae",
                                     tooltip="The VAE, for VAE Decode, Source Audio Encode and Reference Audio."),
                     _described("What was loaded and its dtype.")],
        )

    @classmethod
    def execute(cls, vae_name: str, dtype: str, download: bool) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            path = resolve_choice("vae_name", vae_name, "vae", download)
            torch_dtype = choose_dtype(dtype, "vae")
            loaded = _load("vae_name", vae_name, lambda: load_vae(path, torch_dtype, offload_device("vae")))
        text = f"ACE-Step 1.5 VAE ({loaded.info.layout} layout), {describe_dtype(torch_dtype)}"
        return io.NodeOutput(make_vae_handle(loaded, vae_name, torch_dtype), text, ui=ui.PreviewText(text))


def tokenizer_folder(download: bool) -> Optional[Path]:
    """The official Qwen3-Embedding folder's tokenizer, for single-file text encoders (which carry none)."""
    for root in acestep_roots():
        if (root / TOKENIZER_MODEL / "tokenizer.json").is_file():
            return root / TOKENIZER_MODEL
    if download:
        return ensure_model(TOKENIZER_MODEL, acestep_roots()[0], allow_download=True)
    return None


class AceStepLoadTextEncoder(io.ComfyNode):
    """Load the Qwen3-Embedding-0.6B text encoder with its tokenizer."""

    DISPLAY_NAME = "Load ACE-Step Text Encoder"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoadTextEncoder", display_name=cls.DISPLAY_NAME, category=CATEGORY,
            description=("Loads the Qwen3-Embedding-0.6B text encoder that turns caption and lyrics into the "
                         "DiT's conditioning. A single-file encoder takes its tokenizer from "
                         "models/acestep/Qwen3-Embedding-0.6B/."),
            inputs=[_model_input("text_encoder_name", "text_encoder", "text encoder"), _dtype_input(),
                    _download_input()],
            outputs=[TEXT_ENCODER_TYPE.Output(display_name="text_encoder",
                                              tooltip="The text encoder, for ACE-Step Text Encode."),
                     _described("What was loaded and its dtype.")],
        )

    @classmethod
    def execute(cls, text_encoder_name: str, dtype: str, download: bool) -> io.NodeOutput:
        field = "text_encoder_name"
        with user_errors(cls.DISPLAY_NAME):
            path = resolve_choice(field, text_encoder_name, "text_encoder", download)
            tokenizer = None
            if path.is_file() and not (path.parent / "tokenizer.json").is_file():
                tokenizer = _load(field, text_encoder_name, lambda: tokenizer_folder(download))
                if tokenizer is None:
                    raise AceStepError(
                        f"{field} '{text_encoder_name}': a single-file text encoder carries no tokenizer. Put the "
                        f"official {TOKENIZER_MODEL} folder (its tokenizer files are enough) into "
                        f"{acestep_roots()[0]}, or turn on 'download' to fetch it.")
            torch_dtype = choose_dtype(dtype, "text_encoder")
            loaded = _load(field, text_encoder_name, lambda: load_text_encoder(
                path, torch_dtype, offload_device("text_encoder"), tokenizer_folder=tokenizer))
        text = f"ACE-Step 1.5 text encoder ({loaded.info.layout} layout), {describe_dtype(torch_dtype)}"
        handle = make_text_encoder_handle(loaded, text_encoder_name, torch_dtype)
        return io.NodeOutput(handle, text, ui=ui.PreviewText(text))


def lm_tokenizer_folder(download: bool) -> Optional[Path]:
    """A tokenizer for a single-file LM (which carries none): an official LM folder's, else the text
    encoder's Qwen3 tokenizer (the planner adds the audio-code tokens to a plain Qwen3 tokenizer)."""
    for root in acestep_roots():
        for folder in sorted(root.glob("acestep-5Hz-lm-*")):
            if (folder / "tokenizer.json").is_file():
                return folder
    return tokenizer_folder(download)


class AceStepLoadLM(io.ComfyNode):
    """Load the 5 Hz LM (the planner: metadata, caption, lyrics and audio codes) with its tokenizer."""

    DISPLAY_NAME = "Load ACE-Step LM"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepLoadLM", display_name=cls.DISPLAY_NAME, category=CATEGORY,
            description=("Loads the ACE-Step 1.5 5 Hz language model (0.6B, 1.7B or 4B) for the LM Planner. A "
                         "single file (ComfyUI's qwen_*_ace15) takes its tokenizer from an acestep-5Hz-lm folder or "
                         "models/acestep/Qwen3-Embedding-0.6B/."),
            inputs=[_model_input("lm_name", "lm", "5 Hz LM"), _dtype_input(), _download_input()],
            outputs=[LM_TYPE.Output(display_name="lm", tooltip="The 5 Hz LM, for the ACE-Step LM Planner."),
                     _described("What was loaded: size and dtype.")],
        )

    @classmethod
    def execute(cls, lm_name: str, dtype: str, download: bool) -> io.NodeOutput:
        field = "lm_name"
        with user_errors(cls.DISPLAY_NAME):
            path = resolve_choice(field, lm_name, "lm", download)
            tokenizer = None
            if path.is_file() and not (path.parent / "tokenizer.json").is_file():
                tokenizer = _load(field, lm_name, lambda: lm_tokenizer_folder(download))
                if tokenizer is None:
                    raise AceStepError(
                        f"{field} '{lm_name}': a single-file LM carries no tokenizer. Put an official "
                        f"acestep-5Hz-lm folder or the {TOKENIZER_MODEL} folder (its tokenizer files are enough) "
                        f"into {acestep_roots()[0]}, or turn on 'download' to fetch it.")
            torch_dtype = choose_dtype(dtype, LM_KIND)
            planner = _load(field, lm_name, lambda: load_planner(path, torch_dtype, lm_offload_device(),
                                                                 tokenizer_folder=tokenizer))
            info = _load(field, lm_name, lambda: identify(path)[0])
        handle = make_lm_handle(planner, info, lm_name, torch_dtype)
        text = f"ACE-Step 1.5 5 Hz LM {handle.size_name} ({info.layout} layout), {describe_dtype(torch_dtype)}"
        return io.NodeOutput(handle, text, ui=ui.PreviewText(text))


LOADER_NODES: list[type[io.ComfyNode]] = [AceStepLoadDit, AceStepLoadVae, AceStepLoadTextEncoder, AceStepLoadLM]
