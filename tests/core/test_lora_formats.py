"""Reading adapters in every layout, the inspector, and PEFT save → read round trips (tiny golden DiT shapes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from acestep_core.errors import AceStepError
from acestep_core.lora import inspect_adapter, lora_adapter, read_adapter, save_peft_adapter
from tests.core import tiny_adapters as A

SHAPES = A.golden_shapes()
MODULES = A.attention_modules(SHAPES)
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def factors() -> A.Factors:
    return A.random_lora(SHAPES, MODULES, RANK, seed=1)


def _assert_deltas(adapter, expected: dict[str, torch.Tensor]) -> None:
    assert sorted(adapter.modules) == sorted(expected)
    for module, delta in expected.items():
        got = adapter.modules[module].dense_delta(torch.Size(SHAPES[module + ".weight"]))
        torch.testing.assert_close(got.double(), delta, rtol=1e-5, atol=1e-6, msg=module)


def test_official_peft_folder(tmp_path: Path, factors: A.Factors) -> None:
    folder = A.write_peft_folder(tmp_path / "my_style", factors, r=RANK, alpha=ALPHA)
    adapter = read_adapter(folder)
    assert (adapter.format, adapter.key_style) == ("PEFT LoRA folder", "base_model.model.")
    assert adapter.ranks == (RANK,) and adapter.alphas == (ALPHA,)
    assert adapter.target_modules == ("k_proj", "o_proj", "q_proj", "v_proj")
    assert len(adapter.modules) == 4 * 2 * 4 and not adapter.is_dora
    _assert_deltas(adapter, {m: A.lora_delta(a, b, ALPHA / RANK) for m, (a, b) in factors.items()})


def test_peft_folder_entry_points(tmp_path: Path, factors: A.Factors) -> None:
    """The weights file, the config file, the official trainer's output folder and a whole-model wrap all read
    as the same adapter (alpha from the config)."""
    folder = A.write_peft_folder(tmp_path / "run" / "adapter", factors, r=RANK, alpha=ALPHA)
    whole = A.write_peft_folder(tmp_path / "whole", factors, r=RANK, alpha=ALPHA, whole_model=True)
    expected = {m: A.lora_delta(a, b, ALPHA / RANK) for m, (a, b) in factors.items()}
    for path in (folder / "adapter_model.safetensors", folder / "adapter_config.json", tmp_path / "run", whole):
        _assert_deltas(read_adapter(path), expected)


@pytest.mark.parametrize("style", sorted(A.LORA_STYLES))
@pytest.mark.parametrize("alpha", [None, 2.0])
def test_single_files(tmp_path: Path, factors: A.Factors, style: str, alpha) -> None:
    path = A.write_lora_file(tmp_path / "loras" / f"{style}.safetensors", factors, style=style, alpha=alpha)
    adapter = read_adapter(path)
    assert adapter.format == "LoRA file"
    scale = 1.0 if alpha is None else alpha / RANK
    _assert_deltas(adapter, {m: A.lora_delta(a, b, scale) for m, (a, b) in factors.items()})
    assert any("no alpha" in note for note in adapter.notes) == (alpha is None)


def test_rslora_and_patterns(tmp_path: Path) -> None:
    """rsLoRA divides by √r; alpha_pattern/rank_pattern give per-module values (PEFT's suffix match)."""
    odd = [m for m in MODULES if m.endswith("cross_attn.v_proj")]
    factors = A.random_lora(SHAPES, [m for m in MODULES if m not in odd], RANK, seed=2)
    factors.update(A.random_lora(SHAPES, odd, 2, seed=3))
    folder = A.write_peft_folder(tmp_path / "rs", factors, r=RANK, alpha=ALPHA, use_rslora=True,
                                 alpha_pattern={"self_attn.q_proj": 3}, rank_pattern={"cross_attn.v_proj": 2})
    adapter = read_adapter(folder)
    expected = {}
    for module, (a, b) in factors.items():
        alpha = 3 if module.endswith("self_attn.q_proj") else ALPHA
        expected[module] = A.lora_delta(a, b, alpha / math.sqrt(a.shape[0]))
    _assert_deltas(adapter, expected)
    assert adapter.ranks == (2, RANK) and adapter.alphas == (3.0, ALPHA)


@pytest.mark.parametrize("rank, split_w1", [(2, False), (2, True), (None, False)])
def test_lokr(tmp_path: Path, rank, split_w1: bool) -> None:
    parts = A.random_lokr(SHAPES, MODULES, rank, seed=4, split_w1=split_w1)
    config = {"linear_dim": rank or 64, "linear_alpha": 4, "target_modules": list(A.ATTENTION)}
    path = A.write_lycoris_file(tmp_path / "out" / "lokr_weights.safetensors", parts, alpha=4.0, config=config)
    adapter = read_adapter(tmp_path / "out")
    assert adapter.format == "LoKr file" and adapter.key_style == "lycoris_" and adapter.path == path
    assert adapter.config["linear_dim"] == config["linear_dim"]
    # ComfyUI/LyCORIS: alpha / rank of w2_b; a LoKr with full matrices has scale 1.
    scale = 1.0 if rank is None else 4.0 / rank
    _assert_deltas(adapter, {m: A.lokr_delta(p, scale) for m, p in parts.items()})


def test_loha(tmp_path: Path) -> None:
    parts = A.random_loha(SHAPES, MODULES, 2, seed=5)
    adapter = read_adapter(A.write_lycoris_file(tmp_path / "loha.safetensors", parts, alpha=1.0, algo="loha"))
    assert adapter.format == "LoHa file"
    _assert_deltas(adapter, {m: A.loha_delta(p, 0.5) for m, p in parts.items()})


def test_dora_magnitude_axes(tmp_path: Path, factors: A.Factors) -> None:
    """PEFT magnitudes and LyCORIS `[out, 1]` are per output row; LyCORIS `[1, in]` per input column."""
    mags = A.random_magnitudes(SHAPES, MODULES, seed=6)
    peft = read_adapter(A.write_peft_folder(tmp_path / "d", factors, r=RANK, alpha=ALPHA, use_dora=True,
                                            magnitudes=mags))
    rows = read_adapter(A.write_lora_file(tmp_path / "rows.safetensors", factors, style="down_up",
                                          dora_scale={m: v[:, None] for m, v in mags.items()}))
    columns = read_adapter(A.write_lora_file(
        tmp_path / "cols.safetensors", factors, style="down_up",
        dora_scale={m: torch.ones(1, SHAPES[m + ".weight"][1]) for m in MODULES}))
    assert peft.is_dora and peft.format == "PEFT LoRA folder"
    assert {d.magnitude_axis for d in peft.modules.values()} == {"out"}
    assert {d.magnitude_axis for d in rows.modules.values()} == {"out"}
    assert {d.magnitude_axis for d in columns.modules.values()} == {"in"}
    module = MODULES[0]
    assert torch.equal(peft.modules[module].magnitude, mags[module])


def test_inspector(tmp_path: Path, factors: A.Factors) -> None:
    folder = A.write_peft_folder(tmp_path / "a", factors, r=RANK, alpha=ALPHA,
                                 base_model="ACE-Step/Ace-Step1.5/acestep-v15-turbo")
    report = inspect_adapter(folder, A.tiny_dit())
    assert report.fits is True and report.problems == ()
    assert report.trained_on == "turbo (ACE-Step/Ace-Step1.5/acestep-v15-turbo)"
    assert report.dit_width == SHAPES["decoder.layers.0.self_attn.q_proj.weight"][1]
    assert (report.ranks, report.alphas, report.scales) == ((RANK,), (ALPHA,), (ALPHA / RANK,))
    text = report.describe()
    for fact in ("PEFT LoRA folder", "rank: 4", "alpha: 8", "q_proj", "fits the loaded DiT: yes", str(folder)):
        assert fact in text
    assert inspect_adapter(folder).fits is None


def test_inspector_flags_untrained_and_misfit(tmp_path: Path, factors: A.Factors) -> None:
    fresh = {m: (a, torch.zeros_like(b)) for m, (a, b) in factors.items()}
    report = inspect_adapter(A.write_peft_folder(tmp_path / "fresh", fresh, r=RANK, alpha=ALPHA))
    assert any("this adapter has no effect" in note for note in report.notes)
    wide = A.random_lora({k: (v[0], v[1] * 2) if len(v) == 2 else v for k, v in SHAPES.items()}, MODULES[:2],
                         RANK, seed=7)
    report = inspect_adapter(A.write_lora_file(tmp_path / "wide.safetensors", wide, style="base_model"),
                             A.tiny_dit())
    assert report.fits is False and "does not fit this DiT" in report.problems[0]


def _assert_same(first, second) -> None:
    assert sorted(first.modules) == sorted(second.modules)
    for module, delta in first.modules.items():
        other = second.modules[module]
        assert (delta.kind, delta.rank, delta.rslora, delta.magnitude_axis) == (
            other.kind, other.rank, other.rslora, other.magnitude_axis)
        assert math.isclose(delta.scale, other.scale, rel_tol=1e-12)
        for name, tensor in delta.factors.items():
            assert torch.equal(tensor, other.factors[name]), (module, name)
        if delta.magnitude is not None:
            assert torch.equal(delta.magnitude, other.magnitude)


@pytest.mark.parametrize("variant", ["plain", "dora", "rslora_patterns"])
def test_peft_round_trip(tmp_path: Path, variant: str) -> None:
    factors = A.random_lora(SHAPES, MODULES, RANK, seed=8)
    kwargs: dict = {}
    if variant == "dora":
        kwargs = {"use_dora": True, "magnitudes": A.random_magnitudes(SHAPES, MODULES, seed=9)}
    if variant == "rslora_patterns":
        factors.update(A.random_lora(SHAPES, [MODULES[0]], 2, seed=10))
        kwargs = {"use_rslora": True, "alpha_pattern": {MODULES[1][len("decoder."):]: 5},
                  "rank_pattern": {MODULES[0][len("decoder."):]: 2}}
    original = read_adapter(A.write_peft_folder(tmp_path / "in", factors, r=RANK, alpha=ALPHA, **kwargs))
    saved = save_peft_adapter(original, tmp_path / "out", base_model_name_or_path="acestep-v15-base")
    again = read_adapter(saved)
    _assert_same(original, again)
    config = json.loads((saved / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] == (variant == "dora")
    assert config["target_modules"] == sorted(A.ATTENTION)
    assert inspect_adapter(again).trained_on == "base (acestep-v15-base)"
    with pytest.raises(AceStepError, match="already exists"):
        save_peft_adapter(original, saved)


def test_save_in_memory_and_single_file_adapters(tmp_path: Path) -> None:
    """A training loop's factors and a ComfyUI file without alpha both save as PEFT with their exact scale."""
    factors = A.random_lora(SHAPES, MODULES, RANK, seed=11)
    trained = lora_adapter(factors, alpha=16.0, name="trained")
    _assert_same(trained, read_adapter(save_peft_adapter(trained, tmp_path / "trained")))
    single = read_adapter(A.write_lora_file(tmp_path / "c.safetensors", factors, style="diffusion_model"))
    again = read_adapter(save_peft_adapter(single, tmp_path / "converted"))
    _assert_same(single, again)
    assert again.alphas == (float(RANK),)


def test_lokr_cannot_be_saved_as_peft(tmp_path: Path) -> None:
    parts = A.random_lokr(SHAPES, MODULES, 2, seed=12)
    adapter = read_adapter(A.write_lycoris_file(tmp_path / "k.safetensors", parts, alpha=1.0))
    with pytest.raises(AceStepError, match="only decoder LoRA/DoRA modules"):
        save_peft_adapter(adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()
