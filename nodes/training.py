"""LoRA training nodes: Dataset Scan, Dataset Edit, Auto-Label, Preprocess, Train LoRA.

Thin over `acestep_core.training`. ComfyUI specifics live here: folders are resolved against ComfyUI's input
and output folders, models are loaded through ComfyUI's model manager (all networks a stage needs at once),
training runs outside ComfyUI's inference mode, the loss goes to the node as live progress text, and Cancel
stops at the next batch after saving a checkpoint to resume from.

Types: ACESTEP_DATASET (`acestep_core.training.Dataset`) and ACESTEP_TRAINING_SET (`TrainingSet`: the cache
files of one preprocessing run).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from acestep_core.errors import AceStepError
from acestep_core.training import (
    LABEL_FIELDS, Dataset, StepReport, TrainingConfig, dataset_json, label_dataset, parse_dataset_json,
    preprocess_dataset, save_dataset, scan_folder, train_lora,
)
from acestep_core.training.dataset import TAG_POSITIONS
from acestep_core.training.labels import LABEL_SETTINGS
from acestep_core.training.recipe import TIMESTEP_MODES
from acestep_core.vae_tiling import Cancelled

from .common import CATEGORY, user_errors
from .lm_handle import LM_TYPE, LMHandle
from .model_handles import DIT_TYPE, TEXT_ENCODER_TYPE, VAE_TYPE, DitHandle, TextEncoderHandle, VaeHandle

TRAIN_CATEGORY = f"{CATEGORY}/Training"
DATASET_TYPE = io.Custom("ACESTEP_DATASET")
TRAINING_SET_TYPE = io.Custom("ACESTEP_TRAINING_SET")
OUTPUT_SUBFOLDER = "acestep_lora"
CACHE_SUBFOLDER = "acestep_lora_cache"
SEED_MAX = 2**32 - 1
DEFAULTS = TrainingConfig()


@dataclass(frozen=True)
class TrainingSet:
    """ACESTEP_TRAINING_SET: the cached songs of one preprocessing run and the DiT they were made for."""

    files: tuple[Path, ...]
    dit_name: str


def _resolve_folder(text: str, base: str, field: str) -> Path:
    if not text.strip():
        raise AceStepError(f"{field} is empty; give a folder (relative to ComfyUI's {base} folder, or absolute).")
    path = Path(text.strip()).expanduser()
    root = folder_paths.get_input_directory() if base == "input" else folder_paths.get_output_directory()
    return path if path.is_absolute() else Path(root) / path


def _safe_name(text: str, field: str) -> str:
    name = text.strip()
    if not name or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
        raise AceStepError(f"{field} {text!r} must be a plain name (letters, digits, - and _), no folders.")
    return name


def _new_folder(parent: Path, name: str) -> Path:
    """`parent/name_001`, `_002`, ...: the first that does not exist (runs never overwrite each other)."""
    number = 1
    while (parent / f"{name}_{number:03d}").exists():
        number += 1
    return parent / f"{name}_{number:03d}"


def _cancel_check() -> bool:
    """The engine's cancel check: True once the user pressed Cancel (the engine then saves and stops)."""
    return mm.processing_interrupted()


def _raise_interrupt() -> None:
    mm.throw_exception_if_processing_interrupted()


def _load_all(*handles: object) -> None:
    """Bring every network one stage needs onto its device together (ComfyUI frees room for them)."""
    mm.load_models_gpu([h.patcher for h in handles], force_full_load=True)


def _dataset_outputs() -> list[io.Output]:
    return [DATASET_TYPE.Output(display_name="dataset", tooltip="The songs with their captions and metadata."),
            io.String.Output(display_name="dataset_json", tooltip="The dataset as editable JSON text.")]


