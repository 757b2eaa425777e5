"""Tokens per second of the 5 Hz LM planner on CPU, phase 1 (CoT) and phase 2 (codes, with guidance), at the
real 0.6B dimensions with random weights, against a plain token-by-token loop without a KV cache measured in
the same run on the same model, prompts, constraints and sampling.

"ours" is the planner's engine as shipped (`acestep_core.planner.engine.generate` with its KV-cached decoder:
one prefill, then one token per row per step, codes-only output rows while writing codes, finished items
dropped from the batch). "baseline" is the same loop with a decoder that recomputes the whole sequence and the
full 217,204-row output layer at every step, which is what generating without a cache costs. Both draw their
tokens through the same constraint machine and sampler with the same seeds, so their first tokens must agree:
the report says whether they do. Each measurement of ours runs `--repeats` times and keeps the fastest (a
shared machine only slows runs down); the baseline, minutes per token at full size, runs once.

    python benchmarks/bench_planner.py                  # 0.6B dims, 28 layers
    python benchmarks/bench_planner.py --layers 4       # shallower, same width (faster; not the real model)
    python benchmarks/bench_planner.py --quick          # tiny dims, seconds (the smoke test)

Random weights give flat next-token distributions, the slowest case for top-p (the whole candidate row is
sorted every step); a trained LM's peaked distributions are cheaper. The tokenizer is the real Qwen3
vocabulary with the audio-code tokens (`--tokenizer FOLDER`, else rebuilt offline as the tests do).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent)]

import torch  # noqa: E402

from acestep_core.planner.constraint import ConstraintSpec  # noqa: E402
from acestep_core.planner.cot import format_cot  # noqa: E402
from acestep_core.planner.engine import Job, generate  # noqa: E402
from acestep_core.planner.model import KVDecoder, build_lm  # noqa: E402
from acestep_core.planner.prompts import codes_prompt, codes_uncond_prompt, think_prompt  # noqa: E402
from acestep_core.planner.sampling import Sampling  # noqa: E402
from acestep_core.planner.tokens import TokenTables, load_lm_tokenizer  # noqa: E402

DEFAULT_OUT = BENCH_DIR / "results" / "bench_planner.json"
CAPTION = "An energetic synth-pop track with punchy drums, bright analog pads and a confident female lead vocal."
LYRIC_LINES = ("[Verse]", "City lights are fading slow", "I can hear the engines glow", "",
               "[Chorus]", "Run, run, into the night", "Hold on, hold on, we'll be alright", "")
METADATA = {"bpm": 120, "caption": CAPTION, "duration": 180, "keyscale": "C major", "language": "en",
            "timesignature": "4"}


@dataclass(frozen=True)
class Profile:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    lyric_repeats: int
    cot_tokens: int
    codes: int
    baseline_tokens: int
    batches: tuple[int, ...]


REAL = Profile(1024, 28, 3072, 16, 8, 128, lyric_repeats=6, cot_tokens=48, codes=64, baseline_tokens=4,
               batches=(1, 4))
QUICK = Profile(64, 2, 128, 4, 2, 16, lyric_repeats=2, cot_tokens=24, codes=16, baseline_tokens=4, batches=(1, 2))


class PlainDecoder:
    """The baseline: no cache; every step runs the whole sequence and the whole output layer.

    `tests/core/test_planner_generate.py` uses it as the reference the KV-cached decoder must match token for
    token, so the loop timed here is known to decode the same tokens."""

    def __init__(self, model: Any, tables: TokenTables):
        self.model, self.tables, self.device = model, tables, model.lm_head.weight.device

    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.ids, self.mask = ids, mask

    def feed(self, tokens: torch.Tensor) -> None:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens)[:, None]], dim=1)

    @torch.inference_mode()
    def logits(self, codes_only: bool) -> torch.Tensor:
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=positions,
                         use_cache=False).logits[:, -1]
        if not codes_only:
            return out
        span, eos = self.tables.code_slice, self.tables.eos
        return torch.cat([out[:, span], out[:, eos:eos + 1]], dim=1)

    def keep(self, rows: torch.Tensor) -> None:
        self.ids, self.mask = self.ids[rows], self.mask[rows]


def config(profile: Profile) -> dict[str, Any]:
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 217204,
            "hidden_size": profile.hidden, "intermediate_size": profile.intermediate,
            "num_hidden_layers": profile.layers, "num_attention_heads": profile.heads,
            "num_key_value_heads": profile.kv_heads, "head_dim": profile.head_dim, "hidden_act": "silu",
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "attention_bias": False, "tie_word_embeddings": True}


def random_model(profile: Profile, seed: int) -> Any:
    """The LM with seeded random weights (std 0.02, norms 1), built the way checkpoints are loaded."""
    from transformers import Qwen3Config, Qwen3Model

    values = config(profile)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Qwen3Model(Qwen3Config.from_dict(values)).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    weights = {key: (torch.ones(shape) if key.endswith("norm.weight")
                     else torch.randn(shape, generator=generator) * 0.02) for key, shape in shapes.items()}
    return build_lm(values, weights)


def tokenizer(folder: Optional[str]):
    if folder:
        return load_lm_tokenizer(folder)
    from tests.core.tiny_lm import lm_tokenizer

    return lm_tokenizer()


def jobs(tables: TokenTables, profile: Profile, phase: str, batch: int, tokens: int) -> list[Job]:
    encode = tables.tokenizer.encode
    lyrics = "\n".join(LYRIC_LINES * profile.lyric_repeats).strip()
    if phase == "cot":
        spec = ConstraintSpec("cot", True, ("bpm", "caption", "duration", "keyscale", "language", "timesignature"))
        return [Job(tuple(encode(think_prompt(CAPTION, lyrics))), None, spec, tokens, 1000 + i) for i in range(batch)]
    spec = ConstraintSpec("codes", False, (), {}, target_codes=tokens)
    prompt = tuple(encode(codes_prompt(CAPTION, lyrics, format_cot(METADATA))))
    uncond = tuple(encode(codes_uncond_prompt(CAPTION, lyrics)))
    return [Job(prompt, uncond, spec, tokens + 1, 2000 + i) for i in range(batch)]


class TimedKVDecoder(KVDecoder):
    """Ours, timing its prefill (`start`) inside the run, so decode speed comes from the same run's clock."""

    prefill_seconds = 0.0

    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        began = time.perf_counter()
        super().start(ids, mask)
        self.prefill_seconds = time.perf_counter() - began


