"""The real Qwen2/Qwen3 vocabulary, rebuilt offline for tests (see shared/spec/testing-aids.md).

The ACE-Step text encoder (Qwen3-Embedding-0.6B) and the 5 Hz LMs share Qwen's byte-level BPE
vocabulary. The PyPI wheel `dashscope==2.0.2` ships it as a tiktoken rank file; we fetch that wheel
with pip (no install), read the rank file from the zip and build a `tokenizers.Tokenizer` from it, so
tests can check prompt token ids exactly without the model weights. Everything is cached under
`~/.cache/comfyui-acestep-tests/qwen-vocab/` (root overridable with COMFYUI_ACESTEP_TEST_CACHE).
When PyPI cannot be reached the calling test is skipped with the reason.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.pre_tokenizers import ByteLevel

DASHSCOPE_REQUIREMENT = "dashscope==2.0.2"
RANK_FILE_MEMBER = "dashscope/resources/qwen.tiktoken"
ORDINARY_TOKENS = 151643
BUILDER_VERSION = 1

# Qwen's pre-tokenizer: like GPT-4's, but digits are split one by one.
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's special tokens, ids 151643 ... 151668 in this order.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    "<tool_response>", "</tool_response>", "<think>", "</think>",
)
ENDOFTEXT = SPECIAL_TOKENS[0]
VOCAB_SIZE = ORDINARY_TOKENS + len(SPECIAL_TOKENS)


def cache_dir() -> Path:
    """The folder where downloaded and built vocabulary files are kept between test runs."""
    root = Path(os.environ.get("COMFYUI_ACESTEP_TEST_CACHE", Path.home() / ".cache" / "comfyui-acestep-tests"))
    folder = root / "qwen-vocab"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def rank_file() -> Path:
    """Path of `qwen.tiktoken` (base64 token bytes and rank per line), downloading it once if needed."""
    target = cache_dir() / "qwen.tiktoken"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-q", "-d", tmp, DASHSCOPE_REQUIREMENT]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("dashscope-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {DASHSCOPE_REQUIREMENT} from PyPI for the Qwen vocabulary: "
                        f"{result.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(RANK_FILE_MEMBER)
    _publish(target, data)
    return target


def _publish(target: Path, data: bytes) -> None:
    """Write a cache file atomically (test runs in parallel may build the same file at once)."""
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(target)


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars)}


def _read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != ORDINARY_TOKENS:
        raise RuntimeError(
            f"{path} holds {len(ranks)} tokens, expected {ORDINARY_TOKENS}; delete it to download it again")
    return ranks


def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE vocabulary and merges equivalent to tiktoken's rank-ordered merging.

    Every split of a token into two known tokens becomes a merge, ordered by the rank of the merged
    token, so that BPE always joins the pair whose result has the lowest rank, as tiktoken does.
    """
    to_unicode = _byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_unicode[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return vocab, [(text(left), text(right)) for *_, left, right in merges]


def _build(append_eos: bool) -> Tokenizer:
    vocab, merges = _vocab_and_merges(_read_ranks(rank_file()))
    tokenizer = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    tokenizer.model.ignore_merges = True
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    for offset, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != ORDINARY_TOKENS + offset:
            raise RuntimeError(f"special token {token} did not land at id {ORDINARY_TOKENS + offset}")
    if append_eos:
        eos_id = tokenizer.token_to_id(ENDOFTEXT)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {ENDOFTEXT}", pair=f"$A {ENDOFTEXT} $B:1 {ENDOFTEXT}:1",
            special_tokens=[(ENDOFTEXT, eos_id)])
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


@functools.lru_cache(maxsize=None)
def _tokenizer_json(append_eos: bool) -> str:
    """The serialized tokenizer, built once and cached on disk (building takes a few seconds)."""
    name = f"qwen3_{'embedding' if append_eos else 'plain'}_v{BUILDER_VERSION}_tokenizer.json"
    cached = cache_dir() / name
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    serialized = _build(append_eos).to_str()
    _publish(cached, serialized.encode("utf-8"))
    return serialized


def qwen_tokenizer(append_eos: bool = True) -> Tokenizer:
    """A fresh `tokenizers.Tokenizer` with the real Qwen3 vocabulary and its 26 special tokens.

    `append_eos=True` gives the Qwen3-Embedding flavour, whose post-processor appends
    `<|endoftext|>` (151643) to every sequence encoded with special tokens (the default); `False`
    gives the plain flavour the 5 Hz LM prompts use (nothing added).
    """
    return Tokenizer.from_str(_tokenizer_json(append_eos))


def transformers_tokenizer(append_eos: bool = True) -> Any:
    """The same vocabulary as a transformers fast tokenizer with Qwen's pad and eos tokens."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=qwen_tokenizer(append_eos), pad_token=ENDOFTEXT,
                                   eos_token="<|im_end|>", padding_side="right")


def write_tokenizer_folder(folder: Path, append_eos: bool = True) -> Path:
    """Write `tokenizer.json` and a matching `tokenizer_config.json` into `folder`, as a model ships them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(_tokenizer_json(append_eos), encoding="utf-8")
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "pad_token": ENDOFTEXT,
        "eos_token": "<|im_end|>",
        "model_max_length": 32768,
        "added_tokens_decoder": {
            str(ORDINARY_TOKENS + i): {"content": t, "special": True, "normalized": False,
                                       "lstrip": False, "rstrip": False, "single_word": False}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def write_vocab_merges_folder(folder: Path) -> Path:
    """Write only `vocab.json`, `merges.txt` and `tokenizer_config.json` (no `tokenizer.json`).

    That is the layout of tokenizer folders that ship without the fast-tokenizer file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = json.loads(_tokenizer_json(False))
    vocab = state["model"]["vocab"]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    write_tokenizer_folder(folder, append_eos=False)
    (folder / "tokenizer.json").unlink()
    return folder
