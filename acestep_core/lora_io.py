"""Read adapters from disk (PEFT folders, single files, LoKr/LoHa) into `Adapter`s, and save PEFT folders.

Every problem a user can cause (a missing `adapter_config.json`, a truncated download, keys from another
model or tool, factors whose shapes disagree) raises `AceStepError` naming the file and the fix, before any
model is touched. Unknown keys are an error rather than a warning: a LoRA loaded with half its keys ignored
is the "no audible effect" users report elsewhere.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from acestep_core.errors import AceStepError
from acestep_core.lora_formats import (
    LOHA_PARTS, LOKR_PARTS, LORA_PARTS, Adapter, ModuleDelta, canonical_module, leaf_name, lora_scale, split_key,
)

PathLike = Union[str, Path]
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
LOKR_WEIGHTS = "lokr_weights.safetensors"
# The official trainer writes its PEFT adapter into `<output>/adapter/`.
NESTED_ADAPTER = "adapter"
_EXAMPLES = 4


def read_adapter(path: PathLike) -> Adapter:
    """Read an adapter: a PEFT folder (or a file in one), a single `.safetensors` file, or a LoKr folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AceStepError(f"LoRA {path} does not exist: give a PEFT folder (adapter_config.json + "
                           f"{PEFT_WEIGHTS}), a .safetensors LoRA/LoKr file or a folder holding one.")
    if path.is_dir():
        return _read_folder(path)
    if path.name == PEFT_CONFIG:
        return _read_peft(path.parent)
    if path.suffix.lower() != ".safetensors":
        raise AceStepError(f"LoRA {path} is not a .safetensors file; pickled .pt/.bin adapters are refused "
                           "because loading them can run code. Convert it to safetensors with the tool that made it.")
    if path.name == PEFT_WEIGHTS and (path.parent / PEFT_CONFIG).is_file():
        return _read_peft(path.parent)
    return _read_single_file(path)


def _read_folder(folder: Path) -> Adapter:
    if (folder / PEFT_CONFIG).is_file():
        return _read_peft(folder)
    if (folder / PEFT_WEIGHTS).is_file():
        raise AceStepError(f"LoRA folder {folder} has {PEFT_WEIGHTS} but no {PEFT_CONFIG}: its rank, lora_alpha and "
                           f"target modules live in that file. Copy {PEFT_CONFIG} from where the adapter was "
                           "trained into the folder.")
    if (folder / NESTED_ADAPTER / PEFT_CONFIG).is_file():
        return _read_peft(folder / NESTED_ADAPTER)
    if (folder / LOKR_WEIGHTS).is_file():
        return _read_single_file(folder / LOKR_WEIGHTS)
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return _read_single_file(files[0])
    found = ", ".join(f.name for f in files) or "no .safetensors file"
    raise AceStepError(f"LoRA folder {folder} is not an adapter: expected {PEFT_CONFIG} + {PEFT_WEIGHTS}, "
                       f"{LOKR_WEIGHTS}, or a single .safetensors file (found {found}). Point at the file itself.")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AceStepError(f"Cannot read {path}: {exc}. Restore the file from where the adapter was trained.") from exc
    if not isinstance(value, dict):
        raise AceStepError(f"{path} is not a JSON object; restore the adapter's original {path.name}.")
    return value


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types, OSError and ValueError alike
        raise AceStepError(f"Cannot read LoRA file {path}: {exc}. The file is damaged or incomplete (an interrupted "
                           "download?) or not a safetensors file; download or export it again.") from exc
    if not tensors:
        raise AceStepError(f"LoRA file {path} holds no tensors; export the adapter again.")
    return tensors, metadata


