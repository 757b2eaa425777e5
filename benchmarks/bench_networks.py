"""Wall time and peak memory of our DiT, condition encoder and VAE decoder on CPU, against a plain eager
baseline (`eager_baseline.py`) measured in the same run, written as JSON plus a printed table.

Every measurement runs in a fresh Python process: it builds the network with seeded random weights and
seeded inputs, resets the kernel's peak-RSS counter, runs one warm-up call and then timed calls, and reports
the median/min wall time and the peak resident memory above what was resident before the first call.
The ratio ours/baseline only ever compares two processes of the same run. Both variants write their output,
and the table reports how far they differ, next to a check on a small config (must agree to ~1e-5).

The 2B DiT at full width is slow on a small CPU, so by default only `--layers` layers are built; the
per-layer time and the 24-layer figure derived from it are labelled as extrapolations in the JSON.

    python benchmarks/bench_networks.py                  # full width, 2 DiT layers, every case
    python benchmarks/bench_networks.py --cases dit-30s-b1,condition-encoder
    python benchmarks/bench_networks.py --full           # the real depth (24 layers)
    python benchmarks/bench_networks.py --quick          # tiny dims, seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]

RESULT_PREFIX = "BENCH_RESULT "
DEFAULT_OUT = BENCH_DIR / "results" / "bench_networks.json"
DEFAULT_LAYERS = 2
AGREEMENT_TOLERANCE = 1e-5
MEMORY_METHOD = "VmHWM (peak RSS, reset via /proc/self/clear_refs before the calls) minus VmRSS before them"
# A fixed glibc mmap threshold turns off its adaptive one, under which freed activations may stay resident or
# not depending on earlier allocations: with it, peak RSS follows the live tensors and repeats to ~1 MB.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    network: str  # "dit", "condition-encoder" or "vae-decode"
    seconds: int
    batch: int

    @property
    def variants(self) -> tuple[str, ...]:
        return ("baseline", "ours", "ours-cached") if self.network == "dit" else ("baseline", "ours")


CASES = {case.name: case for case in (
    Case("dit-30s-b1", "dit", 30, 1),
    Case("dit-30s-b4", "dit", 30, 4),
    Case("dit-240s-b1", "dit", 240, 1),
    Case("dit-240s-b4", "dit", 240, 4),
    Case("condition-encoder", "condition-encoder", 30, 1),
    Case("vae-decode-30s", "vae-decode", 30, 1),
)}
QUICK_CASES = ("dit-30s-b1", "condition-encoder", "vae-decode-30s")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Sequence lengths of one profile: the real ones, or tiny ones for the smoke test."""

    latent_rate: int  # latent frames per second of audio
    lyrics: int
    text: int
    timbre_frames: int


REAL = Sizes(latent_rate=25, lyrics=512, text=256, timbre_frames=750)
QUICK = Sizes(latent_rate=1, lyrics=12, text=8, timbre_frames=10)


def _configs(profile: str):
    """(DiT config at full depth, VAE config) of a profile; imported lazily so the parent stays light."""
    from acestep_core.models.config import AceStepConfig
    from acestep_core.models.vae import OobleckConfig
    if profile == "real":
        return AceStepConfig(), OobleckConfig()
    tiny = AceStepConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, sliding_window=4, text_hidden_dim=32,
                         timbre_hidden_dim=16, num_lyric_encoder_hidden_layers=2,
                         num_timbre_encoder_hidden_layers=2)
    return tiny, OobleckConfig(channel_multiples=[1, 2], downsampling_ratios=[2, 3], decoder_channels=8)


def _with_depth(config, layers: int):
    return dataclasses.replace(config, num_hidden_layers=layers, layer_types=config.layer_types[:layers])


