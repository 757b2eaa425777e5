"""A LoRA training set: the songs of one folder with their captions, lyrics and metadata, as an editable JSON file.

`scan_folder` finds every audio file soundfile can read and picks up what users already keep beside them,
with the official dataset builder's conventions (acestep/training/dataset_builder_modules): `<stem>.caption.txt`
holds the caption, `<stem>.lyrics.txt` (or, the official legacy form, a plain `<stem>.txt`) the lyrics,
`<stem>.json` any of caption/lyrics/bpm/keyscale/timesignature/language, and a `.csv` in the folder one row per
file (`file` column, plus caption/lyrics/bpm/key or keyscale/timesignature/language). Later sources win:
text files, then JSON, then CSV, as in the official scanner.

`save_dataset` / `load_dataset` write and read the dataset as JSON that a user can edit by hand; every value
is checked on the way in, and a bad one raises `AceStepError` naming the file, the song and the field.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import soundfile as sf

from acestep_core.errors import AceStepError

PathLike = Union[str, Path]
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".caf",
                              ".w64", ".rf64", ".au"})
DATASET_FORMAT = "acestep-lora-dataset"
DATASET_VERSION = 1
TAG_POSITIONS = ("prepend", "append", "replace")
INSTRUMENTAL = "[Instrumental]"
TEXT_FIELDS = ("caption", "lyrics", "keyscale", "timesignature", "language")
SIDECAR_FIELDS = TEXT_FIELDS + ("bpm",)
# CSV header aliases (lower case) → field; the official CSV calls the key column "key".
CSV_COLUMNS = {"caption": "caption", "lyrics": "lyrics", "bpm": "bpm", "key": "keyscale", "keyscale": "keyscale",
               "timesignature": "timesignature", "language": "language"}


@dataclass(frozen=True)
class Sample:
    """One song: `audio` is relative to the dataset root (or absolute); empty text fields mean "unknown".

    Empty lyrics train as `[Instrumental]`, the official default. `duration` is in seconds, read from the file.
    """

    audio: str
    caption: str = ""
    lyrics: str = ""
    bpm: Optional[int] = None
    keyscale: str = ""
    timesignature: str = ""
    language: str = ""
    duration: float = 0.0

    @property
    def name(self) -> str:
        return Path(self.audio).name

    def missing(self) -> tuple[str, ...]:
        """Fields an auto-labeller could fill: caption and the metadata the LM knows."""
        empty = [name for name in ("caption", "keyscale", "timesignature", "language") if not getattr(self, name)]
        return tuple(empty + (["bpm"] if self.bpm is None else []))


@dataclass(frozen=True)
class Dataset:
    """The songs, where their paths are relative to, and the trigger word applied to every caption."""

    root: Path
    samples: tuple[Sample, ...]
    name: str = "dataset"
    custom_tag: str = ""
    tag_position: str = "prepend"

    def audio_path(self, sample: Sample) -> Path:
        path = Path(sample.audio)
        return path if path.is_absolute() else self.root / path

    def training_caption(self, sample: Sample) -> str:
        """The caption with the trigger word placed as `tag_position` says (the official rule)."""
        tag, caption = self.custom_tag.strip(), sample.caption.strip()
        if not tag:
            return caption
        if self.tag_position == "replace" or not caption:
            return tag
        return f"{tag}, {caption}" if self.tag_position == "prepend" else f"{caption}, {tag}"

    def with_samples(self, samples: tuple[Sample, ...]) -> "Dataset":
        return replace(self, samples=tuple(samples))


def scan_folder(folder: PathLike, *, recursive: bool = True, custom_tag: str = "",
                tag_position: str = "prepend", name: Optional[str] = None) -> Dataset:
    """Every readable audio file under `folder`, sorted by path, with its sidecar captions/lyrics/metadata."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AceStepError(f"Dataset folder {root} {'is a file' if root.exists() else 'does not exist'}; "
                           "give the folder that holds the training songs.")
    _check_tag_position(tag_position, str(root))
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise AceStepError(f"Dataset folder {root} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}); "
                           "put the training songs there.")
    table = _read_csv_tables(root, files)
    samples = []
    for path in files:
        relative = path.relative_to(root).as_posix()
        values: dict[str, Any] = {}
        values.update(_text_sidecars(path))
        values.update(_json_sidecar(path))
        values.update(table.get(path.name, {}))
        samples.append(Sample(audio=relative, duration=_duration(path), **values))
    return Dataset(root=root, samples=tuple(samples), name=name or root.name, custom_tag=custom_tag,
                   tag_position=tag_position)


