"""Adapters on the ACE-Step DiT: read every format, inspect, check the fit, merge a stack, remove exactly.

- `read_adapter(path)` parses PEFT folders, ComfyUI/kohya single files, LoKr, LoHa and DoRA into an
  `Adapter` (see `lora_formats` for the key layouts and `lora_io` for the readers and the PEFT writer).
- `inspect_adapter(adapter, model)` reports format, rank, alpha, targets, the DiT it was made for where that
  is knowable, and whether it fits `model`; `check_fits` raises `AceStepError` naming what does not fit.
- `apply_adapters(model, [(adapter, scale), …])` merges the stack into the weights: W = W0 + Σ scaleᵢ·Δᵢ(W0),
  where Δ is the adapter's change at scale 1 computed against the original weight W0 (so the stack is
  order-free and each DoRA adapter normalises against the base weights, as separate ComfyUI patches do).
  The original tensors are kept, and `remove_adapters` copies them back: the weights return bit for bit.
- `weight_deltas(adapter, model)` gives the same Δ per state-dict key, for ComfyUI's
  `ModelPatcher.add_patches({key: ("diff", (delta,))}, strength_patch=scale)`, which adds strength·Δ.

Scale semantics: a LoRA/LoKr/LoHa adds scale·ΔW (negative scales subtract). A DoRA module at scale 1 gives
PEFT's merged weight m·(W+ΔW)/‖W+ΔW‖ exactly; other scales move linearly between W (0) and that weight
(ComfyUI's rule), so 0 is always "off" and the scale never changes what the norm is taken of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn

from acestep_core.checkpoint_identify import VARIANTS, name_tokens
from acestep_core.errors import AceStepError
from acestep_core.lora_formats import Adapter, ModuleDelta, lora_scale
from acestep_core.lora_io import PathLike, read_adapter, save_peft_adapter

__all__ = [
    "Adapter", "AdapterReport", "ModuleDelta", "active_adapters", "apply_adapters", "check_fits",
    "inspect_adapter", "lora_adapter", "read_adapter", "remove_adapters", "save_peft_adapter", "weight_deltas",
]

AdapterLike = Union[Adapter, PathLike]
# Hidden sizes of the released DiTs (spec dit.md §1): what an adapter's factor widths say it was made for.
DIT_WIDTHS = {2048: "2B", 2560: "XL"}
# Modules whose input width is the DiT's hidden size.
_WIDTH_PROBES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "cross_attn.q_proj",
                 "mlp.gate_proj", "mlp.up_proj")
_STATE_ATTR = "_acestep_adapter_state"
_EXAMPLES = 4


@dataclass
class _AppliedState:
    """Kept on the model while adapters are merged: the untouched tensors (on the CPU) and the stack."""

    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    stack: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class AdapterReport:
    """What `inspect_adapter` found; `describe()` is the text the Inspect node shows."""

    name: str
    path: str
    format: str
    key_style: str
    modules: int
    ranks: tuple[int, ...]
    alphas: tuple[float, ...]
    scales: tuple[float, ...]
    targets: tuple[str, ...]
    dora: bool
    rslora: bool
    dit_width: Optional[int]
    trained_on: Optional[str]
    notes: tuple[str, ...]
    fits: Optional[bool] = None
    problems: tuple[str, ...] = ()

    def describe(self) -> str:
        def listing(values: Sequence[float]) -> str:
            return ", ".join(f"{v:g}" for v in values) or "not stored"

        family = DIT_WIDTHS.get(self.dit_width) if self.dit_width else None
        width = (f"{self.dit_width} ({family} DiT)" if family else str(self.dit_width)) if self.dit_width else "unknown"
        lines = [
            f"{self.name}: {self.format}{' + DoRA' if self.dora else ''}{' (rsLoRA)' if self.rslora else ''}",
            f"file: {self.path}", f"keys: {self.key_style}",
            f"modules: {self.modules} ({', '.join(self.targets)})",
            f"rank: {listing(self.ranks) if self.ranks else 'none (full matrices)'}; alpha: {listing(self.alphas)}; "
            f"scale per module: {listing(self.scales)}",
            f"DiT width: {width}; trained on: {self.trained_on or 'not recorded in the file'}",
        ]
        if self.fits is not None:
            lines.append("fits the loaded DiT: yes" if self.fits else "fits the loaded DiT: NO")
        lines += [f"problem: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _as_adapter(adapter: AdapterLike) -> Adapter:
    return adapter if isinstance(adapter, Adapter) else read_adapter(adapter)


def _dit_width(adapter: Adapter) -> Optional[int]:
    for module, delta in adapter.modules.items():
        if module.startswith("decoder.") and module.endswith(_WIDTH_PROBES):
            return delta.in_numel
    return None


def _trained_on(adapter: Adapter) -> Optional[str]:
    base = adapter.base_model
    if base is None:
        return None
    tokens = name_tokens(base)
    variant = next((v for v in VARIANTS if v in tokens), None)
    family = "XL" if "xl" in tokens else None
    what = " ".join(part for part in (family, variant) if part)
    return f"{what} ({base})" if what else base


def inspect_adapter(adapter: AdapterLike, model: Optional[nn.Module] = None) -> AdapterReport:
    """Describe an adapter, and when `model` is given, whether it fits (problems listed, never raised)."""
    adapter = _as_adapter(adapter)
    deltas = adapter.modules.values()
    fits, problems = None, ()
    if model is not None:
        try:
            check_fits(adapter, model)
            fits = True
        except AceStepError as exc:
            fits, problems = False, (str(exc),)
    return AdapterReport(
        name=adapter.name, path=str(adapter.path), format=adapter.format, key_style=adapter.key_style,
        modules=len(adapter.modules), ranks=adapter.ranks, alphas=adapter.alphas,
        scales=tuple(sorted({round(d.scale, 6) for d in deltas})), targets=adapter.target_modules,
        dora=adapter.is_dora, rslora=any(d.rslora for d in deltas), dit_width=_dit_width(adapter),
        trained_on=_trained_on(adapter), notes=adapter.notes, fits=fits, problems=problems)


def _model_width(params: Mapping[str, torch.Tensor]) -> Optional[int]:
    for name, tensor in params.items():
        if name.endswith(tuple(p + ".weight" for p in _WIDTH_PROBES)):
            return tensor.shape[1]
    return None


def _locate(module: str, params: Mapping[str, torch.Tensor], flat: Mapping[str, str]) -> Optional[str]:
    """The model's weight key for an adapter module path (also for a bare decoder, and by flat name)."""
    names = [module] + ([module[len("decoder."):]] if module.startswith("decoder.") else [])
    for name in names:
        if name + ".weight" in params:
            return name + ".weight"
    for name in names:
        key = flat.get(name.replace(".", "_"))
        if key is not None:
            return key
    return None


