"""Merging adapter stacks into the tiny golden DiT, removing them bit for bit, and the ComfyUI weight deltas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_core.lora import active_adapters, apply_adapters, read_adapter, remove_adapters, weight_deltas
from tests.core import tiny_adapters as A

SHAPES = A.golden_shapes()
MODULES = A.attention_modules(SHAPES)
RANK, ALPHA = 4, 8.0


@pytest.fixture
def model() -> torch.nn.Module:
    return A.tiny_dit()


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, A.Factors]:
    factors = A.random_lora(SHAPES, MODULES, RANK, seed=21)
    return A.write_peft_folder(tmp_path_factory.mktemp("peft") / "style", factors, r=RANK, alpha=ALPHA), factors


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, A.Factors]:
    """A ComfyUI file changing only the self-attention q/v projections, alpha 2 on rank 2."""
    modules = [m for m in MODULES if m.endswith(("self_attn.q_proj", "self_attn.v_proj"))]
    factors = A.random_lora(SHAPES, modules, 2, seed=22)
    path = tmp_path_factory.mktemp("comfy") / "second.safetensors"
    return A.write_lora_file(path, factors, style="diffusion_model", alpha=2.0), factors


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_weights(model: torch.nn.Module, before: dict[str, torch.Tensor],
                    changes: dict[str, torch.Tensor]) -> None:
    """Changed keys equal before + change (float64 reference); every other tensor is bit-identical."""
    after = model.state_dict()
    for key, value in after.items():
        if key in changes:
            expected = before[key].double() + changes[key]
            torch.testing.assert_close(value.double(), expected, rtol=0, atol=2e-6, msg=key)
        else:
            assert torch.equal(value, before[key]), key


def _lora_changes(factors: A.Factors, scale: float) -> dict[str, torch.Tensor]:
    return {m + ".weight": A.lora_delta(a, b, scale) for m, (a, b) in factors.items()}


def _add(*changes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for change in changes:
        for key, value in change.items():
            total[key] = total.get(key, 0) + value
    return total


@pytest.mark.parametrize("scale", [1.0, 0.7, -0.5])
def test_single_adapter_any_scale(model, first, scale: float) -> None:
    path, factors = first
    before = _weights(model)
    touched = apply_adapters(model, [(path, scale)])
    assert sorted(touched) == sorted(m + ".weight" for m in MODULES)
    _assert_weights(model, before, _lora_changes(factors, scale * ALPHA / RANK))
    assert active_adapters(model) == (("style", scale),)


def test_stack_equals_sum_of_deltas_and_removal_is_exact(model, first, second) -> None:
    (path1, factors1), (path2, factors2) = first, second
    before = _weights(model)
    apply_adapters(model, [(read_adapter(path1), 0.8), (path2, -1.5)])
    _assert_weights(model, before, _add(_lora_changes(factors1, 0.8 * ALPHA / RANK),
                                        _lora_changes(factors2, -1.5 * 2.0 / 2)))
    assert remove_adapters(model) == len(MODULES)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert remove_adapters(model) == 0 and active_adapters(model) == ()


def test_a_new_stack_replaces_the_old_one(model, first, second) -> None:
    (path1, factors1), (path2, _) = first, second
    before = _weights(model)
    apply_adapters(model, [(path2, 1.0)])
    apply_adapters(model, [(path1, 0.5)])
    _assert_weights(model, before, _lora_changes(factors1, 0.5 * ALPHA / RANK))
    apply_adapters(model, [(path1, 0.0)])
    _assert_weights(model, before, {})


def test_dora_against_the_formula(model, tmp_path: Path) -> None:
    """Scale 1 is PEFT's merge m·(W+ΔW)/‖W+ΔW‖ (per output row); other scales interpolate from W."""
    factors = A.random_lora(SHAPES, MODULES, RANK, seed=23)
    mags = A.random_magnitudes(SHAPES, MODULES, seed=24)
    folder = A.write_peft_folder(tmp_path / "dora", factors, r=RANK, alpha=ALPHA, use_dora=True, magnitudes=mags)
    before = _weights(model)
    adapted = {m + ".weight": A.dora_weight(before[m + ".weight"], A.lora_delta(a, b, ALPHA / RANK), mags[m])
               for m, (a, b) in factors.items()}
    change = {k: v - before[k].double() for k, v in adapted.items()}
    for scale in (1.0, 0.5, -0.25):
        apply_adapters(model, [(folder, scale)])
        _assert_weights(model, before, {k: scale * v for k, v in change.items()})
    apply_adapters(model, [(folder, 1.0)])
    for module in MODULES:
        torch.testing.assert_close(model.state_dict()[module + ".weight"].norm(dim=1), mags[module])
        assert not torch.allclose(before[module + ".weight"].norm(dim=1), mags[module])


