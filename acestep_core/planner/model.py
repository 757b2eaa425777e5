"""The 5 Hz LM itself: transformers' Qwen3ForCausalLM built from the checkpoint, and its cached decoder.

The official LM folders (`acestep-5Hz-lm-0.6B/1.7B/4B`) and ComfyUI's `qwen_*_ace15` files hold the same
Qwen3 stack under different key prefixes; `checkpoints.read_qwen` reads either into the official names.
There is no `lm_head.weight`: the output layer is the token embedding (tied), unless a file carries one.
The model is built on the meta device and takes the tensors as they are (no random initialisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from acestep_core.errors import AceStepError
from acestep_core.planner.calls import CancelFn, LMCall, ProgressFn
from acestep_core.planner.engine import Job, generate
from acestep_core.planner.sampling import Sampling
from acestep_core.planner.tokens import LMTokenizer, TokenTables, load_lm_tokenizer

Device = Union[str, torch.device]
LM_HEAD = "lm_head.weight"


def build_lm(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
             device: Device = "cpu", source: str = "the 5 Hz LM") -> Qwen3ForCausalLM:
    """Qwen3ForCausalLM from a config.json dict and un-prefixed weights (`embed_tokens.weight`, `layers.…`)."""
    if config.get("model_type", "qwen3") != "qwen3":
        raise AceStepError(f"{source}: config.json says model_type {config.get('model_type')!r}; the 5 Hz LM is "
                           "a Qwen3 model (acestep-5Hz-lm-0.6B/1.7B/4B).")
    values = dict(config)
    values["tie_word_embeddings"] = LM_HEAD not in state_dict
    qwen_config = Qwen3Config.from_dict(values)
    qwen_config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = Qwen3ForCausalLM(qwen_config)
    body = {key: tensor for key, tensor in state_dict.items() if key != LM_HEAD}
    expected = set(model.model.state_dict())
    missing, unexpected = sorted(expected - set(body)), sorted(set(body) - expected)
    if missing or unexpected:
        raise AceStepError(f"{source}: the weights do not fit a Qwen3 LM: missing {missing[:4]}, unexpected "
                           f"{unexpected[:4]}. Use an acestep-5Hz-lm model.safetensors or a qwen_*_ace15 file.")
    try:
        model.model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in body.items()},
                                    strict=True, assign=True)
    except RuntimeError as error:
        raise AceStepError(f"{source}: the weights do not fit the shapes in its config: {error}") from error
    if LM_HEAD in state_dict:
        model.lm_head.weight = torch.nn.Parameter(state_dict[LM_HEAD].to(device=device, dtype=dtype), False)
    else:
        model.lm_head.weight = model.model.embed_tokens.weight
    # Rotary frequencies are computed, not stored: rebuild them off the meta device, in the model dtype
    # as the official code's `.to(dtype)` leaves them.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=qwen_config).to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


class KVDecoder:
    """Qwen3ForCausalLM behind the engine's Decoder protocol: a KV cache, positions that skip padding."""

    def __init__(self, model: Qwen3ForCausalLM, tables: TokenTables):
        self.model, self.tables = model, tables
        self.device = model.lm_head.weight.device
        self.cache: Any = None

    def _run(self, ids: torch.Tensor, positions: torch.Tensor) -> None:
        output = self.model.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                                  past_key_values=self.cache, use_cache=True)
        self.cache = output.past_key_values
        self.hidden = output.last_hidden_state[:, -1]
        self.next_position = positions[:, -1] + 1

    @torch.inference_mode()
    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.cache, self.mask = None, mask
        self._run(ids, (mask.cumsum(-1) - 1).clamp(min=0))

    @torch.inference_mode()
    def feed(self, tokens: torch.Tensor) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        self._run(tokens[:, None], self.next_position[:, None])

    @torch.inference_mode()
    def logits(self, codes_only: bool) -> torch.Tensor:
        weight = self.model.lm_head.weight
        if not codes_only:
            return self.hidden @ weight.T
        span = self.tables.code_slice
        codes = self.hidden @ weight[span.start:span.stop].T
        return torch.cat([codes, self.hidden @ weight[self.tables.eos:self.tables.eos + 1].T], dim=1)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(rows)
        self.mask, self.hidden, self.next_position = self.mask[rows], self.hidden[rows], self.next_position[rows]


class PlannerLM:
    """The LM, its tokenizer and token tables: runs batches of planner calls (the modes' `Runner`)."""

    def __init__(self, model: Qwen3ForCausalLM, tokenizer: LMTokenizer, name: str = "5Hz LM"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        rows = model.model.embed_tokens.num_embeddings
        if tokenizer.vocab_size > rows:
            raise AceStepError(f"The LM tokenizer knows {tokenizer.vocab_size} tokens but {name} only {rows}: the "
                               "tokenizer and the weights come from different models.")
        self.tables = TokenTables(tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text))

    def run(self, calls: Sequence[LMCall], progress: Optional[ProgressFn] = None,
            cancel: Optional[CancelFn] = None) -> list[str]:
        """Decode a batch of calls that share their sampling settings; the text each one wrote."""
        if not calls:
            return []
        sampling: Sampling = calls[0].sampling
        if any(call.sampling != sampling for call in calls):
            raise ValueError("calls run together must share their sampling settings")
        jobs = [Job(self.encode(call.prompt), self.encode(call.uncond_prompt) if sampling.uses_cfg else None,
                    call.constraint, call.max_new_tokens, call.seed) for call in calls]
        outputs = generate(KVDecoder(self.model, self.tables), self.tables, jobs, sampling, progress, cancel)
        return [self.tokenizer.decode(ids) for ids in outputs]


def load_planner(path: Union[str, Path], dtype: Union[str, torch.dtype, None] = torch.float32,
                 device: Device = "cpu", *, tokenizer_folder: Optional[Union[str, Path]] = None) -> PlannerLM:
    """Load `acestep-5Hz-lm-0.6B/1.7B/4B` (folder or its model.safetensors) or a ComfyUI `qwen_*_ace15` file.

    The tokenizer comes from the LM folder, or from `tokenizer_folder` (needed for single files; any Qwen3
    tokenizer folder works, the audio-code tokens being added).
    """
    from acestep_core.checkpoint_io import resolve_dtype
    from acestep_core.checkpoint_keys import LM
    from acestep_core.checkpoints import read_qwen

    dtype = resolve_dtype(dtype)
    weights = read_qwen(path, LM, dtype, device)
    folder = Path(tokenizer_folder).expanduser() if tokenizer_folder is not None else weights.tokenizer_folder
    if folder is None:
        raise AceStepError(f"{path}: a single-file LM carries no tokenizer. Pass tokenizer_folder=<a folder with "
                           "tokenizer.json>, e.g. acestep-5Hz-lm-1.7B or Qwen3-Embedding-0.6B of ACE-Step/Ace-Step1.5.")
    tokenizer = load_lm_tokenizer(folder)
    model = build_lm(weights.config, weights.state_dict, dtype, device, source=str(path))
    return PlannerLM(model, tokenizer, name=Path(path).name)