class AceStepDatasetScan(io.ComfyNode):
    """Find the training songs in a folder, with captions, lyrics and metadata kept beside them."""

    DISPLAY_NAME = "ACE-Step Dataset Scan"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepDatasetScan", display_name=cls.DISPLAY_NAME, category=TRAIN_CATEGORY,
            description=("Lists the audio files of a folder for LoRA training. Beside each song it reads "
                         "<name>.caption.txt (caption), <name>.lyrics.txt or <name>.txt (lyrics), <name>.json "
                         "(caption, lyrics, bpm, keyscale, timesignature, language) and any .csv with a 'file' "
                         "column, as the official trainer does."),
            inputs=[
                io.String.Input("folder", default="acestep_dataset",
                                tooltip="Folder with the songs: relative to ComfyUI's input folder, or absolute."),
                io.Boolean.Input("recursive", default=True, tooltip="Also take songs from subfolders."),
                io.String.Input("custom_tag", default="",
                                tooltip="Trigger word added to every caption (empty: none)."),
                io.Combo.Input("tag_position", options=list(TAG_POSITIONS), default="prepend",
                               tooltip="Where the trigger word goes: before, after or instead of the caption."),
            ],
            outputs=_dataset_outputs(),
        )

    @classmethod
    def execute(cls, folder: str, recursive: bool, custom_tag: str, tag_position: str) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            dataset = scan_folder(_resolve_folder(folder, "input", "folder"), recursive=recursive,
                                  custom_tag=custom_tag, tag_position=tag_position)
        text = dataset_json(dataset)
        return io.NodeOutput(dataset, text, ui=ui.PreviewText(_summary(dataset)))


def _summary(dataset: Dataset) -> str:
    missing = sum(1 for s in dataset.samples if not s.caption)
    minutes = sum(s.duration for s in dataset.samples) / 60
    return (f"{len(dataset.samples)} songs, {minutes:.1f} min, {missing} without caption"
            + (f", trigger word '{dataset.custom_tag}' ({dataset.tag_position})" if dataset.custom_tag else ""))


class AceStepDatasetEdit(io.ComfyNode):
    """Replace the dataset by an edited JSON text, and optionally save it as a file."""

    DISPLAY_NAME = "ACE-Step Dataset Edit"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepDatasetEdit", display_name=cls.DISPLAY_NAME, category=TRAIN_CATEGORY,
            description=("Edits a dataset: paste the dataset JSON (from Dataset Scan's dataset_json) into 'edits', "
                         "change captions, lyrics or metadata, and it replaces the incoming dataset. Empty 'edits' "
                         "passes the dataset through. 'save_as' writes the result to the output folder."),
            inputs=[
                DATASET_TYPE.Input("dataset", tooltip="The dataset from Dataset Scan or Auto-Label."),
                io.String.Input("edits", default="", multiline=True,
                                tooltip="The whole dataset as JSON, edited; empty keeps the dataset as it is."),
                io.String.Input("save_as", default="",
                                tooltip="File name to save the dataset JSON under output/acestep_lora (empty: "
                                        "do not save; an existing file is never overwritten)."),
            ],
            outputs=_dataset_outputs(),
            is_output_node=True,
        )

    @classmethod
    def execute(cls, dataset: Dataset, edits: str, save_as: str) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            result = parse_dataset_json(edits, "edits") if edits.strip() else dataset
            note = ""
            if save_as.strip():
                name = _safe_name(save_as.removesuffix(".json"), "save_as")
                path = save_dataset(result, Path(folder_paths.get_output_directory()) / OUTPUT_SUBFOLDER
                                    / f"{name}.json")
                note = f"\nsaved to {path}"
        return io.NodeOutput(result, dataset_json(result), ui=ui.PreviewText(_summary(result) + note))