def test_lokr_and_loha_merge(model, tmp_path: Path) -> None:
    lokr = A.random_lokr(SHAPES, MODULES, 2, seed=25)
    loha = A.random_loha(SHAPES, MODULES[:3], 2, seed=26)
    lokr_path = A.write_lycoris_file(tmp_path / "k.safetensors", lokr, alpha=1.0)
    loha_path = A.write_lycoris_file(tmp_path / "h.safetensors", loha, alpha=2.0, algo="loha")
    before = _weights(model)
    apply_adapters(model, [(lokr_path, 2.0), (loha_path, 1.0)])
    _assert_weights(model, before, _add({m + ".weight": A.lokr_delta(p, 2.0 * 0.5) for m, p in lokr.items()},
                                        {m + ".weight": A.loha_delta(p, 1.0) for m, p in loha.items()}))


def test_weight_deltas_for_comfyui_patches(model, first, tmp_path: Path) -> None:
    """`weight_deltas` is exactly what `apply_adapters` adds at scale 1, against the original weights even while
    a stack is merged, under the caller's key prefix."""
    path, _ = first
    factors = A.random_lora(SHAPES, MODULES, RANK, seed=27)
    mags = A.random_magnitudes(SHAPES, MODULES, seed=28)
    dora = A.write_peft_folder(tmp_path / "dora", factors, r=RANK, alpha=ALPHA, use_dora=True, magnitudes=mags)
    before = _weights(model)
    deltas = weight_deltas(dora, model, key_prefix="diffusion_model.")
    assert sorted(deltas) == sorted("diffusion_model." + m + ".weight" for m in MODULES)
    apply_adapters(model, [(path, 1.0)])
    assert all(torch.equal(d, weight_deltas(dora, model, key_prefix="diffusion_model.")[k])
               for k, d in deltas.items())
    apply_adapters(model, [(dora, 1.0)])
    for key, value in model.state_dict().items():
        expected = before[key] + deltas["diffusion_model." + key] if "diffusion_model." + key in deltas else before[key]
        assert torch.equal(value, expected), key


def test_adapter_changes_the_decoder_output_and_removal_restores_it(model, first) -> None:
    case = load_file(A.GOLDEN_DIT / "dit_decoder_t_eq_r.safetensors")
    inputs = {name: case[f"input.{name}"] for name in ("hidden_states", "timestep", "timestep_r",
                                                       "encoder_hidden_states", "context_latents")}
    with torch.no_grad():
        plain = model.decoder(**inputs)
        apply_adapters(model, [(first[0], 1.0)])
        adapted = model.decoder(**inputs)
        remove_adapters(model)
        restored = model.decoder(**inputs)
    assert (adapted - plain).abs().max() > 1e-3
    assert torch.equal(restored, plain)
    torch.testing.assert_close(plain, case["output.velocity"], rtol=1e-5, atol=1e-5)


def test_half_precision_and_a_bare_decoder(first) -> None:
    """bf16 weights come back bit for bit; a decoder alone (keys without `decoder.`) takes the same adapter."""
    model = A.tiny_dit().to(torch.bfloat16)
    decoder = model.decoder
    before = _weights(decoder)
    touched = apply_adapters(decoder, [(first[0], 1.0)])
    assert "layers.0.self_attn.q_proj.weight" in touched
    assert not torch.equal(decoder.state_dict()["layers.0.self_attn.q_proj.weight"],
                           before["layers.0.self_attn.q_proj.weight"])
    remove_adapters(decoder)
    assert all(torch.equal(v, before[k]) for k, v in decoder.state_dict().items())
