"""The LoRA loop on the tiny golden DiT with synthetic cached songs: it learns, it saves what it trained, it
resumes bit for bit, it cancels cleanly, and it leaves the DiT as it found it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from acestep_core.errors import AceStepError
from acestep_core.lora import apply_adapters, read_adapter, remove_adapters
from acestep_core.lora_io import save_peft_adapter
from acestep_core.sampling.schedules import TURBO_FIXED_TABLES
from acestep_core.training import LoRAInjection, TrainingConfig, TrainingItem, build_scheduler, train_lora
from acestep_core.training.recipe import sample_timesteps
from acestep_core.vae_tiling import Cancelled
from tests.core.tiny_adapters import tiny_dit

FAST = dict(rank=4, alpha=8, gradient_accumulation=2, warmup_steps=2, learning_rate=5e-3, save_every_epochs=0)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def songs(dit: torch.nn.Module, count: int = 3, frames: int = 24, seed: int = 0) -> list[TrainingItem]:
    """Songs whose latents are a smooth pattern tied to their condition, so a LoRA can learn them."""
    g = torch.Generator().manual_seed(seed)
    channels, width = dit.config.audio_acoustic_hidden_dim, dit.null_condition_emb.shape[-1]
    items = []
    for index in range(count):
        pattern = torch.sin(torch.arange(frames)[:, None] * (0.2 + 0.1 * index) + torch.arange(channels)[None])
        items.append(TrainingItem(
            name=f"song{index}", target_latents=pattern + 0.05 * torch.randn(frames, channels, generator=g),
            encoder_hidden_states=torch.randn(10, width, generator=g), encoder_attention_mask=torch.ones(10).bool(),
            context_latents=torch.cat([torch.zeros(frames, channels), torch.ones(frames, channels)], -1)))
    return items


def eval_loss(dit: torch.nn.Module, items: list[TrainingItem]) -> float:
    """Flow-matching loss at fixed noise and times (the same draws for every model compared)."""
    g = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for item in items:
            for t_value in (0.3, 0.5, 0.75, 0.9):
                x0 = item.target_latents[None]
                noise = torch.randn(x0.shape, generator=g)
                t = torch.tensor([t_value])
                pred = dit.decoder(t * noise + (1 - t) * x0, t, t, item.encoder_hidden_states[None],
                                   item.context_latents[None])
                total += torch.nn.functional.mse_loss(pred, noise - x0).item()
    return total / (4 * len(items))


def output(dit: torch.nn.Module, item: TrainingItem) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(item.target_latents[None].shape, generator=g)
    t = torch.tensor([0.6])
    with torch.no_grad():
        return dit.decoder(x, t, t, item.encoder_hidden_states[None], item.context_latents[None])


def test_training_lowers_the_loss_and_the_saved_adapter_is_what_was_trained(tmp_path: Path) -> None:
    dit = tiny_dit()
    items = songs(dit)
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    base_out, base_loss = output(dit, items[0]), eval_loss(dit, items)
    reports = []
    result = train_lora(dit, items, tmp_path / "run", TrainingConfig(epochs=30, **FAST), name="mine",
                        on_step=reports.append)
    assert result.steps == 60 == len(result.losses) == len(reports)
    assert [r.step for r in reports] == list(range(1, 61)) and reports[-1].total_steps == 60
    assert all(r.loss == loss for r, loss in zip(reports, result.losses))
    # The DiT is back to its original modules and weights.
    assert list(dit.state_dict()) == list(before) and all(torch.equal(dit.state_dict()[k], v) for k, v in before.items())
    assert torch.equal(output(dit, items[0]), base_out) and not dit.training
    adapter = read_adapter(result.output_dir)
    assert adapter.format == "PEFT LoRA folder" and len(adapter.modules) == 4 * 2 * 4
    assert all(d.rank == 4 and d.scale == 2.0 for d in adapter.modules.values())
    comfy = read_adapter(result.comfy_file)
    assert comfy.key_style == "diffusion_model." and comfy.modules.keys() == adapter.modules.keys()
    for module, delta in adapter.modules.items():
        assert comfy.modules[module].scale == delta.scale
        assert all(torch.equal(comfy.modules[module].factors[k], delta.factors[k]) for k in ("down", "up"))
    apply_adapters(dit, [(adapter, 1.0)])
    trained_loss, trained_out = eval_loss(dit, items), output(dit, items[0])
    remove_adapters(dit)
    assert trained_loss < 0.8 * base_loss, (base_loss, trained_loss)
    assert (trained_out - base_out).abs().max() > 1e-3


def test_injected_layers_equal_the_merged_saved_adapter(tmp_path: Path) -> None:
    """What the LoRA layers compute is what the PEFT folder means once loaded (save → load is exact)."""
    dit = tiny_dit()
    item = songs(dit, 1)[0]
    injection = LoRAInjection(dit, rank=3, alpha=5.0, dropout=0.1, seed=1)
    with torch.no_grad():
        for index, layer in enumerate(injection.layers.values()):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=torch.Generator().manual_seed(index)))
    dit.eval()
    live = output(dit, item)
    adapter = injection.adapter("probe")
    injection.remove()
    folder = save_peft_adapter(adapter, tmp_path / "peft")
    loaded = read_adapter(folder)
    for module, delta in adapter.modules.items():
        assert all(torch.equal(loaded.modules[module].factors[k], delta.factors[k]) for k in ("down", "up"))
        assert loaded.modules[module].scale == pytest.approx(5.0 / 3)
    plain = output(dit, item)
    apply_adapters(dit, [(loaded, 1.0)])
    torch.testing.assert_close(output(dit, item), live, atol=2e-5, rtol=1e-4)
    assert (live - plain).abs().max() > 1e-2


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    config = TrainingConfig(epochs=4, save_every_steps=3, **FAST)
    dit = tiny_dit()
    items = songs(dit, 3)
    whole = train_lora(dit, items, tmp_path / "whole", config)
    assert whole.steps == 8 and [c.name for c in whole.checkpoints] == ["step-000003", "step-000006"]
    resumed = train_lora(tiny_dit(), items, tmp_path / "resumed", config, resume_from=whole.checkpoints[0])
    assert resumed.losses == whole.losses and resumed.steps == 8
    first, second = read_adapter(whole.output_dir), read_adapter(resumed.output_dir)
    for module, delta in first.modules.items():
        assert all(torch.equal(second.modules[module].factors[k], delta.factors[k]) for k in ("down", "up"))
    with pytest.raises(AceStepError, match="other settings \\(rank\\)"):
        train_lora(tiny_dit(), items, tmp_path / "bad", TrainingConfig(epochs=4, **(FAST | {"rank": 8})),
                   resume_from=whole.checkpoints[0])
    with pytest.raises(AceStepError, match="trained on 3 songs"):
        train_lora(tiny_dit(), items[:2], tmp_path / "bad2", config, resume_from=whole.checkpoints[0])
    with pytest.raises(AceStepError, match="already exists"):
        train_lora(tiny_dit(), items, tmp_path / "whole", config)


def test_cancel_saves_the_last_step_and_restores_the_model(tmp_path: Path) -> None:
    dit = tiny_dit()
    items = songs(dit, 2)
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 5

    config = TrainingConfig(epochs=10, **FAST)
    with pytest.raises(Cancelled, match="step 2 .*resume from .*step-000002"):
        train_lora(dit, items, tmp_path / "run", config, cancel=cancel)
    assert all(torch.equal(dit.state_dict()[k], v) for k, v in before.items()) and list(dit.state_dict()) == list(before)
    resumed = train_lora(dit, items, tmp_path / "more", TrainingConfig(epochs=10, **(FAST | {"max_steps": 4})),
                         resume_from=tmp_path / "run" / "checkpoints" / "step-000002")
    whole = train_lora(tiny_dit(), items, tmp_path / "whole", TrainingConfig(epochs=10, **(FAST | {"max_steps": 4})))
    assert resumed.losses == whole.losses and len(whole.losses) == 4


def test_gradient_checkpointing_and_batches_change_nothing_but_memory(tmp_path: Path) -> None:
    items = songs(tiny_dit(), 3, frames=20)
    plain = train_lora(tiny_dit(), items, tmp_path / "a", TrainingConfig(epochs=2, gradient_checkpointing=False, **FAST))
    checkpointed = train_lora(tiny_dit(), items, tmp_path / "b", TrainingConfig(epochs=2, **FAST))
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)
    batched = train_lora(tiny_dit(), items, tmp_path / "c", TrainingConfig(epochs=2, batch_size=2, **FAST))
    assert batched.steps == 2 and all(torch.isfinite(torch.tensor(batched.losses)))


def test_cached_songs_must_fit_the_dit(tmp_path: Path) -> None:
    dit = tiny_dit()
    item = songs(dit, 1)[0]
    wrong = TrainingItem("wide", torch.zeros(8, 64), item.encoder_hidden_states, item.encoder_attention_mask,
                         torch.zeros(8, 128))
    with pytest.raises(AceStepError, match="wide was made for another DiT"):
        train_lora(dit, [wrong], tmp_path / "run", TrainingConfig(**FAST))
    with pytest.raises(AceStepError, match="No training songs"):
        train_lora(dit, [], tmp_path / "run", TrainingConfig(**FAST))
    with pytest.raises(AceStepError, match="timesteps must be one of"):
        TrainingConfig(timesteps="uniform")


def test_recipe_time_steps_and_learning_rate_schedule() -> None:
    g = torch.Generator().manual_seed(0)
    discrete = sample_timesteps(TrainingConfig(timesteps="turbo_discrete"), 400, g, torch.device("cpu"))
    assert set(discrete.tolist()) == set(torch.tensor(TURBO_FIXED_TABLES[3.0]).tolist())
    continuous = sample_timesteps(TrainingConfig(), 4000, g, torch.device("cpu"))
    # t = max of two draws of sigmoid(N(-0.4, 1)): its median is sigmoid(-0.4 + 0.545) ≈ 0.536.
    assert continuous.min() > 0 and continuous.max() < 1
    assert continuous.median().item() == pytest.approx(0.536, abs=0.02)
    config = TrainingConfig(learning_rate=1e-3, warmup_steps=100)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    scheduler = build_scheduler(optimizer, config, total_steps=50)   # warmup clamps to 50 // 10 = 5
    rates = []
    for _ in range(50):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-4) and rates[5] == pytest.approx(1e-3)
    assert max(rates) == pytest.approx(1e-3) and rates[-1] > 1e-5
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-5)   # cosine reaches 0.01·lr at the end


def test_peft_itself_loads_the_saved_folder(tmp_path: Path) -> None:
    """The folder is a genuine PEFT adapter: PEFT's own loader on a fresh decoder gives the merged output."""
    peft = pytest.importorskip("peft")
    from safetensors.torch import load_file

    dit = tiny_dit()
    item = songs(dit, 1)[0]
    injection = LoRAInjection(dit, rank=3, alpha=5.0, dropout=0.0, seed=1)
    with torch.no_grad():
        for index, layer in enumerate(injection.layers.values()):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=torch.Generator().manual_seed(index)))
    adapter = injection.adapter("probe")
    injection.remove()
    folder = save_peft_adapter(adapter, tmp_path / "peft")
    other = tiny_dit()
    decoder = peft.inject_adapter_in_model(peft.LoraConfig.from_pretrained(str(folder)), other.decoder)
    weights = {k.removeprefix("base_model.model."): v for k, v in load_file(folder / "adapter_model.safetensors").items()}
    assert not peft.set_peft_model_state_dict(decoder, weights).unexpected_keys
    other.eval()
    apply_adapters(dit, [(read_adapter(folder), 1.0)])
    torch.testing.assert_close(output(other, item), output(dit, item), atol=2e-5, rtol=1e-4)
