"""The LoRA training loop on cached songs: seeded, resumable, checkpointed, cancellable.

One optimizer step is a group of `gradient_accumulation` batches inside one epoch; an epoch's last group may be
shorter, and every batch loss is divided by `gradient_accumulation` as in the official trainer
(`acestep/training/trainer.py`). Then gradients are clipped to `max_grad_norm`, AdamW steps and the schedule
advances; a step whose gradients are not finite is skipped (the schedule still advances, so step numbers
stay tied to positions in the data).

Randomness is a pure function of the seed and the position: the song order of epoch e comes from
(seed, e), the noise, time steps, CFG dropout and LoRA dropout of batch m from (seed, m). A run resumed from
a checkpoint (adapter, optimizer, schedule, step) therefore continues exactly as if it had never stopped.

Output folder: `checkpoints/step-NNNNNN/` (PEFT folder + `training_state.pt`), `adapter/` (the final PEFT
folder, which `lora_io.read_adapter(<output>)` finds) and `<name>.safetensors` (ComfyUI single file).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

import torch

from acestep_core.errors import AceStepError
from acestep_core.lora_io import read_adapter, save_peft_adapter
from acestep_core.models.acestep import AceStepModel
from acestep_core.training.export import save_comfy_lora
from acestep_core.training.lora_layers import LoRAInjection
from acestep_core.training.preprocess import TrainingItem, load_item
from acestep_core.training.recipe import (
    TrainingConfig, build_scheduler, cfg_keep_mask, flow_matching_loss, sample_timesteps,
)
from acestep_core.vae_tiling import Cancelled

PathLike = Union[str, Path]
STATE_FILE = "training_state.pt"
STATE_FORMAT = "acestep-lora-training-state"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
# Settings a resumed run may change: they do not alter the math of the steps already planned.
RESUMABLE_CHANGES = frozenset({"max_steps", "save_every_epochs", "save_every_steps", "gradient_checkpointing"})
_MIX_A, _MIX_B = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


@dataclass(frozen=True)
class StepReport:
    """What the loss callback gets after every optimizer step."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float
    skipped: bool = False


@dataclass(frozen=True)
class TrainingResult:
    output_dir: Path
    adapter_dir: Path
    comfy_file: Optional[Path]
    steps: int
    losses: tuple[float, ...]
    checkpoints: tuple[Path, ...]


def mixed_seed(seed: int, position: int, salt: int = 0) -> int:
    """A well-spread 62-bit seed for (seed, position, salt), so neighbouring positions draw unrelated numbers."""
    value = (seed * _MIX_A + position * _MIX_B + salt * 0x94D049BB133111EB) % (1 << 64)
    value ^= value >> 31
    value = (value * _MIX_B) % (1 << 64)
    return (value ^ (value >> 29)) % (1 << 62)


def epoch_order(seed: int, epoch: int, count: int) -> list[int]:
    generator = torch.Generator().manual_seed(mixed_seed(seed, epoch, salt=1))
    return torch.randperm(count, generator=generator).tolist()