def _read_peft(folder: Path) -> Adapter:
    config_path, weights_path = folder / PEFT_CONFIG, folder / PEFT_WEIGHTS
    config = _read_json(config_path)
    if not weights_path.is_file():
        bins = "; adapter_model.bin is refused (pickle): re-save it with safetensors" if (
            folder / "adapter_model.bin").is_file() else ""
        raise AceStepError(f"LoRA folder {folder} has {PEFT_CONFIG} but no {PEFT_WEIGHTS}{bins}.")
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise AceStepError(f"{config_path} says peft_type {peft_type!r}; only LoRA adapters (with or without DoRA) "
                           "are supported in PEFT folders. LoKr files load as single .safetensors files.")
    for field_name in ("r", "lora_alpha"):
        if not isinstance(config.get(field_name), (int, float)) or isinstance(config.get(field_name), bool):
            raise AceStepError(f"{config_path} has no numeric {field_name!r}; restore the adapter's original "
                               f"{PEFT_CONFIG}.")
    if config.get("fan_in_fan_out"):
        raise AceStepError(f"{config_path} sets fan_in_fan_out, which no ACE-Step module uses; this adapter was "
                           "trained for another model.")
    tensors, metadata = _read_tensors(weights_path)
    rslora = bool(config.get("use_rslora", False))
    alpha_pattern = config.get("alpha_pattern") or {}
    rank_pattern = config.get("rank_pattern") or {}

    def scaling(written: str, rank: int, stored_alpha: Optional[float]) -> tuple[float, float]:
        relative = written.split("base_model.model.", 1)[-1]
        expected_rank = _pattern_value(rank_pattern, relative, config["r"])
        if rank != expected_rank:
            raise AceStepError(f"{weights_path}: module {relative} has rank {rank} but {PEFT_CONFIG} says "
                               f"{expected_rank}; the config does not belong to these weights.")
        alpha = stored_alpha if stored_alpha is not None else float(_pattern_value(alpha_pattern, relative,
                                                                                   config["lora_alpha"]))
        return alpha, lora_scale(alpha, rank, rslora)

    adapter = _build(weights_path, tensors, metadata, config, scaling, rslora, name=folder.name,
                     path=folder, kind_label="PEFT LoRA folder")
    wants_dora = bool(config.get("use_dora", False))
    if wants_dora != adapter.is_dora:
        raise AceStepError(f"{config_path} says use_dora={wants_dora} but {weights_path.name} "
                           f"{'has no' if wants_dora else 'has'} DoRA magnitudes; the files do not belong together.")
    return adapter


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern rule: a key matches the end of the module path at a dot boundary."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_single_file(path: Path) -> Adapter:
    tensors, metadata = _read_tensors(path)
    config: dict[str, Any] = {}
    for key in ("lokr_config", "loha_config", "adapter_config", "peft_config"):
        text = metadata.get(key)
        if text:
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                config.update(parsed)
    for key in ("base_model_name_or_path", "base_model"):
        if metadata.get(key) and "base_model_name_or_path" not in config:
            config["base_model_name_or_path"] = metadata[key]

    def scaling(written: str, rank: int, stored_alpha: Optional[float]) -> tuple[Optional[float], float]:
        return stored_alpha, lora_scale(stored_alpha, rank, False)

    return _build(path, tensors, metadata, config, scaling, False, name=path.stem, path=path, kind_label=None)


def _build(weights_path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
           config: Mapping[str, Any], scaling: Any, rslora: bool, *, name: str, path: Path,
           kind_label: Optional[str]) -> Adapter:
    """Group keys per module, check them and make the `ModuleDelta`s (`scaling` supplies alpha and scale)."""
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    keys_of: dict[str, list[str]] = defaultdict(list)
    unknown = []
    for key, tensor in tensors.items():
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        groups[split[0]][split[1]] = tensor
        keys_of[split[0]].append(key)
    if unknown:
        raise AceStepError(f"LoRA {weights_path} has {len(unknown)} key(s) that are not LoRA/LoKr/LoHa/DoRA factors "
                           f"(e.g. {', '.join(sorted(unknown)[:_EXAMPLES])}): it was saved by a tool or for a model "
                           "we do not read. Export it as a PEFT or ComfyUI LoRA.")
    modules: dict[str, ModuleDelta] = {}
    styles = set()
    for written, parts in sorted(groups.items()):
        module, style = canonical_module(written)
        if module in modules:
            raise AceStepError(f"LoRA {weights_path} changes module {module} twice (as {written} and another "
                               "spelling); the file mixes two adapters. Export it again.")
        styles.add(style)
        modules[module] = _module_delta(weights_path, written, parts, scaling, rslora, tuple(keys_of[written]))
    kinds = sorted({delta.kind for delta in modules.values()})
    label = kind_label or {"lora": "LoRA file", "lokr": "LoKr file", "loha": "LoHa file"}.get(kinds[0], kinds[0])
    if len(kinds) > 1:
        label = "mixed " + "/".join(kinds) + " file"
    notes = _notes(modules, kind_label is None)
    return Adapter(name=name, path=path, format=label, key_style=", ".join(sorted(styles)), modules=modules,
                   config=dict(config), metadata=dict(metadata), notes=notes)