def measure(make_decoder: Any, tables: TokenTables, work: list[Job], sampling: Sampling,
            repeats: int = 1) -> dict[str, Any]:
    """The fastest of `repeats` runs (a shared machine only ever slows a run down); every run must agree."""
    best, prefill, outputs = float("inf"), None, None
    for _ in range(repeats):
        decoder = make_decoder()
        start = time.perf_counter()
        result = generate(decoder, tables, work, sampling)
        seconds = time.perf_counter() - start
        if seconds < best:
            best, prefill = seconds, getattr(decoder, "prefill_seconds", None)
        if outputs is not None and result != outputs:
            raise RuntimeError("two runs with the same seeds drew different tokens")
        outputs = result
    tokens = sum(len(out) for out in outputs)
    return {"seconds": best, "tokens": tokens, "tokens_per_s": tokens / best, "runs": repeats, "outputs": outputs,
            "prefill_seconds": prefill}


def run_case(model: Any, tables: TokenTables, profile: Profile, phase: str, batch: int,
             repeats: int) -> dict[str, Any]:
    sampling = Sampling(temperature=0.85, cfg_scale=2.0 if phase == "codes" else 1.0, top_p=0.9)
    full = profile.cot_tokens if phase == "cot" else profile.codes
    short = profile.baseline_tokens
    load_before = os.getloadavg()[0]
    cached, plain = (lambda: TimedKVDecoder(model, tables)), (lambda: PlainDecoder(model, tables))
    ours_short = measure(cached, tables, jobs(tables, profile, phase, batch, short), sampling, repeats)
    base = measure(plain, tables, jobs(tables, profile, phase, batch, short), sampling)
    ours = measure(cached, tables, jobs(tables, profile, phase, batch, full), sampling, repeats)
    prefill = ours["prefill_seconds"]
    work = jobs(tables, profile, phase, batch, full)
    decode_tokens = ours["tokens"] - batch
    result = {
        "phase": phase, "batch": batch, "rows_per_step": batch * (2 if sampling.uses_cfg else 1),
        "load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0],
        "prompt_tokens": len(work[0].prompt_ids),
        "uncond_prompt_tokens": len(work[0].uncond_ids) if work[0].uncond_ids else None,
        "ours": {"tokens": ours["tokens"], "seconds": ours["seconds"], "tokens_per_s": ours["tokens_per_s"],
                 "runs": ours["runs"], "prefill_seconds": prefill,
                 "decode_tokens_per_s": decode_tokens / max(ours["seconds"] - prefill, 1e-9)},
        "ours_first_tokens": {"tokens": ours_short["tokens"], "seconds": ours_short["seconds"],
                              "tokens_per_s": ours_short["tokens_per_s"], "runs": ours_short["runs"]},
        "baseline_first_tokens": {"tokens": base["tokens"], "seconds": base["seconds"],
                                  "tokens_per_s": base["tokens_per_s"]},
        "same_tokens_as_baseline": ours_short["outputs"] == base["outputs"],
    }
    result["ratio_tokens_per_s"] = {
        "ours_vs_baseline_same_tokens": ours_short["tokens_per_s"] / base["tokens_per_s"],
        "ours_full_run_vs_baseline": ours["tokens_per_s"] / base["tokens_per_s"],
    }
    return result