class AceStepDatasetAutoLabel(io.ComfyNode):
    """Fill empty captions and metadata with the 5 Hz LM's understand mode."""

    DISPLAY_NAME = "ACE-Step Dataset Auto-Label"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepDatasetAutoLabel", display_name=cls.DISPLAY_NAME, category=TRAIN_CATEGORY,
            description=("Describes each song that lacks a caption or metadata: the song is encoded to audio codes "
                         "(VAE, then the DiT's tokenizer) and the LM writes caption, bpm, key, time signature and "
                         "language, as the official dataset builder does. Given values are kept."),
            inputs=[
                DATASET_TYPE.Input("dataset", tooltip="The dataset to label."),
                LM_TYPE.Input("lm", tooltip="The 5 Hz LM (Load ACE-Step LM)."),
                DIT_TYPE.Input("dit", tooltip="The DiT whose audio tokenizer makes the codes the LM reads."),
                VAE_TYPE.Input("vae", tooltip="The ACE-Step VAE."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace given values too (not only empty ones)."),
                io.Boolean.Input("transcribe_lyrics", default=False,
                                 tooltip="Also fill empty lyrics with the LM's (a rough guess)."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=False,
                             tooltip="Song i is labelled with seed + i."),
                io.Int.Input("max_text_tokens", default=0, min=0, max=8192,
                             tooltip="Cap on the LM's answer per song (0: the official 3500 tokens)."),
            ],
            outputs=_dataset_outputs(),
        )

    @classmethod
    def execute(cls, dataset: Dataset, lm: LMHandle, dit: DitHandle, vae: VaeHandle, overwrite: bool,
                transcribe_lyrics: bool, seed: int, max_text_tokens: int) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            _load_all(dit, vae, lm)
            bar = comfy.utils.ProgressBar(max(1, len(dataset.samples)))
            silence = dit.silence_latent.to(device=dit.device, dtype=dit.dtype)
            try:
                labelled = label_dataset(dataset, lm.planner, dit.patcher.model.network,
                                         vae.patcher.model.network, silence, fields=LABEL_FIELDS,
                                         transcribe_lyrics=transcribe_lyrics, overwrite=overwrite, seed=seed,
                                         settings=replace(LABEL_SETTINGS, max_text_tokens=max_text_tokens or None),
                                         progress=lambda done, total, _: bar.update_absolute(done, total),
                                         cancel=_cancel_check)
            except Cancelled:
                _raise_interrupt()
                raise
        return io.NodeOutput(labelled, dataset_json(labelled), ui=ui.PreviewText(_summary(labelled)))


class AceStepTrainingPreprocess(io.ComfyNode):
    """Encode every song once (VAE latents, text condition) into a cache the trainer reads."""

    DISPLAY_NAME = "ACE-Step Training Preprocess"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepTrainingPreprocess", display_name=cls.DISPLAY_NAME, category=TRAIN_CATEGORY,
            description=("Turns the dataset into training tensors: tiled VAE encode, caption and lyrics through the "
                         "text encoder and the DiT's condition encoder, as the official preprocessing does. Files "
                         "are named by a hash of their inputs, so unchanged songs are reused on the next run."),
            inputs=[
                DATASET_TYPE.Input("dataset", tooltip="The (labelled) dataset."),
                DIT_TYPE.Input("dit", tooltip="The DiT the LoRA will be trained on (straight from its loader)."),
                VAE_TYPE.Input("vae", tooltip="The ACE-Step VAE."),
                TEXT_ENCODER_TYPE.Input("text_encoder", tooltip="The ACE-Step text encoder."),
                io.Float.Input("max_duration", default=240.0, min=1.0, max=600.0, step=1.0,
                               tooltip="Songs are cut at this many seconds (official: 240)."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=False,
                             tooltip="Seed of the VAE posterior samples (the official code samples unseeded)."),
                io.String.Input("cache_folder", default=CACHE_SUBFOLDER,
                                tooltip="Where the cache goes: relative to ComfyUI's output folder, or absolute."),
            ],
            outputs=[TRAINING_SET_TYPE.Output(display_name="training_set",
                                              tooltip="The cached songs, for Train LoRA.")],
        )

    @classmethod
    def execute(cls, dataset: Dataset, dit: DitHandle, vae: VaeHandle, text_encoder: TextEncoderHandle,
                max_duration: float, seed: int, cache_folder: str) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            folder = _resolve_folder(cache_folder, "output", "cache_folder")
            _load_all(dit, vae, text_encoder)
            bar = comfy.utils.ProgressBar(max(1, len(dataset.samples)))
            silence = dit.silence_latent.to(device=dit.device, dtype=dit.dtype)
            try:
                files = preprocess_dataset(dataset, dit.patcher.model.network, silence, vae.patcher.model.network,
                                           text_encoder.encoder, folder, max_duration=max_duration, seed=seed,
                                           progress=lambda done, total, _: bar.update_absolute(done, total),
                                           cancel=_cancel_check)
            except Cancelled:
                _raise_interrupt()
                raise
        result = TrainingSet(tuple(files), dit.name)
        return io.NodeOutput(result, ui=ui.PreviewText(f"{len(files)} songs cached in {folder}"))


