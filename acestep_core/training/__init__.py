"""LoRA training for the ACE-Step DiT: dataset scan and editing, auto-labels, cached preprocessing, the loop.

Typical use (what the ComfyUI training nodes do):

    dataset = scan_folder("songs/")                      # sidecar captions/lyrics/metadata picked up
    dataset = label_dataset(dataset, lm, dit, vae, silence)   # optional: fill empty captions/metadata
    save_dataset(dataset, "songs/dataset.json")          # edit by hand, then load_dataset(...)
    files = preprocess_dataset(dataset, dit, silence, vae, text_encoder, "cache/")
    result = train_lora(dit, files, "output/my_lora", TrainingConfig(epochs=10))
    read_adapter(result.output_dir)                      # the PEFT folder; result.comfy_file for ComfyUI
"""

from acestep_core.training.dataset import (
    AUDIO_EXTENSIONS, Dataset, Sample, dataset_json, load_dataset, parse_dataset_json, save_dataset, scan_folder,
)
from acestep_core.training.export import comfy_lora_tensors, save_comfy_lora
from acestep_core.training.labels import LABEL_FIELDS, audio_codes, label_dataset
from acestep_core.training.lora_layers import LoRAInjection, LoRALinear
from acestep_core.training.loop import StepReport, TrainingResult, train_lora
from acestep_core.training.preprocess import (
    TrainingItem, cached_items, encode_condition, load_item, preprocess_dataset, text_inputs,
)
from acestep_core.training.recipe import TrainingConfig, build_scheduler, sample_timesteps

__all__ = [
    "AUDIO_EXTENSIONS", "Dataset", "LABEL_FIELDS", "LoRAInjection", "LoRALinear", "Sample", "StepReport",
    "TrainingConfig", "TrainingItem", "TrainingResult", "audio_codes", "build_scheduler", "cached_items",
    "comfy_lora_tensors", "dataset_json", "encode_condition", "label_dataset", "load_dataset", "load_item",
    "parse_dataset_json", "preprocess_dataset", "sample_timesteps", "save_comfy_lora", "save_dataset",
    "scan_folder", "text_inputs", "train_lora",
]