def build_workload(case: Case, variant: str, profile: str, layers: Optional[int], dtype_name: str, seed: int,
                   ) -> tuple[Callable[[], Any], dict[str, Any], dict[str, Any]]:
    """Seeded network + inputs of `case` → (the call of `variant`, input shapes, facts such as parameter counts).

    Every variant of a case gets the same weights and inputs. "ours" is a first sampling step (it fills a
    fresh cross-attention cache); "ours-cached" is the second step, its cache filled here, outside the timing.
    """
    import torch

    import eager_baseline as eager
    from acestep_core.models.condition_encoder import ConditionEncoder
    from acestep_core.models.dit import AceStepDiT, CrossAttentionCache
    from acestep_core.models.vae import OobleckVAE

    dtype = getattr(torch, dtype_name)
    sizes = REAL if profile == "real" else QUICK
    config, vae_config = _configs(profile)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    def padding(batch: int, length: int) -> torch.Tensor:
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[:, length - length // 8:] = 0  # the last eighth is padding, as in a padded batch
        return mask

    b, frames = case.batch, case.seconds * sizes.latent_rate
    facts: dict[str, Any] = {}
    if case.network == "dit":
        depth = layers or config.num_hidden_layers
        module = AceStepDiT(_with_depth(config, depth)).to(dtype).eval()
        with torch.device("meta"):
            facts["params_full_depth"] = sum(p.numel() for p in AceStepDiT(config).parameters())
        facts.update(layers=depth, layers_full_depth=config.num_hidden_layers)
        x, ctx = randn(b, frames, config.audio_acoustic_hidden_dim), randn(b, frames, 128)
        cond = randn(b, sizes.lyrics + 1 + sizes.text, config.encoder_width)
        t = torch.rand(b, generator=gen).to(dtype)
        r = t * torch.rand(b, generator=gen).to(dtype)
        shapes = {"hidden_states": list(x.shape), "context_latents": list(ctx.shape),
                  "encoder_hidden_states": list(cond.shape)}
        if variant == "baseline":
            return (lambda: eager.eager_dit_forward(module, x, t, r, cond, ctx)), shapes, _weights(module, facts)
        if variant == "ours":
            return (lambda: module(x, t, r, cond, ctx, cache=CrossAttentionCache())), shapes, _weights(module, facts)
        cache = CrossAttentionCache()
        with torch.inference_mode():
            module(x, t, r, cond, ctx, cache=cache)
        return (lambda: module(x, t, r, cond, ctx, cache=cache)), shapes, _weights(module, facts)
    if case.network == "condition-encoder":
        module = ConditionEncoder(config.encoder_view(), prepend_timbre_token=config.is_xl).to(dtype).eval()
        args = (randn(b, sizes.text, config.text_hidden_dim), padding(b, sizes.text),
                randn(b, sizes.lyrics, config.text_hidden_dim), padding(b, sizes.lyrics),
                randn(b, sizes.timbre_frames, config.timbre_hidden_dim), torch.arange(b))
        shapes = {"text": list(args[0].shape), "lyrics": list(args[2].shape), "timbre_clips": list(args[4].shape)}
        if variant == "baseline":
            return (lambda: eager.eager_condition_encoder(module, *args)[0]), shapes, _weights(module, facts)
        return (lambda: module(*args)[0]), shapes, _weights(module, facts)
    module = OobleckVAE(vae_config).to(dtype).eval()
    latent = randn(b, vae_config.decoder_input_channels, frames)
    shapes = {"latent": list(latent.shape),
              "waveform": [b, vae_config.audio_channels, frames * vae_config.hop_length]}
    if variant == "baseline":
        return (lambda: eager.eager_vae_decode(module, latent)), shapes, _weights(module, facts)
    return (lambda: module.decode(latent)), shapes, _weights(module, facts)


def _weights(module, facts: dict[str, Any]) -> dict[str, Any]:
    params = list(module.parameters())
    return {**facts, "params": sum(p.numel() for p in params),
            "weights_mb": sum(p.numel() * p.element_size() for p in params) / 2 ** 20}


def _proc_status_kb(field: str) -> Optional[int]:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process: warm-up, timed calls, peak memory, output saved for comparison."""
    import gc

    import torch
    from safetensors.torch import save_file

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    call, shapes, facts = build_workload(CASES[spec["case"]], spec["variant"], spec["profile"], spec["layers"],
                                         spec["dtype"], spec["seed"])
    gc.collect()
    resident_kb = _proc_status_kb("VmRSS")
    peak_reset = _reset_peak_rss()
    times: list[float] = []
    with torch.inference_mode():
        start = time.perf_counter()
        out = call()
        warmup_s = time.perf_counter() - start
        while len(times) < spec["repeats"] and (not times or sum(times) < spec["budget_s"]):
            del out
            start = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - start)
    peak_kb = _proc_status_kb("VmHWM")
    save_file({"out": out.detach().float().contiguous()}, spec["output"])
    memory_ok = peak_reset and resident_kb is not None and peak_kb is not None
    return {
        "case": spec["case"], "variant": spec["variant"], "shapes": shapes, "threads": torch.get_num_threads(),
        "warmup_s": warmup_s, "times_s": times, "median_s": statistics.median(times), "min_s": min(times),
        "peak_mb": (peak_kb - resident_kb) / 1024 if memory_ok else None,
        "resident_before_mb": resident_kb / 1024 if resident_kb is not None else None,
        "peak_rss_mb": peak_kb / 1024 if peak_kb is not None else None,
        "load_average_1min_after": os.getloadavg()[0], **facts,
    }


def _spawn(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env={**ALLOCATOR_ENV, **os.environ})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"case": spec["case"], "variant": spec["variant"],
            "error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}


def relative_difference(ours, reference) -> float:
    """max |ours - reference| / max |reference| (0 when both are zero)."""
    scale = reference.abs().max().item()
    diff = (ours.float() - reference.float()).abs().max().item()
    return diff / scale if scale else diff


def agreement_check(seed: int) -> dict[str, Any]:
    """Ours vs baseline in float32 on the tiny config, with padding, sliding masks and a cached second step."""
    import torch

    import eager_baseline as eager
    from acestep_core.models.condition_encoder import ConditionEncoder
    from acestep_core.models.dit import AceStepDiT, CrossAttentionCache
    from acestep_core.models.vae import OobleckVAE

    config, vae_config = _configs("quick")
    torch.manual_seed(seed)
    dit = AceStepDiT(config).eval()
    for name, param in dit.named_parameters():  # non-zero modulation tables, so every path carries signal
        if name.endswith("scale_shift_table"):
            torch.nn.init.normal_(param, std=0.1)
    encoder = ConditionEncoder(config.encoder_view(), prepend_timbre_token=False).eval()
    vae = OobleckVAE(vae_config).eval()
    b, frames, rows = 2, 33, 21
    steps = [(torch.randn(b, frames, 64), torch.rand(b), torch.rand(b)) for _ in range(2)]
    ctx, cond = torch.randn(b, frames, 128), torch.randn(b, rows, config.encoder_width)
    text_mask, lyric_mask = torch.ones(b, 8, dtype=torch.long), torch.ones(b, 12, dtype=torch.long)
    text_mask[1, 5:], lyric_mask[0, 7:] = 0, 0
    enc_args = (torch.randn(b, 8, 32), text_mask, torch.randn(b, 12, 32), lyric_mask, torch.randn(3, 10, 16),
                torch.tensor([0, 1, 1]))
    latent = torch.randn(1, 64, 9)
    results = {}
    with torch.inference_mode():
        cache = CrossAttentionCache()
        for index, (x, t, r) in enumerate(steps):
            ours = dit(x, t, r, cond, ctx, cache=cache)
            name = "dit_first_step" if index == 0 else "dit_second_step_with_cache"
            results[name] = relative_difference(ours, eager.eager_dit_forward(dit, x, t, r, cond, ctx))
        results["condition_encoder"] = relative_difference(encoder(*enc_args)[0],
                                                           eager.eager_condition_encoder(encoder, *enc_args)[0])
        results["vae_decode"] = relative_difference(vae.decode(latent), eager.eager_vae_decode(vae, latent))
    return {"dtype": "float32", "tolerance": AGREEMENT_TOLERANCE, "max_relative_difference": results,
            "ok": all(value <= AGREEMENT_TOLERANCE for value in results.values())}


def machine_info(threads: Optional[int]) -> dict[str, Any]:
    import torch
    cpu_model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu_model = match.group(1).strip() if match else None
    total_kb = None
    if Path("/proc/meminfo").exists():
        match = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE)
        total_kb = int(match.group(1)) if match else None
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": threads or torch.get_num_threads(),
            "memory_total_mb": total_kb / 1024 if total_kb else None,
            "load_average_1min_at_start": os.getloadavg()[0]}


def _measurement(case: Case, variant: str, run: dict, base: dict, difference: Optional[float],
                 dtype: str) -> dict[str, Any]:
    """One table row: ours (a variant) against the baseline process of the same run."""
    row: dict[str, Any] = {"name": case.name, "network": case.network, "variant": variant, "dtype": dtype,
                           "batch": case.batch, "audio_seconds": case.seconds}
    for key in ("error", "shapes", "layers", "layers_full_depth", "params", "weights_mb", "median_s", "min_s",
                "times_s", "warmup_s", "peak_mb", "resident_before_mb", "peak_rss_mb",
                "load_average_1min_after"):
        if key in run:
            row[key] = run[key]
    row["baseline"] = {key: base.get(key) for key in ("median_s", "min_s", "times_s", "peak_mb", "error")
                       if key in base}
    ok = "error" not in run and "error" not in base
    row["ratio_seconds"] = run["median_s"] / base["median_s"] if ok else None
    row["ratio_seconds_min"] = run["min_s"] / base["min_s"] if ok else None
    row["ratio_peak_mb"] = (run["peak_mb"] / base["peak_mb"]
                            if ok and run["peak_mb"] is not None and base["peak_mb"] else None)
    row["max_relative_difference_vs_baseline"] = difference
    loads = [r["load_average_1min_after"] for r in (run, base) if "load_average_1min_after" in r]
    row["max_load_average_1min"] = max(loads) if loads else None
    layers, full = run.get("layers"), run.get("layers_full_depth")
    if ok and layers and full and layers < full:
        row["extrapolation"] = {
            "label": f"EXTRAPOLATION, not a measurement: {layers}-layer median / {layers} x {full}; it "
                     "spreads the non-layer work over the layers, so it slightly overstates",
            "seconds_per_layer": run["median_s"] / layers,
            "seconds_full_depth": run["median_s"] / layers * full,
            "baseline_seconds_full_depth": base["median_s"] / layers * full,
            "weights_mb_full_depth_computed": run["params_full_depth"] * run["weights_mb"] / run["params"],
        }
    return row


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    header = ("case", "variant", "layers", "ours s (med/min)", "base s (med/min)", "s ratio (med/min)",
              "ours MB", "base MB", "MB ratio", "rel diff", "load")
    lines = [header]
    for row in report["measurements"]:
        if "error" in row or "error" in row["baseline"]:
            lines.append((row["name"], row["variant"], "", row.get("error") or row["baseline"]["error"], "", "", "",
                          "", "", ""))
            continue
        lines.append((row["name"], row["variant"], str(row.get("layers", "")),
                      f"{row['median_s']:.3f}/{row['min_s']:.3f}",
                      f"{row['baseline']['median_s']:.3f}/{row['baseline']['min_s']:.3f}",
                      f"{row['ratio_seconds']:.2f}/{row['ratio_seconds_min']:.2f}", _fmt(row["peak_mb"], ".0f"),
                      _fmt(row["baseline"]["peak_mb"], ".0f"), _fmt(row["ratio_peak_mb"], ".2f"),
                      _fmt(row["max_relative_difference_vs_baseline"], ".1e"),
                      _fmt(row["max_load_average_1min"], ".1f")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    extrapolated = [row for row in report["measurements"] if "extrapolation" in row]
    if extrapolated:
        text.append("")
        text.append(f"EXTRAPOLATED to {extrapolated[0]['layers_full_depth']} DiT layers from "
                    f"{extrapolated[0]['layers']} (not measured): ours s / baseline s")
        for row in extrapolated:
            extra = row["extrapolation"]
            text.append(f"  {row['name']:<12} {row['variant']:<12} {extra['seconds_full_depth']:.2f} / "
                        f"{extra['baseline_seconds_full_depth']:.2f}")
    check = report["agreement"]
    text.append("")
    text.append(f"agreement on the small config (float32, tolerance {check['tolerance']:g}): "
                + ", ".join(f"{k} {v:.1e}" for k, v in check["max_relative_difference"].items())
                + (" -> ok" if check["ok"] else " -> MISMATCH"))
    return "\n".join(text)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import load_file

    profile = "quick" if args.quick else "real"
    layers = None if args.full or args.quick else args.layers
    names = args.cases.split(",") if args.cases else (QUICK_CASES if args.quick else tuple(CASES))
    report: dict[str, Any] = {
        "schema": 1, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(args.threads),
        "settings": {"profile": profile, "dit_layers": layers or "config depth", "dtype": args.dtype,
                     "repeats": args.repeats, "budget_s": args.budget_s, "seed": args.seed, "warmup_calls": 1,
                     "memory_method": MEMORY_METHOD, "worker_environment": {
                         key: os.environ.get(key, value) for key, value in ALLOCATOR_ENV.items()},
                     "cases": list(names)},
        "agreement": agreement_check(args.seed), "measurements": [], "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_networks_") as scratch:
        for name in names:
            case, runs, outputs = CASES[name], {}, {}
            for variant in case.variants:
                output = str(Path(scratch) / f"{name}-{variant}.safetensors")
                spec = {"case": name, "variant": variant, "profile": profile, "layers": layers,
                        "dtype": args.dtype, "threads": args.threads, "repeats": args.repeats,
                        "budget_s": args.budget_s, "seed": args.seed, "output": output}
                print(f"[bench] {name} {variant} ...", file=sys.stderr, flush=True)
                runs[variant] = _spawn(spec)
                report["runs"].append(runs[variant])
                if "error" not in runs[variant]:
                    outputs[variant] = load_file(output)["out"]
            for variant in case.variants[1:]:
                difference = None
                if variant in outputs and "baseline" in outputs:
                    difference = relative_difference(outputs[variant], outputs["baseline"])
                report["measurements"].append(
                    _measurement(case, variant, runs[variant], runs["baseline"], difference, args.dtype))
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    return report


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    depth = parser.add_mutually_exclusive_group()
    depth.add_argument("--quick", action="store_true", help="tiny dims, a few seconds (smoke test)")
    depth.add_argument("--full", action="store_true", help="the DiT at its real depth (24 layers)")
    depth.add_argument("--layers", type=int, default=DEFAULT_LAYERS,
                       help=f"DiT layers built at full width (default {DEFAULT_LAYERS}; extrapolated to 24); "
                            "keep it even: the layers alternate sliding-window and full attention")
    parser.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (median of these)")
    parser.add_argument("--budget-s", type=float, default=20.0,
                        help="stop timing a measurement once its timed calls exceed this (at least one call)")
    parser.add_argument("--threads", type=int, help="torch threads in the workers (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [name for name in (args.cases or "").split(",") if name and name not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    from acestep_core.models.config import AceStepConfig
    depth = AceStepConfig().num_hidden_layers
    if not 1 <= args.layers <= depth or args.repeats < 1:
        parser.error(f"--layers must lie in 1..{depth} and --repeats be at least 1")
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
    failed = [row for row in report["measurements"] if "error" in row or "error" in row["baseline"]]
    return 1 if failed or not report["agreement"]["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