def _leave_inference_mode(module: torch.nn.Module) -> None:
    """ComfyUI loads weights under inference mode; autograd cannot save such tensors, so swap in normal copies."""
    with torch.no_grad():
        for owner in module.modules():
            for name, parameter in list(owner._parameters.items()):
                if parameter is not None and parameter.is_inference():
                    owner._parameters[name] = torch.nn.Parameter(parameter.clone(),
                                                                 requires_grad=parameter.requires_grad)
            for name, buffer in list(owner._buffers.items()):
                if buffer is not None and buffer.is_inference():
                    owner._buffers[name] = buffer.clone()


def _config_inputs() -> list[io.Input]:
    return [
        io.Int.Input("epochs", default=DEFAULTS.epochs, min=1, max=100000, tooltip="Passes over the dataset."),
        io.Int.Input("max_steps", default=0, min=0, max=10**7,
                     tooltip="Stop after this many optimizer steps (0: run all epochs)."),
        io.Int.Input("rank", default=DEFAULTS.rank, min=1, max=512, tooltip="LoRA rank (official default 64)."),
        io.Float.Input("alpha", default=DEFAULTS.alpha, min=0.01, max=4096.0, step=1.0,
                       tooltip="LoRA alpha; the update is scaled by alpha / rank (official default 128)."),
        io.Float.Input("learning_rate", default=DEFAULTS.learning_rate, min=1e-7, max=1.0, step=1e-5,
                       tooltip="AdamW learning rate (official 1e-4): warmup from 10%, then cosine to 1%."),
        io.Int.Input("gradient_accumulation", default=DEFAULTS.gradient_accumulation, min=1, max=1024,
                     tooltip="Batches per optimizer step (official 4)."),
        io.Int.Input("warmup_steps", default=DEFAULTS.warmup_steps, min=0, max=100000,
                     tooltip="Warmup steps (at most a tenth of the run)."),
        io.Combo.Input("timesteps", options=list(TIMESTEP_MODES), default=DEFAULTS.timesteps,
                       tooltip=("continuous: logit-normal times with 15% condition dropout, as the model was trained "
                                "(official v2 trainer); turbo_discrete: the 8 turbo steps at shift 3, no dropout "
                                "(official Gradio trainer).")),
        io.Int.Input("save_every_steps", default=0, min=0, max=10**7,
                     tooltip="Extra checkpoint every N steps (0: only every 10 epochs, the official interval)."),
        io.Boolean.Input("gradient_checkpointing", default=DEFAULTS.gradient_checkpointing,
                         tooltip="Recompute activations in backward: much less memory, a little slower."),
        io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=SEED_MAX, control_after_generate=False,
                     tooltip="Seed of the LoRA init, song order, noise, time steps and dropouts."),
    ]


