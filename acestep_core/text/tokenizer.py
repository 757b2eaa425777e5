"""The text encoder's tokenizer: Qwen's byte-level BPE, read from the files shipped with the model.

The official pipeline tokenizes each prompt with the Qwen3-Embedding tokenizer, whose post-processor
appends `<|endoftext|>` to every sequence, truncating the text so that the result fits `max_length`.
We reproduce that explicitly (text ids, cut to `max_length - 1`, then `<|endoftext|>`) so the result
does not depend on which post-processor a given tokenizer file or transformers version carries.
Text such as `<|endoftext|>` inside a prompt is read as the special token, as the official code does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from acestep_core.errors import AceStepError

ENDOFTEXT = "<|endoftext|>"
# Qwen's pre-tokenizer split (digits one by one), used when only vocab.json/merges.txt are shipped.
QWEN_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TextTokenizer:
    """Turns prompt strings into the id sequences the text encoder receives."""

    def __init__(self, backend: Tokenizer):
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        eos_id = backend.token_to_id(ENDOFTEXT)
        if eos_id is None:
            raise AceStepError(
                f"The text-encoder tokenizer has no {ENDOFTEXT} token, so it is not a Qwen3 tokenizer: "
                "use the tokenizer files of Qwen3-Embedding-0.6B."
            )
        self.backend = backend
        self.eos_id: int = eos_id
        self.pad_id: int = eos_id

    @classmethod
    def wrap(cls, tokenizer: Any) -> "TextTokenizer":
        """Accept our tokenizer, a `tokenizers.Tokenizer` or a transformers fast tokenizer."""
        if isinstance(tokenizer, cls):
            return tokenizer
        if isinstance(tokenizer, Tokenizer):
            return cls(tokenizer)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if isinstance(backend, Tokenizer):
            return cls(backend)
        raise TypeError(
            f"Expected a Qwen tokenizer (tokenizers or transformers fast), got {type(tokenizer).__name__}"
        )

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, max_length: int) -> list[int]:
        """Ids of `text` followed by `<|endoftext|>`, at most `max_length` in all (text cut on the right)."""
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return ids[: max_length - 1] + [self.eos_id]

    def decode(self, ids: list[int]) -> str:
        """Text of the ids, special tokens included (for display and debugging)."""
        return self.backend.decode(ids, skip_special_tokens=False)


def load_tokenizer(folder: Union[str, Path]) -> TextTokenizer:
    """Read the tokenizer shipped next to the text encoder (`tokenizer.json`, else vocab + merges)."""
    path = Path(folder)
    if not path.is_dir():
        raise AceStepError(
            f"Text-encoder tokenizer folder not found: {path}. Point it at the Qwen3-Embedding-0.6B folder "
            "of the ACE-Step checkpoints (it holds tokenizer.json)."
        )
    if (path / "tokenizer.json").is_file():
        try:
            return TextTokenizer(Tokenizer.from_file(str(path / "tokenizer.json")))
        except Exception as error:  # the tokenizers library raises bare Exceptions on bad files
            raise AceStepError(
                f"Cannot read {path / 'tokenizer.json'} ({error}). Re-download the Qwen3-Embedding-0.6B folder."
            ) from error
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return TextTokenizer(_from_vocab_and_merges(path))
    raise AceStepError(
        f"No tokenizer files in {path}: expected tokenizer.json (or vocab.json and merges.txt). "
        "Re-download the Qwen3-Embedding-0.6B folder of the ACE-Step checkpoints."
    )


def _from_vocab_and_merges(folder: Path) -> Tokenizer:
    """Qwen's byte-level BPE assembled from vocab.json, merges.txt and the added tokens of the folder."""
    try:
        model = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    except Exception as error:  # the tokenizers library raises bare Exceptions on bad files
        raise AceStepError(
            f"Cannot read vocab.json/merges.txt in {folder} ({error}). Re-download the tokenizer files."
        ) from error
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    added = sorted(_added_tokens(folder))
    tokenizer.add_special_tokens(
        [AddedToken(content, normalized=False, special=special) for _, content, special in added]
    )
    for token_id, content, _ in added:
        if tokenizer.token_to_id(content) != token_id:
            raise AceStepError(
                f"Added token {content!r} of {folder} should have id {token_id} but lands at "
                f"{tokenizer.token_to_id(content)}: the tokenizer files do not belong together."
            )
    return tokenizer


def _added_tokens(folder: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) of the tokens added on top of the BPE vocabulary."""
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        decoder = json.loads(config_file.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
        if decoder:
            return [(int(i), entry["content"], bool(entry.get("special", True))) for i, entry in decoder.items()]
    added_file = folder / "added_tokens.json"
    if added_file.is_file():
        added = json.loads(added_file.read_text(encoding="utf-8"))
        return [(int(i), content, True) for content, i in added.items()]
    return []