def _module_delta(weights_path: Path, written: str, parts: Mapping[str, torch.Tensor], scaling: Any,
                  rslora: bool, keys: tuple[str, ...]) -> ModuleDelta:
    def fail(problem: str) -> AceStepError:
        return AceStepError(f"LoRA {weights_path}: module {written} {problem}. The file is damaged or was "
                            "edited; export the adapter again.")

    families = [fam for fam, table in (("lora", LORA_PARTS), ("lokr", LOKR_PARTS), ("loha", LOHA_PARTS))
                if any(part in table for part in parts)]
    if len(families) != 1:
        raise fail("has " + ("no weight factors, only " + ", ".join(sorted(parts)) if not families
                             else "factors of several algorithms (" + ", ".join(families) + ")"))
    kind = families[0]
    table = {"lora": LORA_PARTS, "lokr": LOKR_PARTS, "loha": LOHA_PARTS}[kind]
    factors = {table[part]: tensor for part, tensor in parts.items() if part in table}
    if "t1" in factors or "t2" in factors:
        raise fail("uses a Tucker decomposition (lokr_t2/hada_t1/hada_t2), which only convolutions use; ACE-Step "
                   "adapters target linear layers")
    if "alpha" in parts and parts["alpha"].numel() != 1:
        raise fail(f"has an alpha with {parts['alpha'].numel()} values instead of one")
    stored_alpha = float(parts["alpha"].float().item()) if "alpha" in parts else None
    rank = _check_factors(kind, factors, fail)
    if kind == "lora":
        alpha, scale = scaling(written, rank, stored_alpha)
    else:
        alpha = stored_alpha
        scale = lora_scale(alpha, rank, False) if rank is not None else 1.0
    magnitude, axis = _magnitude(parts, fail)
    return ModuleDelta(kind=kind, factors=factors, scale=scale, rank=rank, alpha=alpha,
                       rslora=rslora and kind == "lora", magnitude=magnitude, magnitude_axis=axis, source_keys=keys)


def _check_factors(kind: str, f: Mapping[str, torch.Tensor], fail: Any) -> Optional[int]:
    """Check that the factors chain together; return the rank that divides alpha (None: full LoKr, scale 1)."""
    def written(name: str) -> str:
        return {"down": "lora_A/lora_down", "up": "lora_B/lora_up"}.get(name) or (
            ("lokr_" if kind == "lokr" else "hada_") + name)

    def need(*names: str) -> None:
        missing = [n for n in names if n not in f]
        if missing:
            raise fail(f"lacks {', '.join(map(written, missing))} (has {', '.join(map(written, sorted(f)))})")

    if kind == "lora":
        need("down", "up")
        if f["down"].dim() < 2 or f["up"].dim() < 2 or f["up"][0].numel() != f["down"].shape[0]:
            raise fail(f"has factors that do not multiply: up {list(f['up'].shape)} · down {list(f['down'].shape)}")
        return f["down"].shape[0]
    if kind == "loha":
        need("w1_a", "w1_b", "w2_a", "w2_b")
        for side in ("w1", "w2"):
            a, b = f[f"{side}_a"], f[f"{side}_b"]
            if a.dim() != 2 or a.shape[1] != b.shape[0]:
                raise fail(f"has {side} factors that do not multiply: {list(a.shape)} · {list(b.shape)}")
        if f["w1_a"].shape[0] != f["w2_a"].shape[0] or f["w1_b"][0].numel() != f["w2_b"][0].numel():
            raise fail("has two Hadamard halves of different shapes")
        return f["w1_b"].shape[0]
    if ("w1" in f) == ("w1_a" in f or "w1_b" in f) or ("w2" in f) == ("w2_a" in f or "w2_b" in f):
        raise fail(f"needs lokr_w1 or lokr_w1_a+lokr_w1_b, and lokr_w2 or lokr_w2_a+lokr_w2_b (has {', '.join(sorted(f))})")
    rank = None
    for side in ("w1", "w2"):
        if side not in f:
            need(f"{side}_a", f"{side}_b")
            a, b = f[f"{side}_a"], f[f"{side}_b"]
            if a.dim() != 2 or a.shape[1] != b.shape[0]:
                raise fail(f"has {side} factors that do not multiply: {list(a.shape)} · {list(b.shape)}")
            rank = b.shape[0]  # ComfyUI and LyCORIS divide alpha by w2_b's rank when both sides are split
    if ("w1" in f and f["w1"].dim() != 2) or ("w1_b" in f and f["w1_b"].dim() != 2):
        raise fail("has a lokr_w1 that is not a matrix")
    return rank


