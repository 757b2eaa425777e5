"""The official LoRA recipe: defaults, the time-step draw, CFG dropout, the flow-matching loss and the LR schedule.

Sources in the official repository (commit 6d467e4):
- defaults: `acestep/training_v2/cli/args.py` and `presets/recommended.json` (rank 64, alpha 128, dropout 0.1,
  q/k/v/o projections of self- and cross-attention, AdamW lr 1e-4, weight decay 0.01, batch 1, gradient
  accumulation 4, 100 epochs, warmup 100 steps, gradient clip 1.0, seed 42, cosine schedule, CFG dropout
  0.15, gradient checkpointing on); the API's defaults (`acestep/api/train_api_models.py`) are the same;
- "continuous" time steps and CFG dropout: `acestep/training_v2/timestep_sampling.py`, which copies the
  model's own training forward: t = sigmoid(N(0,1)·σ + μ) with μ = −0.4, σ = 1 (the checkpoints'
  `timestep_mu`/`timestep_sigma`), r = t; each item's condition is replaced by the null condition with
  probability 0.15;
- "turbo_discrete": `acestep/training/trainer.py` (the Gradio/API trainer): t drawn uniformly from the 8
  time steps of the turbo schedule at shift 3, no CFG dropout;
- loss: x_t = t·noise + (1 − t)·x0, MSE between the decoder's output at (x_t, t, r = t) and noise − x0;
- schedule: `acestep/training_v2/optim.py`: LinearLR from 0.1·lr to lr over min(warmup, max(1, total // 10))
  steps, then cosine to 0.01·lr over the remaining steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from acestep_core.errors import AceStepError
from acestep_core.sampling.schedules import TURBO_FIXED_TABLES
from acestep_core.training.lora_layers import ATTENTION_TARGETS, ATTENTION_TYPES

TIMESTEP_MU = -0.4
TIMESTEP_SIGMA = 1.0
TIMESTEP_MODES = ("continuous", "turbo_discrete")
PRECISIONS = ("auto", "fp32", "bf16")
WARMUP_START = 0.1
FINAL_LR_FACTOR = 0.01
TURBO_SHIFT = 3.0


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that shapes a run; the defaults are the official ones (see the module docstring).

    `max_steps` > 0 stops early (optimizer steps); the LR schedule still spans `epochs`, unless
    `schedule_steps` > 0 sets its length. `save_every_steps` > 0 adds checkpoints between the official
    per-epoch ones (`save_every_epochs`, 0 = none).
    """

    rank: int = 64
    alpha: float = 128.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ATTENTION_TARGETS
    attention: str = "both"
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 1
    gradient_accumulation: int = 4
    epochs: int = 100
    max_steps: int = 0
    schedule_steps: int = 0
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    timesteps: str = "continuous"
    cfg_ratio: float = 0.15
    timestep_mu: float = TIMESTEP_MU
    timestep_sigma: float = TIMESTEP_SIGMA
    seed: int = 42
    gradient_checkpointing: bool = True
    precision: str = "auto"
    save_every_epochs: int = 10
    save_every_steps: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.gradient_accumulation >= 1, "gradient_accumulation must be at least 1"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (min(self.max_steps, self.schedule_steps, self.warmup_steps) >= 0, "step counts must not be negative"),
            (min(self.save_every_epochs, self.save_every_steps) >= 0, "save intervals must not be negative"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.weight_decay >= 0 and self.max_grad_norm > 0, "weight_decay ≥ 0 and max_grad_norm > 0 needed"),
            (self.timesteps in TIMESTEP_MODES, f"timesteps must be one of {', '.join(TIMESTEP_MODES)}"),
            (0.0 <= self.cfg_ratio < 1.0, "cfg_ratio must be within [0, 1)"),
            (self.timestep_sigma > 0, "timestep_sigma must be positive"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.attention in ATTENTION_TYPES, f"attention must be one of {', '.join(ATTENTION_TYPES)}"),
            (bool(self.targets) and set(self.targets) <= set(ATTENTION_TARGETS),
             f"targets must be a non-empty subset of {', '.join(ATTENTION_TARGETS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AceStepError(f"Training setting: {message}.")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["targets"] = list(self.targets)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainingConfig":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in values.items() if k in known}
        if "targets" in data:
            data["targets"] = tuple(data["targets"])
        return cls(**data)


def sample_timesteps(config: TrainingConfig, batch: int, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """t per item [B] (float32) by the configured rule; r = t always (the official call, no mean-flow)."""
    if config.timesteps == "turbo_discrete":
        table = torch.tensor(TURBO_FIXED_TABLES[TURBO_SHIFT], dtype=torch.float32, device=device)
        return table[torch.randint(0, table.numel(), (batch,), generator=generator, device=device)]
    # The official draw makes a second sample r and keeps max/min; with r = t forced, t is max(t, r).
    first = torch.randn(batch, generator=generator, device=device)
    second = torch.randn(batch, generator=generator, device=device)
    t = torch.sigmoid(first * config.timestep_sigma + config.timestep_mu)
    r = torch.sigmoid(second * config.timestep_sigma + config.timestep_mu)
    return torch.maximum(t, r)


def cfg_keep_mask(config: TrainingConfig, batch: int, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """Bool [B]: True keeps an item's condition, False swaps in the null condition (continuous mode only)."""
    if config.timesteps != "continuous" or config.cfg_ratio <= 0:
        return torch.ones(batch, dtype=torch.bool, device=device)
    return torch.rand(batch, generator=generator, device=device) >= config.cfg_ratio


def flow_matching_loss(prediction: torch.Tensor, noise: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """MSE between the predicted velocity and noise − x0, in float32."""
    return torch.nn.functional.mse_loss(prediction.float(), (noise - clean).float())


def warmup_steps(config: TrainingConfig, total_steps: int) -> int:
    return min(config.warmup_steps, max(1, total_steps // 10))


def build_scheduler(optimizer: Optimizer, config: TrainingConfig, total_steps: int) -> LRScheduler:
    """Linear warmup (0.1·lr → lr), then cosine down to 0.01·lr over the rest of `total_steps`."""
    warmup = warmup_steps(config, total_steps)
    rise = LinearLR(optimizer, start_factor=WARMUP_START, end_factor=1.0, total_iters=warmup)
    fall = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup),
                             eta_min=config.learning_rate * FINAL_LR_FACTOR)
    return SequentialLR(optimizer, [rise, fall], milestones=[warmup])
