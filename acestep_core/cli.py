"""The `acestep` command: make songs from the shell with the same code the ComfyUI nodes run.

    acestep generate --caption "dream pop, female vocal" --lyrics song.txt --duration 60 --seed 7 --batch 4
    acestep generate --task cover --src song.flac --caption "jazz trio" --out covers/
    acestep generate --caption "city pop" --lyrics song.txt --lm acestep-5Hz-lm-1.7B --save-blueprint

Models are the official folders under `--models-dir` (fetched from Hugging Face with `--download`).
Each take is written as a new file (existing files are never replaced) and its path and seed are
printed. Any problem the user can fix is reported as one line on stderr with exit code 2, and then no
output file is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from acestep_core.cli_planner import add_planner_options, generate_planned, make_blueprint, save_plan
from acestep_core.errors import AceStepError

FORMATS = ("flac", "wav", "mp3")
EXIT_USAGE = 2
EXIT_CANCELLED = 130
MODELS_DIR_ENV = "ACESTEP_MODELS_DIR"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error


def _add_text_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text")
    g.add_argument("--caption", default="", help="style description (genre, instruments, mood)")
    g.add_argument("--lyrics", metavar="FILE", help="text file with the lyrics ([verse], [chorus] tags welcome)")
    g.add_argument("--instrumental", action="store_true", help="no vocals (lyrics become [Instrumental])")
    g.add_argument("--language", default="unknown", help="vocal language code, e.g. en, zh, ja (default unknown)")
    g.add_argument("--bpm", type=int, help="beats per minute")
    g.add_argument("--key", default="", help="key and scale, e.g. 'C major'")
    g.add_argument("--time-signature", default="", help="beats per bar: 2, 3, 4 or 6")
    g.add_argument("--duration", type=float,
                   help="seconds, 10–600 (text2music/complete; tasks with a source take its length). "
                        "Default: the official 120 s")


def _add_task_options(p: argparse.ArgumentParser) -> None:
    from acestep_core.tasks import ALL_TASKS, CHUNK_MASK_MODES, ENCODE_MODES, REPAINT_MODES

    g = p.add_argument_group("task")
    g.add_argument("--task", default="text2music", choices=ALL_TASKS)
    g.add_argument("--src", metavar="FILE", help="source audio (cover, repaint, extend, lego, extract, complete)")
    g.add_argument("--ref", metavar="FILE", action="append", default=[],
                   help="timbre reference audio; repeat for several clips")
    g.add_argument("--codes", metavar="FILE",
                   help="audio codes (<|audio_code_N|>…); one line per batch item, or one line for all")
    g.add_argument("--track", help="lego/extract: the track, e.g. vocals, drums, backing_vocals")
    g.add_argument("--tracks", type=lambda s: tuple(t.strip() for t in s.split(",") if t.strip()), default=(),
                   help="complete: comma-separated tracks to add")
    g.add_argument("--repaint-start", type=float, default=0.0, help="region start in s (negative: extend the start)")
    g.add_argument("--repaint-end", type=float, help="region end in s (past the source: extend the end); "
                                                     "default end of the source")
    g.add_argument("--repaint-mode", default="balanced", choices=REPAINT_MODES)
    g.add_argument("--repaint-strength", type=float, default=0.5, help="balanced mode: 0 keeps most source, 1 least")
    g.add_argument("--chunk-mask-mode", default="auto", choices=CHUNK_MASK_MODES)
    g.add_argument("--cover-strength", type=float, default=1.0,
                   help="fraction of steps conditioned on the source (the rest on text only)")
    g.add_argument("--cover-noise", type=float, default=0.0, help="start from the noised source: 0 none … 1 closest")
    g.add_argument("--encode-mode", default="seeded", choices=ENCODE_MODES,
                   help="VAE encode of source/reference: posterior sample seeded from the seed, or its mean")


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler")
    g.add_argument("--steps", type=int, help="turbo 1–20 (default 8; the official app stops at 8), "
                                             "sft 50 / base 32 by default")
    g.add_argument("--shift", type=float, help="timestep shift 1–5 (default 3)")
    g.add_argument("--timesteps", type=_float_list, help="custom comma-separated schedule, e.g. 1,0.75,0.5,0.25,0")
    g.add_argument("--guidance", type=float, default=7.0, help="CFG scale (base/sft only; turbo ignores it)")
    g.add_argument("--adg", action="store_true", help="ADG instead of APG guidance (base/sft)")
    g.add_argument("--cfg-start", type=float, default=0.0, help="CFG interval start (t)")
    g.add_argument("--cfg-end", type=float, default=1.0, help="CFG interval end (t)")
    g.add_argument("--method", default="ode", choices=("ode", "sde"))
    g.add_argument("--sampler", default="euler", choices=("euler", "heun"))
    g.add_argument("--no-dcw", action="store_true", help="turn off the wavelet correction (on by default)")
    g.add_argument("--seed", help="seed, or comma-separated seeds per take (default random). As in the official "
                                  "app, a single seed fixes take 1 only; every take's seed is printed")
    g.add_argument("--batch", type=int, default=1, help="takes per run, 1–8")
    g.add_argument("--retake-seed", help="second seed mixed into the noise (with --retake-variance)")
    g.add_argument("--retake-variance", type=float, default=0.0,
                   help="0 keeps the seed's noise, 1 uses the retake seed")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output and models")
    g.add_argument("--out", default="outputs", help="output folder (created if missing)")
    g.add_argument("--name", default="acestep", help="file name prefix")
    g.add_argument("--format", default="flac", choices=FORMATS)
    g.add_argument("--no-normalize", action="store_true", help="keep the level (default: peak at -1 dBFS)")
    g.add_argument("--fade-in", type=float, default=0.0, help="seconds")
    g.add_argument("--fade-out", type=float, default=0.0, help="seconds")
    g.add_argument("--models-dir", default=os.environ.get(MODELS_DIR_ENV, "checkpoints"),
                   help=f"folder with the official model folders (default ${MODELS_DIR_ENV} or ./checkpoints)")
    g.add_argument("--dit", default="acestep-v15-turbo", help="DiT folder name or path")
    g.add_argument("--vae", default="vae", help="VAE folder name or path")
    g.add_argument("--text-encoder", default="Qwen3-Embedding-0.6B", help="text encoder folder name or path")
    g.add_argument("--variant", choices=("turbo", "sft", "base"), help="override the detected DiT variant")
    g.add_argument("--download", action="store_true", help="fetch missing official models from Hugging Face")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda when available)")
    g.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="default bf16 on GPU, fp32 on CPU")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="acestep", description="ACE-Step 1.5 text-to-music (comfyui-acestep engine).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    generate = commands.add_parser("generate", help="make songs", description="Make songs with ACE-Step 1.5.")
    for add in (_add_text_options, _add_task_options, _add_sampler_options, add_planner_options, _add_output_options):
        add(generate)
    return parser


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AceStepError(f"Cannot read the {what} file '{path}' ({error}); give a UTF-8 text file.") from error


def _codes(path: Optional[str]) -> Any:
    if path is None:
        return None
    lines = [line.strip() for line in _read_text(path, "audio codes").splitlines() if line.strip()]
    return tuple(lines) if len(lines) > 1 else (lines[0] if lines else None)


def _seeds(text: Optional[str]) -> Optional[str]:
    return text if text is not None and text.strip() else None


def request_from_args(args: argparse.Namespace) -> Any:
    """The `GenerationRequest` an argument list describes (files for lyrics and codes are read here)."""
    from acestep_core.sampling import DcwSettings
    from acestep_core.tasks import GenerationRequest

    lyrics = _read_text(args.lyrics, "lyrics") if args.lyrics else ""
    if args.instrumental:
        if lyrics.strip():
            raise AceStepError("Give either --lyrics or --instrumental, not both.")
        lyrics = "[Instrumental]"
    return GenerationRequest(
        caption=args.caption, lyrics=lyrics, language=args.language, bpm=args.bpm, keyscale=args.key,
        timesignature=args.time_signature, duration=args.duration, task=args.task,
        src_audio=args.src, reference_audio=tuple(args.ref), audio_codes=_codes(args.codes),
        track_name=args.track, track_classes=args.tracks, repaint_start=args.repaint_start,
        repaint_end=args.repaint_end, repaint_mode=args.repaint_mode, repaint_strength=args.repaint_strength,
        chunk_mask_mode=args.chunk_mask_mode, audio_cover_strength=args.cover_strength,
        cover_noise_strength=args.cover_noise, steps=args.steps, shift=args.shift, timesteps=args.timesteps,
        guidance_scale=args.guidance, use_adg=args.adg, cfg_interval_start=args.cfg_start,
        cfg_interval_end=args.cfg_end, infer_method=args.method, sampler_mode=args.sampler,
        dcw=DcwSettings(enabled=not args.no_dcw), seeds=_seeds(args.seed), batch_size=args.batch,
        retake_seeds=_seeds(args.retake_seed), retake_variance=args.retake_variance, encode_mode=args.encode_mode,
        normalize=not args.no_normalize, fade_in=args.fade_in, fade_out=args.fade_out)


def _device_and_dtype(args: argparse.Namespace) -> tuple[Any, str]:
    import torch

    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise AceStepError(f"Device '{name}' is not valid ({error}); use cpu, cuda, cuda:N or mps.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AceStepError(f"Device '{name}' asked for, but this PyTorch sees no CUDA GPU; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AceStepError(f"Device '{name}' asked for, but MPS is not available here; use --device cpu.")
    return device, args.dtype or ("fp32" if device.type == "cpu" else "bf16")


class _ProgressBar:
    """One tqdm bar per stage on stderr ("plan-cot", "plan-codes", "encode", "sample", "decode")."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.stage: Optional[str] = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage or self.bar is None or self.bar.total != total:
            self.close()
            self.stage = stage
            unit = "step" if stage == "sample" else "token" if stage.startswith("plan") else "window"
            self.bar = tqdm(total=total, desc=stage, unit=unit,
                            file=sys.stderr, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _recipe(result: Any, index: int) -> str:
    """A short JSON note stored in each file: enough to find the settings that made it."""
    r = result.request
    return json.dumps({
        "task": r.task, "caption": r.caption, "seed": result.seeds[index], "steps": r.steps, "shift": r.shift,
        "guidance": r.guidance_scale, "duration_s": round(result.plan.seconds, 2), "dit": result.model_ids.get("dit"),
    }, ensure_ascii=False)


def save_takes(result: Any, out_dir: Path, name: str, audio_format: str) -> list[Path]:
    """Write every take as a new file; if one fails, remove the ones already written and re-raise."""
    from acestep_core.audio import save_audio, unique_path

    written: list[Path] = []
    try:
        for index, seed in enumerate(result.seeds):
            target = unique_path(out_dir / f"{name}_{index + 1}_seed{seed}.{audio_format}")
            metadata = {"software": "comfyui-acestep", "comment": _recipe(result, index)}
            written.append(save_audio(result.audio[index], result.sample_rate, target, audio_format,
                                      metadata=metadata))
    except BaseException as error:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise AceStepError(f"Cannot write to '{out_dir}' ({error}); choose another --out folder.") from error
        raise
    return written


def _check_models_present(args: argparse.Namespace) -> None:
    """Without --download, say which official model lacks files and how to get it, before loading anything."""
    from acestep_core.checkpoint_download import OFFICIAL_MODELS, manual_instructions, missing_files

    if args.download:
        return
    root = Path(args.models_dir).expanduser()
    for name in (args.dit, args.vae, args.text_encoder, *([args.lm] if args.lm else [])):
        if name in OFFICIAL_MODELS and not Path(name).expanduser().exists():
            missing = missing_files(name, root)
            if missing:
                raise AceStepError(f"Model {name} is not complete in {root}. Add --download to fetch it from Hugging "
                                   f"Face, or {manual_instructions(OFFICIAL_MODELS[name], root, missing)}")


def run_generate(args: argparse.Namespace) -> int:
    from acestep_core.pipeline import generate
    from acestep_core.pipeline_models import load_models
    from acestep_core.tasks import check_request

    request = request_from_args(args)
    check_request(request)
    device, dtype = _device_and_dtype(args)
    _check_models_present(args)
    models = load_models(args.models_dir, dit=args.dit, vae=args.vae, text_encoder=args.text_encoder,
                         device=device, dtype=dtype, download=args.download, variant=args.variant)
    bar = _ProgressBar(not args.quiet)
    try:
        blueprint = make_blueprint(args, request, device, dtype, progress=bar)
        if blueprint is None:
            result = generate(request, models, progress=bar)
        else:
            result = generate_planned(request, blueprint, models, progress=bar)
    finally:
        bar.close()
    out_dir = Path(args.out).expanduser()
    paths = save_takes(result, out_dir, args.name, args.format)
    for index, (path, seed) in enumerate(zip(paths, result.seeds)):
        print(f"take {index + 1}: seed {seed} -> {path}")
    if blueprint is not None and args.save_blueprint:
        print(f"plan -> {save_plan(blueprint, out_dir, args.name)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `acestep` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return run_generate(args)
    except AceStepError as error:
        message = " ".join(str(error).split())
        print(f"acestep: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("acestep: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main())