def _magnitude(parts: Mapping[str, torch.Tensor], fail: Any) -> tuple[Optional[torch.Tensor], Optional[str]]:
    if "lora_magnitude_vector" in parts and "dora_scale" in parts:
        raise fail("has both lora_magnitude_vector and dora_scale")
    if "lora_magnitude_vector" in parts:
        return parts["lora_magnitude_vector"].reshape(-1), "out"
    if "dora_scale" not in parts:
        return None, None
    scale = parts["dora_scale"]
    if scale.dim() >= 2 and scale.shape[0] == 1 and scale.numel() > 1:
        return scale.reshape(-1), "in"
    return scale.reshape(-1), "out"


def _notes(modules: Mapping[str, ModuleDelta], single_file: bool) -> tuple[str, ...]:
    notes = []
    no_alpha = [m for m, d in modules.items() if d.kind == "lora" and d.alpha is None]
    if single_file and no_alpha:
        notes.append(f"{len(no_alpha)} of {len(modules)} modules store no alpha: scale 1 (alpha = rank) assumed, as "
                     "ComfyUI does. If this file came out of a PEFT folder, load the folder so that lora_alpha from "
                     f"{PEFT_CONFIG} applies.")
    zero = [m for m, d in modules.items() if d.is_zero]
    if zero:
        what = "all modules" if len(zero) == len(modules) else f"{len(zero)} of {len(modules)} modules"
        notes.append(f"{what} have a zero factor and change nothing (untrained or filtered out by the trainer)"
                     + (": this adapter has no effect." if len(zero) == len(modules) else "."))
    return tuple(notes)


def save_peft_adapter(adapter: Adapter, folder: PathLike, *, base_model_name_or_path: Optional[str] = None,
                      dtype: Optional[torch.dtype] = None) -> Path:
    """Write `adapter` as the official trainer's PEFT folder (keys relative to the decoder) and return it.

    Only LoRA (and PEFT-style DoRA) modules of the decoder can be written in that form. Ranks and alphas that
    differ between modules go to `rank_pattern`/`alpha_pattern`; the alpha written reproduces each module's
    scale exactly (alpha = scale·r, or scale·√r with rsLoRA). Existing adapter files are never overwritten.
    """
    folder = Path(folder).expanduser()
    config_path, weights_path = folder / PEFT_CONFIG, folder / PEFT_WEIGHTS
    for existing in (config_path, weights_path):
        if existing.exists():
            raise AceStepError(f"{existing} already exists; choose a new folder for the adapter.")
    rslora = {d.rslora for d in adapter.modules.values()}
    if len(rslora) > 1:
        raise AceStepError(f"Adapter {adapter.name} mixes rsLoRA and plain modules; PEFT cannot store that.")
    use_rslora = rslora.pop() if rslora else False
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for module, delta in adapter.modules.items():
        if delta.kind != "lora" or not module.startswith("decoder."):
            raise AceStepError(f"Adapter {adapter.name}: module {module} is a {delta.kind} change"
                               f"{'' if module.startswith('decoder.') else ' outside the decoder'}; only decoder "
                               "LoRA/DoRA modules can be saved as a PEFT folder.")
        if delta.magnitude is not None and delta.magnitude_axis != "out":
            raise AceStepError(f"Adapter {adapter.name}: module {module} has a per-input-column DoRA magnitude "
                               "(LyCORIS style); PEFT stores one per output row, so it cannot be saved as PEFT.")
        relative = module[len("decoder."):]
        prefix = f"base_model.model.{relative}"
        rank = delta.factors["down"].shape[0]
        tensors[f"{prefix}.lora_A.weight"] = delta.factors["down"]
        tensors[f"{prefix}.lora_B.weight"] = delta.factors["up"]
        if delta.magnitude is not None:
            tensors[f"{prefix}.lora_magnitude_vector"] = delta.magnitude
        ranks[relative] = rank
        alphas[relative] = delta.alpha if delta.alpha is not None else delta.scale * (
            rank ** 0.5 if use_rslora else rank)
    if not tensors:
        raise AceStepError(f"Adapter {adapter.name} changes no module; nothing to save.")
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = {
        "peft_type": "LORA", "task_type": "FEATURE_EXTRACTION", "base_model_name_or_path": base_model_name_or_path,
        "r": rank, "lora_alpha": _json_number(alpha),
        "target_modules": sorted({leaf_name(m) for m in ranks}),
        "rank_pattern": {m: r for m, r in ranks.items() if r != rank},
        "alpha_pattern": {m: _json_number(a) for m, a in alphas.items() if a != alpha},
        "use_dora": adapter.is_dora, "use_rslora": use_rslora, "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.to(dtype) if dtype else v).contiguous() for k, v in tensors.items()}, str(weights_path),
              metadata={"format": "pt"})
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def _json_number(value: float) -> Union[int, float]:
    return int(value) if float(value).is_integer() else float(value)