def check_fits(adapter: AdapterLike, model: nn.Module) -> dict[str, str]:
    """Map each adapter module to the model's weight key, or raise `AceStepError` naming what does not fit.

    `model` is an `AceStepModel` (keys `decoder.…`) or its bare decoder.
    """
    adapter = _as_adapter(adapter)
    params = dict(model.named_parameters())
    flat = {k[:-len(".weight")].replace(".", "_"): k for k in params if k.endswith(".weight")}
    found, missing, mismatched = {}, [], []
    for module, delta in adapter.modules.items():
        key = _locate(module, params, flat)
        if key is None:
            missing.append(module)
            continue
        shape = params[key].shape
        wanted = f"[{delta.out_features}, {delta.in_numel}]"
        if shape[0] != delta.out_features or math.prod(shape[1:]) != delta.in_numel:
            mismatched.append(f"{module}: adapter {wanted}, model {list(shape)}")
        elif delta.magnitude is not None and not _magnitude_fits(delta, shape):
            mismatched.append(f"{module}: DoRA magnitude of {delta.magnitude.numel()} values, model {list(shape)}")
        else:
            found[module] = key
    if missing or mismatched:
        raise AceStepError(_misfit_message(adapter, params, missing, mismatched))
    return found


def _magnitude_fits(delta: ModuleDelta, shape: torch.Size) -> bool:
    if delta.magnitude_axis == "out":
        return delta.magnitude.numel() == shape[0]
    return len(shape) == 2 and delta.magnitude.numel() == shape[1]