class AceStepTrainLora(io.ComfyNode):
    """Train a LoRA on the DiT from a preprocessed dataset, with a live loss readout."""

    DISPLAY_NAME = "ACE-Step Train LoRA"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepTrainLora", display_name=cls.DISPLAY_NAME, category=TRAIN_CATEGORY,
            description=("Trains a LoRA on the q/k/v/o projections of the DiT's self- and cross-attention with the "
                         "official recipe (AdamW, flow-matching loss). Writes output/acestep_lora/<name>_NNN/ with "
                         "checkpoints, the PEFT folder 'adapter' and <name>.safetensors for ComfyUI; Cancel saves a "
                         "checkpoint to resume from. The DiT itself is left unchanged."),
            inputs=[
                DIT_TYPE.Input("dit", tooltip="The DiT the training set was made with, straight from its loader."),
                TRAINING_SET_TYPE.Input("training_set", tooltip="From ACE-Step Training Preprocess."),
                io.String.Input("lora_name", default="my_acestep_lora", tooltip="Name of the run and of the files."),
                *_config_inputs(),
                io.String.Input("resume_from", default="",
                                tooltip="A checkpoints/step-NNNNNN folder of an earlier run to continue (empty: "
                                        "start fresh); same settings, except max_steps and save interval."),
                io.Boolean.Input("copy_to_loras", default=True,
                                 tooltip="Also put <name>.safetensors into models/loras, for the LoRA loaders."),
            ],
            outputs=[io.String.Output(display_name="lora_path", tooltip="The PEFT adapter folder written."),
                     io.String.Output(display_name="loss_log", tooltip="Step and loss of every optimizer step.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, dit: DitHandle, training_set: TrainingSet, lora_name: str, resume_from: str,
                copy_to_loras: bool, **settings: object) -> io.NodeOutput:
        with user_errors(cls.DISPLAY_NAME):
            name = _safe_name(lora_name, "lora_name")
            if dit.adapters:
                raise AceStepError("dit carries LoRAs; train on the DiT straight from Load ACE-Step DiT.")
            if training_set.dit_name != dit.name:
                raise AceStepError(f"training_set was made with the DiT '{training_set.dit_name}', dit is '{dit.name}'; "
                                   "preprocess with the DiT you train on.")
            config = TrainingConfig(epochs=int(settings["epochs"]), max_steps=int(settings["max_steps"]),
                                    rank=int(settings["rank"]), alpha=float(settings["alpha"]),
                                    learning_rate=float(settings["learning_rate"]),
                                    gradient_accumulation=int(settings["gradient_accumulation"]),
                                    warmup_steps=int(settings["warmup_steps"]), timesteps=str(settings["timesteps"]),
                                    save_every_steps=int(settings["save_every_steps"]),
                                    gradient_checkpointing=bool(settings["gradient_checkpointing"]),
                                    seed=int(settings["seed"]))
            output = _new_folder(Path(folder_paths.get_output_directory()) / OUTPUT_SUBFOLDER, name)
            resume = _resolve_folder(resume_from, "output", "resume_from") if resume_from.strip() else None
            result = cls._train(dit, training_set, output, name, config, resume)
            copied = cls._copy_to_loras(result.comfy_file, name) if copy_to_loras else None
        log = "\n".join(f"{step} {loss:.6f}" for step, loss in enumerate(result.losses, start=1))
        text = (f"{result.steps} steps, final loss {result.losses[-1]:.4f}\nPEFT folder: {result.adapter_dir}\n"
                f"ComfyUI file: {copied or result.comfy_file}")
        return io.NodeOutput(str(result.adapter_dir), log, ui=ui.PreviewText(text))

    @classmethod
    def _train(cls, dit: DitHandle, training_set: TrainingSet, output: Path, name: str, config: TrainingConfig,
               resume: Optional[Path]) -> object:
        from server import PromptServer

        node_id = cls.hidden.unique_id
        network = dit.load()
        bar = comfy.utils.ProgressBar(1)

        def report(step: StepReport) -> None:
            bar.update_absolute(step.step, step.total_steps)
            if node_id is not None and PromptServer.instance is not None:
                PromptServer.instance.send_progress_text(
                    f"step {step.step}/{step.total_steps}  epoch {step.epoch}  loss {step.loss:.4f}  "
                    f"lr {step.learning_rate:.2e}", node_id)

        with torch.inference_mode(False), torch.enable_grad():
            _leave_inference_mode(network)
            try:
                return train_lora(network, training_set.files, output, config, name=name, resume_from=resume,
                                  on_step=report, cancel=_cancel_check)
            except Cancelled:
                _raise_interrupt()
                raise

    @staticmethod
    def _copy_to_loras(file: Path, name: str) -> Path:
        loras = Path(folder_paths.get_folder_paths("loras")[0])
        target = loras / f"{name}.safetensors"
        number = 2
        while target.exists():
            target = loras / f"{name}_{number}.safetensors"
            number += 1
        loras.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
        return target


TRAINING_NODES: list[type[io.ComfyNode]] = [AceStepDatasetScan, AceStepDatasetEdit, AceStepDatasetAutoLabel,
                                            AceStepTrainingPreprocess, AceStepTrainLora]
