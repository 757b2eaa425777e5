"""Every malformed adapter gives an `AceStepError` that names the file; a misfit never touches the weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from acestep_core.errors import AceStepError
from acestep_core.lora import apply_adapters, check_fits, read_adapter
from tests.core import tiny_adapters as A

SHAPES = A.golden_shapes()
MODULES = A.attention_modules(SHAPES)
FACTORS = A.random_lora(SHAPES, MODULES, 4, seed=31)


def _peft(tmp: Path) -> Path:
    return A.write_peft_folder(tmp / "adapter", FACTORS, r=4, alpha=8)


def _edit_config(tmp: Path, **changes) -> Path:
    folder = _peft(tmp)
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _edit_weights(tmp: Path, edit: Callable[[dict], None], name: str = "lora.safetensors") -> Path:
    tensors = {}
    for module, (a, b) in FACTORS.items():
        tensors[f"diffusion_model.{module}.lora_A.weight"] = a
        tensors[f"diffusion_model.{module}.lora_B.weight"] = b
    edit(tensors)
    save_file(tensors, tmp / name)
    return tmp / name


def _missing_config(tmp: Path) -> Path:
    folder = _peft(tmp)
    (folder / "adapter_config.json").unlink()
    return folder


def _missing_weights(tmp: Path) -> Path:
    folder = _peft(tmp)
    (folder / "adapter_model.safetensors").unlink()
    return folder


def _bad_json(tmp: Path) -> Path:
    folder = _peft(tmp)
    (folder / "adapter_config.json").write_text("{\"r\": 4,")
    return folder


def _truncated(tmp: Path) -> Path:
    path = A.write_lora_file(tmp / "cut.safetensors", FACTORS, style="diffusion_model", alpha=4.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_safetensors(tmp: Path) -> Path:
    path = tmp / "noise.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    return path


def _pickle(tmp: Path) -> Path:
    path = tmp / "lora.pt"
    torch.save({"x": torch.zeros(1)}, path)
    return path


def _no_tensors(tmp: Path) -> Path:
    return _edit_weights(tmp, lambda t: t.clear())


def _unknown_keys(tmp: Path) -> Path:
    return _edit_weights(tmp, lambda t: t.update({"diffusion_model.decoder.norm_out.weight": torch.ones(64)}))


def _lone_lora_a(tmp: Path) -> Path:
    return _edit_weights(tmp, lambda t: t.pop(f"diffusion_model.{MODULES[0]}.lora_B.weight"))


def _ranks_disagree(tmp: Path) -> Path:
    key = f"diffusion_model.{MODULES[0]}.lora_B.weight"
    return _edit_weights(tmp, lambda t: t.update({key: t[key][:, :3].contiguous()}))


def _alpha_vector(tmp: Path) -> Path:
    return _edit_weights(tmp, lambda t: t.update({f"diffusion_model.{MODULES[0]}.alpha": torch.ones(3)}))


def _stray_alpha(tmp: Path) -> Path:
    return _edit_weights(tmp, lambda t: t.update({"diffusion_model.decoder.layers.0.mlp.up_proj.alpha": torch.ones(())}))


def _two_spellings(tmp: Path) -> Path:
    a, b = FACTORS[MODULES[0]]
    extra = {f"base_model.model.{MODULES[0][len('decoder.'):]}.lora_A.weight": a.clone(),
             f"base_model.model.{MODULES[0][len('decoder.'):]}.lora_B.weight": b.clone()}
    return _edit_weights(tmp, lambda t: t.update(extra))


def _tucker(tmp: Path) -> Path:
    parts = A.random_lokr(SHAPES, MODULES[:1], 2, seed=32)
    parts[MODULES[0]]["lokr_t2"] = torch.ones(2, 2)
    return A.write_lycoris_file(tmp / "tucker.safetensors", parts, alpha=1.0)


def _lokr_half(tmp: Path) -> Path:
    parts = A.random_lokr(SHAPES, MODULES[:1], 2, seed=33)
    del parts[MODULES[0]]["lokr_w2_b"]
    return A.write_lycoris_file(tmp / "half.safetensors", parts, alpha=1.0)


def _rank_not_config(tmp: Path) -> Path:
    return _edit_config(tmp, r=8)


def _dora_without_magnitudes(tmp: Path) -> Path:
    return _edit_config(tmp, use_dora=True)


def _other_peft_type(tmp: Path) -> Path:
    return _edit_config(tmp, peft_type="IA3")


def _no_alpha_in_config(tmp: Path) -> Path:
    folder = _peft(tmp)
    config = json.loads((folder / "adapter_config.json").read_text())
    del config["lora_alpha"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _not_an_adapter_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


CASES = {
    "missing config": (_missing_config, "no adapter_config.json"),
    "missing weights": (_missing_weights, "no adapter_model.safetensors"),
    "config not JSON": (_bad_json, "Cannot read"),
    "config without lora_alpha": (_no_alpha_in_config, "no numeric 'lora_alpha'"),
    "rank differs from config": (_rank_not_config, "has rank 4 but adapter_config.json says 8"),
    "use_dora without magnitudes": (_dora_without_magnitudes, "use_dora=True"),
    "other PEFT method": (_other_peft_type, "peft_type 'IA3'"),
    "truncated file": (_truncated, "damaged or incomplete"),
    "not safetensors": (_not_safetensors, "damaged or incomplete"),
    "pickle": (_pickle, "pickled"),
    "no tensors": (_no_tensors, "holds no tensors"),
    "unknown keys": (_unknown_keys, "not LoRA/LoKr/LoHa/DoRA factors"),
    "lora_A without lora_B": (_lone_lora_a, "lacks lora_B/lora_up"),
    "ranks disagree": (_ranks_disagree, "do not multiply"),
    "alpha with several values": (_alpha_vector, "alpha with 3 values"),
    "alpha without factors": (_stray_alpha, "no weight factors"),
    "module written twice": (_two_spellings, "twice"),
    "tucker LoKr": (_tucker, "Tucker"),
    "LoKr half a factor": (_lokr_half, "lacks lokr_w2_b"),
    "folder without adapter": (_not_an_adapter_folder, "not an adapter"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_adapter(tmp_path: Path, case: str) -> None:
    make, message = CASES[case]
    path = make(tmp_path)
    with pytest.raises(AceStepError, match=message) as caught:
        read_adapter(path)
    assert str(path) in str(caught.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(AceStepError, match=re.escape(str(tmp_path / "nowhere")) + " does not exist"):
        read_adapter(tmp_path / "nowhere")


def _wider(tmp: Path) -> Path:
    """An adapter for a DiT twice as wide (as an XL adapter is for a 2B DiT)."""
    wide = {k: (v[0], v[1] * 2) if len(v) == 2 else v for k, v in SHAPES.items()}
    return A.write_lora_file(tmp / "wide.safetensors", A.random_lora(wide, MODULES, 4, seed=34), style="base_model")


def _deeper(tmp: Path) -> Path:
    """An adapter for a deeper DiT: layers the loaded one does not have."""
    deep = dict(SHAPES)
    deep["decoder.layers.9.self_attn.q_proj.weight"] = SHAPES["decoder.layers.0.self_attn.q_proj.weight"]
    return A.write_lora_file(tmp / "deep.safetensors",
                             A.random_lora(deep, ["decoder.layers.9.self_attn.q_proj"] + MODULES[:1], 4, seed=35),
                             style="kohya")


@pytest.mark.parametrize("make, message", [
    (_wider, r"32 have other shapes \(e\.g\. decoder\.layers\.0\.cross_attn\.k_proj: adapter \[32, 128\], "
             r"model \[32, 64\].*made for a DiT 128 wide"),
    (_deeper, r"1 of 2 modules are not in the model \(e\.g\. decoder\.layers\.9\.self_attn\.q_proj\)"),
])
def test_wrong_model(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    model = A.tiny_dit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AceStepError, match=message) as caught:
        check_fits(path, model)
    assert str(path) in str(caught.value)
    good = A.write_peft_folder(tmp_path / "good", FACTORS, r=4, alpha=8)
    with pytest.raises(AceStepError, match="does not fit this DiT"):
        apply_adapters(model, [(good, 1.0), (path, 1.0)])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