def _misfit_message(adapter: Adapter, params: Mapping[str, torch.Tensor], missing: list[str],
                    mismatched: list[str]) -> str:
    total = len(adapter.modules)
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {total} modules are not in the model (e.g. {', '.join(missing[:_EXAMPLES])})")
    if mismatched:
        parts.append(f"{len(mismatched)} have other shapes (e.g. {'; '.join(mismatched[:_EXAMPLES])})")
    ours, theirs = _model_width(params), _dit_width(adapter)
    if ours and theirs and ours != theirs:
        label = DIT_WIDTHS.get(theirs, "another")
        hint = (f"It was made for a DiT {theirs} wide ({label}) and the loaded DiT is {ours} wide "
                f"({DIT_WIDTHS.get(ours, 'other')}): load the DiT it was trained on.")
    else:
        hint = ("It was probably made for another model (ACE-Step v1 or another architecture); use an adapter "
                "trained on ACE-Step 1.5.")
    return f"LoRA {adapter.path} does not fit this DiT: {'; '.join(parts)}. {hint}"


def _state(model: nn.Module) -> Optional[_AppliedState]:
    return model.__dict__.get(_STATE_ATTR)


def weight_deltas(adapter: AdapterLike, model: nn.Module, *, key_prefix: str = "",
                  dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Δ at scale 1 for each weight the adapter changes, keyed `key_prefix + <state-dict key>`.

    Δ is taken against the model's original weights (the kept originals when adapters are merged). For
    ComfyUI: `patcher.add_patches({k: ("diff", (d,)) for k, d in deltas.items()}, strength_patch=scale)`.
    """
    adapter = _as_adapter(adapter)
    keys = check_fits(adapter, model)
    params = dict(model.named_parameters())
    state = _state(model)
    originals = state.originals if state else {}
    deltas = {}
    for module, key in keys.items():
        weight = params[key].detach()
        base = originals[key].to(weight.device) if key in originals else weight
        deltas[key_prefix + key] = adapter.modules[module].effective_delta(base).to(dtype)
    return deltas


def apply_adapters(model: nn.Module, stack: Sequence[tuple[AdapterLike, float]]) -> tuple[str, ...]:
    """Merge `[(adapter, scale), …]` into the model's weights, replacing any stack merged before.

    Every adapter is checked against the model before any weight changes. Returns the weight keys changed.
    """
    entries = [(_as_adapter(adapter), float(scale)) for adapter, scale in stack]
    plans = [(adapter, scale, check_fits(adapter, model)) for adapter, scale in entries]
    remove_adapters(model)
    params = dict(model.named_parameters())
    per_key: dict[str, list[tuple[ModuleDelta, float]]] = {}
    for adapter, scale, keys in plans:
        if scale == 0.0:
            continue
        for module, key in keys.items():
            per_key.setdefault(key, []).append((adapter.modules[module], scale))
    state = _AppliedState(stack=tuple((adapter.name, scale) for adapter, scale in entries))
    with torch.no_grad():
        for key, changes in per_key.items():
            param = params[key]
            state.originals[key] = param.detach().to("cpu", copy=True)
            base = param.detach().float()
            total = sum(scale * delta.effective_delta(base) for delta, scale in changes)
            param.copy_((base + total).to(param.dtype))
    model.__dict__[_STATE_ATTR] = state
    return tuple(per_key)


def remove_adapters(model: nn.Module) -> int:
    """Copy back the weights kept by `apply_adapters` (bit for bit); returns how many tensors were restored."""
    state = model.__dict__.pop(_STATE_ATTR, None)
    if state is None:
        return 0
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, original in state.originals.items():
            params[key].copy_(original)
    return len(state.originals)


def active_adapters(model: nn.Module) -> tuple[tuple[str, float], ...]:
    """(name, scale) of the adapters merged into `model` now, in the order given."""
    state = _state(model)
    return state.stack if state else ()


def lora_adapter(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, alpha: float,
                 rslora: bool = False, magnitudes: Optional[Mapping[str, torch.Tensor]] = None,
                 name: str = "adapter", path: PathLike = "") -> Adapter:
    """An `Adapter` from trained factors `{module path: (lora_A [r, in], lora_B [out, r])}` (e.g. a training loop).

    Module paths are from the model root (`decoder.layers.0.self_attn.q_proj`); `magnitudes` (DoRA, PEFT
    style, one value per output row) are optional per module.
    """
    modules = {}
    for module, (down, up) in factors.items():
        rank = down.shape[0]
        magnitude = (magnitudes or {}).get(module)
        modules[module] = ModuleDelta(
            kind="lora", factors={"down": down, "up": up}, scale=lora_scale(alpha, rank, rslora), rank=rank,
            alpha=float(alpha), rslora=rslora, magnitude=magnitude,
            magnitude_axis="out" if magnitude is not None else None)
    return Adapter(name=name, path=Path(path), format="LoRA (in memory)", key_style="plain", modules=modules)
