"""Reading checkpoint files: safetensors (one file or shards), `config.json`, and the DiT's silence latent.

Headers are parsed and checked here before any tensor is read, so a truncated download, a missing shard or a
file of the wrong kind is reported with the file's name and a fix instead of a low-level library error. Tensors
are then read one at a time and cast straight to the target dtype and device, so loading never holds a second
full-precision copy of a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import torch

from acestep_core.errors import AceStepError

PathLike = Union[str, Path]

SHARD_INDEX_SUFFIX = ".safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000
REDOWNLOAD_HINT = "download it again (see acestep_core.checkpoint_download) or copy it again from its source"

# safetensors dtype codes → (torch dtype, bytes per element)
_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives (file and stored name) and the shape it is delivered in.

    `shape` differs from `stored_shape` only for the reshapes key normalisation asks for (ComfyUI's `[C]` snake
    parameters become `[1, C, 1]`); the element count is always the same.
    """

    file: Path
    key: str
    stored_shape: tuple[int, ...]
    dtype: str
    shape: tuple[int, ...]

    def reshaped(self, shape: tuple[int, ...]) -> "TensorRef":
        return TensorRef(self.file, self.key, self.stored_shape, self.dtype, tuple(shape))


@dataclass(frozen=True)
class CheckpointFiles:
    """Every tensor of one checkpoint (a single file or all shards), by stored name, with header metadata."""

    source: Path
    tensors: dict[str, TensorRef]
    metadata: dict[str, str]

    @property
    def files(self) -> list[Path]:
        return sorted({ref.file for ref in self.tensors.values()})

    @property
    def stored_dtypes(self) -> set[str]:
        return {ref.dtype for ref in self.tensors.values()}


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """Accept `torch.float32`/`bfloat16`/`float16` or their usual names ("fp32", "bf16", "fp16", ...)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
    elif isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower().removeprefix("torch.")]
    raise AceStepError(f"dtype {dtype!r} is not supported for loading models; use fp32, bf16 or fp16.")


def read_json(path: PathLike) -> dict[str, Any]:
    """A JSON object from `path`, or an AceStepError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AceStepError(f"{path}: file not found.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AceStepError(f"{path}: not valid JSON ({exc}); {REDOWNLOAD_HINT}.") from exc
    if not isinstance(value, dict):
        raise AceStepError(f"{path}: expected a JSON object, found {type(value).__name__}; {REDOWNLOAD_HINT}.")
    return value


def read_safetensors_header(path: PathLike) -> tuple[dict[str, TensorRef], dict[str, str]]:
    """Parse and check one safetensors header: tensor names, dtypes, shapes and that the data fits the file."""
    path = Path(path)
    if not path.is_file():
        raise AceStepError(f"{path}: file not found. Check the path, or download the model again.")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise AceStepError(f"{path}: only {size} bytes, not a safetensors file (truncated?); {REDOWNLOAD_HINT}.")
        header_len = int.from_bytes(head, "little")
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise AceStepError(
                f"{path}: corrupt or truncated safetensors file (header of {header_len} bytes in a {size}-byte "
                f"file); {REDOWNLOAD_HINT}."
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AceStepError(f"{path}: corrupt safetensors header ({exc}); {REDOWNLOAD_HINT}.") from exc
    if not isinstance(header, dict):
        raise AceStepError(f"{path}: corrupt safetensors header (not a JSON object); {REDOWNLOAD_HINT}.")
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorRef] = {}
    data_end = 0
    for key, entry in header.items():
        tensors[key] = _tensor_entry(path, key, entry)
        data_end = max(data_end, entry["data_offsets"][1])
    available = size - 8 - header_len
    if data_end > available:
        raise AceStepError(
            f"{path}: truncated: the header describes {data_end} bytes of tensor data but the file holds only "
            f"{available} (the download or copy was probably cut off); {REDOWNLOAD_HINT}."
        )
    if data_end < available:
        raise AceStepError(
            f"{path}: corrupt: {available - data_end} bytes after the last tensor that the header does not "
            f"describe; {REDOWNLOAD_HINT}."
        )
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _tensor_entry(path: Path, key: str, entry: Any) -> TensorRef:
    try:
        dtype, shape, (begin, end) = entry["dtype"], tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
        _, itemsize = _DTYPES[dtype]
    except (KeyError, TypeError, ValueError) as exc:
        raise AceStepError(
            f"{path}: tensor {key!r} has an unreadable or unsupported header entry {entry!r}; {REDOWNLOAD_HINT}."
        ) from exc
    if end - begin != math.prod(shape) * itemsize or begin < 0:
        raise AceStepError(
            f"{path}: tensor {key!r} header is inconsistent (shape {list(shape)} {dtype} vs offsets "
            f"{begin}..{end}); the file is corrupt, {REDOWNLOAD_HINT}."
        )
    return TensorRef(path, key, shape, dtype, shape)


def open_checkpoint(path: PathLike) -> CheckpointFiles:
    """Index a `.safetensors` file or a sharded checkpoint (`*.safetensors.index.json` plus its shards)."""
    path = Path(path)
    if path.name.endswith(SHARD_INDEX_SUFFIX):
        return _open_sharded(path)
    if path.suffix != ".safetensors":
        raise AceStepError(
            f"{path}: only .safetensors checkpoints are supported (pickled .ckpt/.bin/.pt weights can run code "
            "when loaded); convert the file to safetensors or use the official release."
        )
    tensors, metadata = read_safetensors_header(path)
    return CheckpointFiles(path, tensors, metadata)


def _open_sharded(index_path: Path) -> CheckpointFiles:
    index = read_json(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise AceStepError(f"{index_path}: no 'weight_map' in the shard index; {REDOWNLOAD_HINT}.")
    shard_names = sorted(set(weight_map.values()))
    missing = [name for name in shard_names if not (index_path.parent / name).is_file()]
    if missing:
        raise AceStepError(
            f"{index_path}: {len(missing)} of {len(shard_names)} shards are missing from {index_path.parent}: "
            f"{', '.join(missing)}. Download the missing files into that folder."
        )
    headers = {name: read_safetensors_header(index_path.parent / name)[0] for name in shard_names}
    tensors: dict[str, TensorRef] = {}
    absent = []
    for key, shard in weight_map.items():
        ref = headers[shard].get(key)
        if ref is None:
            absent.append(f"{key} (in {shard})")
        else:
            tensors[key] = ref
    if absent:
        raise AceStepError(
            f"{index_path}: {len(absent)} tensors listed in the index are not in their shard, e.g. "
            f"{', '.join(absent[:3])}; the shards do not belong to this index, {REDOWNLOAD_HINT}."
        )
    metadata = index.get("metadata") or {}
    return CheckpointFiles(index_path, tensors, {str(k): str(v) for k, v in metadata.items()})


def read_tensors(refs: Mapping[str, TensorRef], dtype: torch.dtype, device: Union[str, torch.device]) -> dict[
        str, torch.Tensor]:
    """Read `refs` (name → where), casting floating-point tensors to `dtype` and moving them to `device`."""
    from safetensors import SafetensorError, safe_open

    by_file: dict[Path, list[tuple[str, TensorRef]]] = {}
    for name, ref in refs.items():
        by_file.setdefault(ref.file, []).append((name, ref))
    out: dict[str, torch.Tensor] = {}
    for file, items in by_file.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name, ref in items:
                    out[name] = _deliver(handle.get_tensor(ref.key), ref, dtype, device)
        except (SafetensorError, OSError) as exc:
            raise AceStepError(f"{file}: could not read tensor data ({exc}); {REDOWNLOAD_HINT}.") from exc
    return out


def _deliver(tensor: torch.Tensor, ref: TensorRef, dtype: torch.dtype, device: Union[str, torch.device]) -> (
        torch.Tensor):
    if ref.shape != ref.stored_shape:
        tensor = tensor.reshape(ref.shape)
    target = dtype if tensor.is_floating_point() else tensor.dtype
    return tensor.to(device=device, dtype=target).contiguous()


def read_silence_latent(path: PathLike, channels: Optional[int] = None) -> torch.Tensor:
    """The DiT's silence latent as float32 `[1, T, C]`.

    The official `silence_latent.pt` stores `[1, C, T]` (`[1, 64, 15000]`) and is used transposed; a
    `.safetensors` form (key `silence_latent`) stores `[1, T, C]` already. With `channels` given, the other
    orientation is accepted too when only it fits.
    """
    path = Path(path)
    if not path.is_file():
        raise AceStepError(f"{path}: silence latent not found.")
    if path.suffix == ".safetensors":
        tensor = _silence_from_safetensors(path)
        stored_time_first = True
    elif path.suffix == ".pt":
        tensor = _silence_from_pt(path)
        stored_time_first = False
    else:
        raise AceStepError(f"{path}: a silence latent must be a .pt or .safetensors file.")
    if tensor.ndim != 3 or tensor.shape[0] != 1:
        raise AceStepError(
            f"{path}: silence latent has shape {list(tensor.shape)}, expected [1, C, T] (.pt) or [1, T, C] "
            "(.safetensors); use the silence_latent.pt shipped with the DiT."
        )
    time_first = stored_time_first
    if channels is not None and tensor.shape[2 if time_first else 1] != channels:
        if tensor.shape[1 if time_first else 2] != channels:
            raise AceStepError(
                f"{path}: silence latent has shape {list(tensor.shape)}, but this DiT uses {channels} latent "
                "channels; use the silence_latent.pt shipped with this DiT."
            )
        time_first = not time_first
    tensor = tensor if time_first else tensor.transpose(1, 2)
    return tensor.float().contiguous()


def _silence_from_safetensors(path: Path) -> torch.Tensor:
    refs, _ = read_safetensors_header(path)
    if len(refs) != 1:
        if "silence_latent" not in refs:
            raise AceStepError(
                f"{path}: expected one tensor named 'silence_latent', found {sorted(refs)[:5]}."
            )
        refs = {"silence_latent": refs["silence_latent"]}
    (ref,) = refs.values()
    return read_tensors({"silence_latent": ref}, torch.float32, "cpu")["silence_latent"]


def _silence_from_pt(path: Path) -> torch.Tensor:
    try:
        value = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip/runtime errors alike for damaged or unsafe files
        raise AceStepError(
            f"{path}: could not read the silence latent ({type(exc).__name__}: {exc}); {REDOWNLOAD_HINT}."
        ) from exc
    if isinstance(value, dict):
        tensors = [v for v in value.values() if isinstance(v, torch.Tensor)]
        value = value.get("silence_latent", tensors[0] if len(tensors) == 1 else None)
    if not isinstance(value, torch.Tensor):
        raise AceStepError(f"{path}: holds no silence-latent tensor; use the silence_latent.pt shipped with the DiT.")
    return value


def describe_dtypes(codes: Iterable[str]) -> str:
    """Human-readable stored dtypes, e.g. "bf16" or "bf16+fp32"."""
    names = {"F32": "fp32", "BF16": "bf16", "F16": "fp16", "F64": "fp64", "F8_E4M3": "fp8_e4m3", "F8_E5M2": "fp8_e5m2"}
    return "+".join(sorted({names.get(code, code.lower()) for code in codes})) or "empty"
