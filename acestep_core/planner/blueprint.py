"""The blueprint: what the planner decided for each batch item, saved and loaded as JSON.

An item holds what reaches the DiT (caption, lyrics, language, bpm, key, time signature, duration and
the audio codes), the LM's own metadata as it wrote it (`metadata`, including `genres`), the CoT text the
codes were written from and the seed, so a good plan can be kept, edited and used again. The file is
plain JSON (`format`/`version` checked on load); codes are stored as integers 0 … 63999.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from acestep_core.constants import NUM_AUDIO_CODES
from acestep_core.errors import AceStepError
from acestep_core.planner.cot import codes_to_text

BLUEPRINT_FORMAT = "comfyui-acestep-blueprint"
BLUEPRINT_VERSION = 1
MODES = ("think", "sample", "format", "understand")


@dataclass(frozen=True)
class PlanItem:
    """One batch item's plan. `codes` is empty when the plan has none (metadata-only plans)."""

    seed: int
    caption: str = ""
    lyrics: str = ""
    language: str = "unknown"
    bpm: Optional[int] = None
    keyscale: str = ""
    timesignature: str = ""
    duration: Optional[float] = None
    codes: tuple[int, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    cot: str = ""
    lm_text: str = ""

    @property
    def codes_text(self) -> str:
        """The codes as the LM writes them (`<|audio_code_N|>` each), '' without codes."""
        return codes_to_text(self.codes)

    @property
    def seconds(self) -> float:
        """The length the codes describe (5 codes a second)."""
        return len(self.codes) / 5


@dataclass(frozen=True)
class Blueprint:
    """The plans of a batch, the mode that made them, and the inputs and settings used (for the record)."""

    mode: str
    items: tuple[PlanItem, ...]
    inputs: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AceStepError(f"Unknown blueprint mode {self.mode!r}: expected one of {', '.join(MODES)}.")
        if not self.items:
            raise AceStepError("A blueprint needs at least one item.")

    @property
    def batch_size(self) -> int:
        return len(self.items)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(item.seed for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        items = []
        for item in self.items:
            data = asdict(item)
            data["codes"] = list(item.codes)
            items.append(data)
        return {"format": BLUEPRINT_FORMAT, "version": BLUEPRINT_VERSION, "mode": self.mode,
                "inputs": self.inputs, "settings": self.settings, "items": items}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    @classmethod
    def from_dict(cls, data: Any, source: str = "blueprint") -> "Blueprint":
        if not isinstance(data, dict) or data.get("format") != BLUEPRINT_FORMAT:
            raise AceStepError(f"{source} is not an ACE-Step blueprint (no \"format\": \"{BLUEPRINT_FORMAT}\"); "
                               "load a file saved by the planner.")
        if data.get("version") != BLUEPRINT_VERSION:
            raise AceStepError(f"{source} has blueprint version {data.get('version')!r}; this version reads "
                               f"{BLUEPRINT_VERSION}. Make the plan again with this version of the planner.")
        items = data.get("items")
        if not isinstance(items, list) or not items:
            raise AceStepError(f"{source} holds no plan items; save a blueprint that has at least one.")
        return cls(str(data.get("mode")), tuple(_item(entry, source, index) for index, entry in enumerate(items)),
                   dict(data.get("inputs") or {}), dict(data.get("settings") or {}))

    @classmethod
    def from_json(cls, text: str, source: str = "blueprint") -> "Blueprint":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise AceStepError(f"{source} is not valid JSON ({error}); load a file saved by the planner.") from None
        return cls.from_dict(data, source)


def _item(entry: Any, source: str, index: int) -> PlanItem:
    where = f"{source}, item {index}"
    if not isinstance(entry, dict):
        raise AceStepError(f"{where} is not an object; the file is damaged, save the plan again.")
    known = {name: entry[name] for name in PlanItem.__dataclass_fields__ if name in entry}
    if not isinstance(known.get("seed"), int):
        raise AceStepError(f"{where} has no whole-number seed; the file is damaged, save the plan again.")
    codes = known.get("codes", [])
    if not isinstance(codes, list) or not all(isinstance(c, int) and 0 <= c < NUM_AUDIO_CODES for c in codes):
        raise AceStepError(f"{where}: codes must be a list of whole numbers 0 … {NUM_AUDIO_CODES - 1}.")
    known["codes"] = tuple(codes)
    try:
        return PlanItem(**known)
    except TypeError as error:
        raise AceStepError(f"{where}: {error}") from None


def save_blueprint(blueprint: Blueprint, path: Union[str, Path]) -> Path:
    """Write the blueprint as JSON; never overwrites an existing file."""
    target = Path(path).expanduser()
    if target.exists():
        raise AceStepError(f"{target} already exists; choose another file name (plans are never overwritten).")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as handle:
        handle.write(blueprint.to_json())
    return target


def load_blueprint(path: Union[str, Path]) -> Blueprint:
    source = Path(path).expanduser()
    if not source.is_file():
        raise AceStepError(f"Blueprint file not found: {source}. Give the path of a .json file saved by the planner.")
    return Blueprint.from_json(source.read_text(encoding="utf-8"), str(source))