def machine(threads: int) -> dict[str, Any]:
    cpu = None
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": threads,
            "load_average_1min_at_start": os.getloadavg()[0]}


def table(cases: list[dict[str, Any]]) -> str:
    lines = ["phase  batch rows prompt | ours tok/s (first N) | baseline tok/s (first N) | ratio | ours tok/s full run "
             "(prefill s, decode tok/s) | same tokens"]
    for case in cases:
        ours, base, first = case["ours"], case["baseline_first_tokens"], case["ours_first_tokens"]
        lines.append(
            f"{case['phase']:<6} {case['batch']:>5} {case['rows_per_step']:>4} {case['prompt_tokens']:>6} | "
            f"{first['tokens_per_s']:>9.2f} ({first['tokens']:>3}) | "
            f"{base['tokens_per_s']:>12.3f} ({base['tokens']:>3}) | "
            f"{case['ratio_tokens_per_s']['ours_vs_baseline_same_tokens']:>5.1f} | {ours['tokens_per_s']:>8.2f} "
            f"({ours['prefill_seconds']:.2f} s, {ours['decode_tokens_per_s']:.2f}) | {case['same_tokens_as_baseline']}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny dims (smoke test)")
    parser.add_argument("--layers", type=int, help="decoder layers (default: 28, the real 0.6B depth)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--cot-tokens", type=int, help="phase-1 tokens for the full run (default 48)")
    parser.add_argument("--codes", type=int, help="phase-2 codes for the full run (default 64)")
    parser.add_argument("--baseline-tokens", type=int, help="tokens per sequence for the baseline (default 4)")
    parser.add_argument("--batches", help="comma list of batch sizes for phase 2 (default 1,4)")
    parser.add_argument("--tokenizer", help="an acestep-5Hz-lm folder (default: the vocabulary the tests rebuild)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of ours per measurement, fastest kept (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else REAL
    overrides = {"layers": args.layers, "cot_tokens": args.cot_tokens, "codes": args.codes,
                 "baseline_tokens": args.baseline_tokens,
                 "batches": tuple(int(b) for b in args.batches.split(",")) if args.batches else None}
    profile = Profile(**{**profile.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"benchmark": "bench_planner",
                              "date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "machine": machine(torch.get_num_threads()),
                              "settings": {"profile": "quick" if args.quick else "real-0.6B", **profile.__dict__,
                                           "dtype": "float32", "seed": args.seed, "repeats_ours": args.repeats,
                                           "repeats_baseline": 1, "sampling": "T 0.85, top-p 0.9, "
                                           "CFG 2.0 in phase 2 (official defaults)"}}
    started = time.perf_counter()
    tables = TokenTables(tokenizer(args.tokenizer))
    model = random_model(profile, args.seed)
    report["setup_seconds"] = time.perf_counter() - started
    cases = [run_case(model, tables, profile, "cot", 1, args.repeats)]
    cases += [run_case(model, tables, profile, "codes", batch, args.repeats) for batch in profile.batches]
    report["cases"] = cases
    report["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(cases))
    print(f"written: {args.out}")
    return 0 if all(case["same_tokens_as_baseline"] for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