def collate(items: Sequence[TrainingItem], device: torch.device, dtype: torch.dtype
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0 [B, T, C], condition [B, L, E], context [B, T, 2C]) zero-padded to the longest, as officially."""
    frames = max(i.target_latents.shape[0] for i in items)
    length = max(i.encoder_hidden_states.shape[0] for i in items)

    def pad(tensor: torch.Tensor, size: int) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, 0, 0, size - tensor.shape[0]))

    def stack(tensors: list[torch.Tensor], size: int) -> torch.Tensor:
        return torch.stack([pad(t, size) for t in tensors]).to(device=device, dtype=dtype)

    return (stack([i.target_latents for i in items], frames), stack([i.encoder_hidden_states for i in items], length),
            stack([i.context_latents for i in items], frames))


def check_items(items: Sequence[TrainingItem], dit: AceStepModel) -> None:
    channels, width = dit.config.audio_acoustic_hidden_dim, dit.null_condition_emb.shape[-1]
    for item in items:
        if item.target_latents.shape[1] != channels or item.encoder_hidden_states.shape[1] != width:
            raise AceStepError(f"Cached song {item.name} was made for another DiT (latent channels "
                               f"{item.target_latents.shape[1]}, condition width {item.encoder_hidden_states.shape[1]}; "
                               f"this DiT: {channels}, {width}); preprocess the dataset with this DiT.")


def _autocast(config: TrainingConfig, device: torch.device) -> contextlib.AbstractContextManager:
    wants_bf16 = config.precision == "bf16" or (
        config.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if wants_bf16 else contextlib.nullcontext()


class _Run:
    """One training run's state: model with LoRA, optimizer, schedule, counters."""

    def __init__(self, dit: AceStepModel, items: list[TrainingItem], config: TrainingConfig):
        self.dit, self.items, self.config = dit, items, config
        parameter = next(dit.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.batches_per_epoch = math.ceil(len(items) / config.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.gradient_accumulation)
        planned = self.steps_per_epoch * config.epochs
        self.schedule_steps = config.schedule_steps or planned
        self.stop_at = min(planned, config.max_steps) if config.max_steps else planned
        self.injection = LoRAInjection(dit, config.rank, config.alpha, config.dropout, targets=config.targets,
                                       attention=config.attention, seed=config.seed,
                                       gradient_checkpointing=config.gradient_checkpointing)
        params = list(self.injection.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                           fused=self.device.type == "cuda")
        self.scheduler = build_scheduler(self.optimizer, config, self.schedule_steps)
        self.step = 0
        self.losses: list[float] = []

    def groups(self, epoch: int) -> Iterator[list[tuple[int, list[TrainingItem]]]]:
        """The epoch's optimizer steps: lists of (global batch index, songs)."""
        order = epoch_order(self.config.seed, epoch, len(self.items))
        size, accumulation = self.config.batch_size, self.config.gradient_accumulation
        batches = [[self.items[i] for i in order[start:start + size]] for start in range(0, len(order), size)]
        base = epoch * self.batches_per_epoch
        for start in range(0, len(batches), accumulation):
            yield [(base + start + j, batch) for j, batch in enumerate(batches[start:start + accumulation])]

    def batch_loss(self, position: int, batch: list[TrainingItem]) -> torch.Tensor:
        config, device = self.config, self.device
        generator = torch.Generator(device=device).manual_seed(mixed_seed(config.seed, position))
        self.injection.set_dropout_seed(mixed_seed(config.seed, position, salt=2))
        clean, condition, context = collate(batch, device, torch.float32)
        size = clean.shape[0]
        keep = cfg_keep_mask(config, size, generator, device)
        t = sample_timesteps(config, size, generator, device)
        noise = torch.randn(clean.shape, generator=generator, device=device)
        noisy = t[:, None, None] * noise + (1.0 - t[:, None, None]) * clean
        condition = torch.where(keep[:, None, None], condition, self.dit.null_condition(condition).float())
        timestep = t.to(self.dtype)
        with _autocast(config, device):
            prediction = self.dit.decoder(noisy.to(self.dtype), timestep, timestep, condition.to(self.dtype),
                                          context.to(self.dtype))
        return flow_matching_loss(prediction, noise, clean)

    def optimizer_step(self, params: list[torch.nn.Parameter]) -> bool:
        finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
        if finite:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return not finite

    def state(self) -> dict:
        return {"format": STATE_FORMAT, "step": self.step, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "config": json.dumps(self.config.to_dict()),
                "songs": len(self.items), "losses": list(self.losses)}

    def save_checkpoint(self, output: Path, name: str) -> Path:
        folder = output / CHECKPOINT_DIR / f"step-{self.step:06d}"
        if folder.exists():
            raise AceStepError(f"Checkpoint {folder} already exists; train into a new output folder.")
        save_peft_adapter(self.injection.adapter(name), folder)
        torch.save(self.state(), folder / STATE_FILE)
        return folder

    def resume(self, checkpoint: Path) -> None:
        state_path = checkpoint / STATE_FILE
        if not state_path.is_file():
            raise AceStepError(f"{checkpoint} is not a training checkpoint (no {STATE_FILE}); pick a "
                               f"{CHECKPOINT_DIR}/step-… folder of an earlier run.")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            raise AceStepError(f"Cannot read {state_path} ({exc}); pick another checkpoint.") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise AceStepError(f"{state_path} is not an ACE-Step LoRA training state; pick another checkpoint.")
        saved = TrainingConfig.from_dict(json.loads(state["config"]))
        changed = sorted(k for k, v in saved.to_dict().items()
                         if v != self.config.to_dict()[k] and k not in RESUMABLE_CHANGES)
        if changed:
            raise AceStepError(f"Checkpoint {checkpoint} was trained with other settings ({', '.join(changed)}); "
                               "resume with the same settings (only max_steps and save intervals may change).")
        if state["songs"] != len(self.items):
            raise AceStepError(f"Checkpoint {checkpoint} was trained on {state['songs']} songs, this dataset has "
                               f"{len(self.items)}; resume on the same preprocessed songs.")
        self.injection.load_factors(read_adapter(checkpoint), str(checkpoint))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.losses = [float(v) for v in state["losses"]]


def train_lora(dit: AceStepModel, items: Sequence[Union[PathLike, TrainingItem]], output_dir: PathLike,
               config: TrainingConfig = TrainingConfig(), *, name: str = "acestep_lora",
               resume_from: Optional[PathLike] = None, export_comfy: bool = True,
               on_step: Optional[Callable[[StepReport], None]] = None,
               cancel: Optional[Callable[[], Optional[bool]]] = None) -> TrainingResult:
    """Train a LoRA on `dit`'s decoder from cached songs and save it; `dit` is restored afterwards.

    The DiT stays where it is (device, dtype); the LoRA factors and the optimizer live in float32. On
    `cancel`, the last finished step is saved as a checkpoint (to resume from) and `Cancelled` is raised.
    """
    loaded = [item if isinstance(item, TrainingItem) else load_item(item) for item in items]
    if not loaded:
        raise AceStepError("No training songs; preprocess a dataset first.")
    check_items(loaded, dit)
    output = Path(output_dir).expanduser()
    adapter_dir = output / ADAPTER_DIR
    comfy_file = output / f"{name}.safetensors" if export_comfy else None
    for final in (adapter_dir, comfy_file):
        if final is not None and final.exists():
            raise AceStepError(f"{final} already exists: this output folder holds a finished run. Choose a new "
                               "output folder (or resume from one of its checkpoints into a new folder).")
    flags = {p: p.requires_grad for p in dit.parameters()}
    was_training = dit.training
    dit.requires_grad_(False)
    run = _Run(dit, loaded, config)
    checkpoints: list[Path] = []
    try:
        if resume_from is not None:
            run.resume(Path(resume_from).expanduser())
        dit.decoder.train()
        _train(run, output, name, checkpoints, on_step, cancel)
        adapter = run.injection.adapter(name)
        save_peft_adapter(adapter, adapter_dir)
        if comfy_file is not None:
            save_comfy_lora(adapter, comfy_file)
    finally:
        run.injection.remove()
        dit.train(was_training)
        for parameter, flag in flags.items():
            parameter.requires_grad_(flag)
    return TrainingResult(output, adapter_dir, comfy_file, run.step, tuple(run.losses), tuple(checkpoints))


def _train(run: _Run, output: Path, name: str, checkpoints: list[Path],
           on_step: Optional[Callable[[StepReport], None]], cancel: Optional[Callable[[], Optional[bool]]]) -> None:
    config = run.config
    params = list(run.injection.parameters())
    saved_at = run.step
    for epoch in range(run.step // run.steps_per_epoch, config.epochs):
        for index, group in enumerate(run.groups(epoch)):
            if epoch * run.steps_per_epoch + index < run.step:
                continue
            if run.step >= run.stop_at:
                return
            losses = []
            for position, batch in group:
                if cancel is not None and cancel():
                    run.optimizer.zero_grad(set_to_none=True)
                    if run.step > saved_at:
                        checkpoints.append(run.save_checkpoint(output, name))
                    raise Cancelled(f"Training cancelled at step {run.step} of {run.stop_at}"
                                    + (f"; resume from {checkpoints[-1]}" if run.step > saved_at else "") + ".")
                loss = run.batch_loss(position, batch)
                (loss / config.gradient_accumulation).backward()
                losses.append(float(loss.detach()))
            skipped = run.optimizer_step(params)
            run.step += 1
            mean = sum(losses) / len(losses)
            run.losses.append(mean)
            if on_step is not None:
                on_step(StepReport(run.step, run.stop_at, epoch + 1, mean, run.scheduler.get_last_lr()[0], skipped))
            end_of_epoch = index == run.steps_per_epoch - 1
            if ((config.save_every_steps and run.step % config.save_every_steps == 0)
                    or (end_of_epoch and config.save_every_epochs and (epoch + 1) % config.save_every_epochs == 0)) \
                    and run.step < run.stop_at:
                checkpoints.append(run.save_checkpoint(output, name))
                saved_at = run.step