def _duration(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise AceStepError(f"Cannot read audio file {path} ({exc}); convert it to FLAC or WAV, or move it out of "
                           "the dataset folder.") from exc
    if info.frames == 0:
        raise AceStepError(f"Audio file {path} holds no samples; remove it from the dataset folder.")
    return info.frames / info.samplerate


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AceStepError(f"Cannot read {path} ({exc}); save it as UTF-8 text.") from exc


def _text_sidecars(audio: Path) -> dict[str, Any]:
    values = {}
    caption = audio.with_name(audio.stem + ".caption.txt")
    if caption.is_file():
        values["caption"] = _read_text(caption)
    for suffix in (".lyrics.txt", ".txt"):
        lyrics = audio.with_name(audio.stem + suffix)
        if lyrics.is_file():
            values["lyrics"] = _read_text(lyrics)
            break
    return {key: value for key, value in values.items() if value}


def _json_sidecar(audio: Path) -> dict[str, Any]:
    path = audio.with_name(audio.stem + ".json")
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AceStepError(f"Cannot read metadata file {path} ({exc}); fix the JSON or delete the file.") from exc
    if not isinstance(data, dict):
        raise AceStepError(f"Metadata file {path} must hold a JSON object like "
                           '{"caption": "...", "bpm": 120, "keyscale": "C major"}.')
    unknown = sorted(set(data) - set(SIDECAR_FIELDS))
    if unknown:
        raise AceStepError(f"Metadata file {path} has unknown field(s) {', '.join(unknown)}; use only "
                           f"{', '.join(SIDECAR_FIELDS)}.")
    return {key: _field_value(key, value, str(path)) for key, value in data.items()
            if value not in (None, "")}


def _read_csv_tables(root: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    """`{file name: values}` from every `.csv` directly in `root`; unknown file names are an error."""
    names = {p.name for p in files}
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("*.csv")):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise AceStepError(f"Cannot read {path} ({exc}); save it as UTF-8 CSV.") from exc
        try:
            dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(text.splitlines(), dialect=dialect)
        headers = {h.strip().lower(): h for h in reader.fieldnames or ()}
        if "file" not in headers:
            raise AceStepError(f"CSV {path} has no 'file' column (found {', '.join(headers) or 'no header'}); "
                               "add a header row starting with file, then caption/bpm/key/... columns.")
        for number, row in enumerate(reader, start=2):
            file_name = (row.get(headers["file"]) or "").strip()
            if not file_name:
                continue
            if Path(file_name).name not in names:
                raise AceStepError(f"CSV {path} line {number} names {file_name!r}, which is not an audio file in "
                                   f"{root}; fix the name or remove the row.")
            values = table.setdefault(Path(file_name).name, {})
            for header, original in headers.items():
                target = CSV_COLUMNS.get(header)
                cell = (row.get(original) or "").strip()
                if target and cell:
                    values[target] = _field_value(target, cell, f"{path} line {number}")
    return table


def _field_value(key: str, value: Any, where: str) -> Any:
    if key == "bpm":
        return _bpm(value, where)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise AceStepError(f"{where}: field {key!r} must be text, got {value!r}.")
    return str(value).strip()


def _bpm(value: Any, where: str) -> Optional[int]:
    if value in (None, "", "N/A"):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 30 <= number <= 300:
        raise AceStepError(f"{where}: bpm {value!r} is not a tempo between 30 and 300; write a number like 120 "
                           "or leave it empty.")
    return int(round(number))


def _check_tag_position(position: str, where: str) -> None:
    if position not in TAG_POSITIONS:
        raise AceStepError(f"{where}: tag_position {position!r} must be one of {', '.join(TAG_POSITIONS)}.")


def dataset_to_dict(dataset: Dataset) -> dict[str, Any]:
    """The JSON form: format marker, root, trigger word, and one object per song."""
    return {"format": DATASET_FORMAT, "version": DATASET_VERSION, "name": dataset.name, "root": str(dataset.root),
            "custom_tag": dataset.custom_tag, "tag_position": dataset.tag_position,
            "samples": [asdict(sample) for sample in dataset.samples]}


def dataset_from_dict(data: Mapping[str, Any], where: str, base: Optional[Path] = None) -> Dataset:
    """Check and build a `Dataset` from its JSON form; `where` names the source in errors, `base` resolves
    a relative `root` (the JSON file's folder)."""
    if not isinstance(data, Mapping) or data.get("format") != DATASET_FORMAT:
        raise AceStepError(f"{where} is not an ACE-Step LoRA dataset (expected \"format\": \"{DATASET_FORMAT}\"); "
                           "make one with the dataset scan first.")
    if data.get("version") != DATASET_VERSION:
        raise AceStepError(f"{where} has dataset version {data.get('version')!r}; this version reads "
                           f"{DATASET_VERSION}. Scan the folder again.")
    root = Path(str(data.get("root") or "."))
    if not root.is_absolute() and base is not None:
        root = base / root
    tag_position = str(data.get("tag_position", "prepend"))
    _check_tag_position(tag_position, where)
    raw = data.get("samples")
    if not isinstance(raw, list) or not raw:
        raise AceStepError(f"{where} lists no samples; scan a folder with audio files in it.")
    samples = tuple(_sample_from_dict(item, f"{where} sample {index + 1}") for index, item in enumerate(raw))
    return Dataset(root=root, samples=samples, name=str(data.get("name") or root.name),
                   custom_tag=str(data.get("custom_tag") or ""), tag_position=tag_position)


def _sample_from_dict(item: Any, where: str) -> Sample:
    if not isinstance(item, Mapping):
        raise AceStepError(f"{where} must be a JSON object with at least an \"audio\" path.")
    known = {f for f in Sample.__dataclass_fields__}
    unknown = sorted(set(item) - known)
    if unknown:
        raise AceStepError(f"{where} has unknown field(s) {', '.join(unknown)}; fields are {', '.join(sorted(known))}.")
    audio = item.get("audio")
    if not isinstance(audio, str) or not audio.strip():
        raise AceStepError(f"{where} has no \"audio\" path; give the song's file relative to the dataset root.")
    values = {key: _field_value(key, item[key], where) for key in SIDECAR_FIELDS if item.get(key) not in (None, "")}
    duration = item.get("duration", 0.0)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
        raise AceStepError(f"{where}: duration {duration!r} must be a number of seconds ≥ 0.")
    return Sample(audio=audio, duration=float(duration), **values)


def save_dataset(dataset: Dataset, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write the dataset JSON (UTF-8, indented for hand editing); an existing file needs `overwrite=True`."""
    target = Path(path).expanduser()
    if target.exists() and not overwrite:
        raise AceStepError(f"{target} already exists; choose another dataset file name or allow overwriting.")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(dataset_to_dict(dataset), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def load_dataset(path: PathLike) -> Dataset:
    """Read and check a dataset JSON file; every audio file it lists must exist."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise AceStepError(f"Dataset file {source} does not exist; scan the folder and save the dataset first.")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AceStepError(f"Cannot read dataset file {source} ({exc}); fix the JSON (a missing comma or quote?).") \
            from exc
    dataset = dataset_from_dict(data, str(source), base=source.parent)
    check_audio_files(dataset, str(source))
    return dataset


def check_audio_files(dataset: Dataset, where: str) -> None:
    """Every sample's audio file exists (an edited or moved dataset fails here, naming the song)."""
    for index, sample in enumerate(dataset.samples):
        if not dataset.audio_path(sample).is_file():
            raise AceStepError(f"{where} sample {index + 1}: audio file {dataset.audio_path(sample)} does not exist; "
                               "fix its \"audio\" path or the dataset \"root\".")


def parse_dataset_json(text: str, where: str = "dataset JSON") -> Dataset:
    """A dataset from JSON text (an edited copy in a node widget); audio files are checked."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AceStepError(f"{where} is not valid JSON ({exc}); fix the edit (a missing comma or quote?).") from exc
    dataset = dataset_from_dict(data, where)
    check_audio_files(dataset, where)
    return dataset


def dataset_json(dataset: Dataset) -> str:
    return json.dumps(dataset_to_dict(dataset), indent=2, ensure_ascii=False)


__all__ = ["AUDIO_EXTENSIONS", "Dataset", "INSTRUMENTAL", "Sample", "check_audio_files", "dataset_from_dict",
           "dataset_json", "dataset_to_dict", "load_dataset", "parse_dataset_json", "save_dataset",
           "scan_folder"]
