"""Replays the official calls recorded in a golden folder (`index.json` format) through our code.

Each golden case names the official function it called, its arguments (tensor arguments point at
`input.*` tensors of the case file) and the weights. `run_case` maps that call onto our modules and
returns the tensors that correspond to the case's `output.*` names; `compare` applies the tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file

FLOAT_MAX_ABS = 1e-4
FLOAT_REL_L2 = 1e-5


class UnsupportedCase(Exception):
    """The case calls something our code does not reproduce yet; it counts as failed."""


@dataclass
class Comparison:
    name: str
    max_abs: float
    rel_l2: float
    passed: bool
    note: str = ""


@dataclass
class GoldenCase:
    """One case file of a golden folder, with its recorded call."""

    root: Path
    entry: dict[str, Any]

    @property
    def file(self) -> str:
        return self.entry["file"]

    @property
    def call(self) -> dict[str, Any]:
        return self.entry["call"]

    def tensors(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.root / self.file))

    def argument(self, name: str, tensors: dict[str, torch.Tensor], default: Any = None) -> Any:
        """The call's argument: the tensor it points at, or the literal value."""
        value = self.call.get("arguments", {}).get(name, default)
        if isinstance(value, str) and value in tensors:
            return tensors[value]
        return value


def load_cases(golden_dir: Path) -> list[GoldenCase]:
    index = json.loads((golden_dir / "index.json").read_text())
    return [GoldenCase(golden_dir, entry) for entry in index["files"]]


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor) -> Comparison:
    """Floats: relative L2 and max abs within tolerance (in float64); integers and bools: exact."""
    if actual.shape != expected.shape:
        return Comparison(name, float("inf"), float("inf"), False,
                          f"shape {list(actual.shape)} != expected {list(expected.shape)}")
    if not expected.is_floating_point():
        equal = torch.equal(actual.to(expected.dtype), expected)
        mismatches = int((actual.to(expected.dtype) != expected).sum())
        note = "" if actual.dtype == expected.dtype else f"dtype {actual.dtype} != {expected.dtype}"
        return Comparison(name, float(mismatches), float(mismatches), equal and not note, note)
    diff = actual.double() - expected.double()
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    denominator = expected.double().norm().item()
    rel_l2 = diff.norm().item() / denominator if denominator > 0 else diff.norm().item()
    finite = bool(torch.isfinite(actual).all())
    passed = finite and max_abs <= FLOAT_MAX_ABS and rel_l2 <= FLOAT_REL_L2
    return Comparison(name, max_abs, rel_l2, passed, "" if finite else "non-finite values")


Runner = Callable[[GoldenCase, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def run_case(case: GoldenCase) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(our outputs, the case's tensors). Raises UnsupportedCase for calls we cannot map."""
    from acestep_core.parity_runners import find_runner

    tensors = case.tensors()
    runner = find_runner(case.call.get("function", ""))
    with torch.no_grad():
        outputs = runner(case, tensors)
    return outputs, tensors


def check_case(case: GoldenCase) -> list[Comparison]:
    """Every `output.*` tensor of the case compared with ours; a missing output is a failure."""
    outputs, tensors = run_case(case)
    results = []
    for name in sorted(n for n in tensors if n.startswith("output.")):
        if name not in outputs:
            results.append(Comparison(name, float("inf"), float("inf"), False, "not produced"))
            continue
        results.append(compare(name, outputs[name], tensors[name]))
    return results
