"""The planner part of `acestep generate`: `--lm` plans each take with the 5 Hz LM before the DiT runs,
`--blueprint` replays a saved plan.

Kept apart from `cli.py` so the plain DiT path never imports transformers' LM classes. The plan is made
for text2music only: the official pipeline skips the LM for the source tasks (their structure comes from
the recording), and a plan's codes would replace a lego/complete source.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any, Callable, Optional

from acestep_core.errors import AceStepError

PLAN_TASKS = ("text2music",)


def add_planner_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LM planner (text2music)")
    g.add_argument("--lm", metavar="NAME",
                   help="plan with the 5 Hz LM first: acestep-5Hz-lm-0.6B, -1.7B, -4B (folder under --models-dir) "
                        "or a path; it fills the metadata left unset and writes the audio codes the DiT follows")
    g.add_argument("--no-codes", action="store_true",
                   help="with --lm: plan metadata and caption only, no audio codes")
    g.add_argument("--lm-temperature", type=float, default=0.85, help="LM sampling temperature (official 0.85)")
    g.add_argument("--lm-cfg", type=float, default=2.0, help="LM guidance for the codes (official 2.0)")
    g.add_argument("--lm-max-text-tokens", type=int,
                   help="cap on the LM's metadata/caption text (default: the official 3500)")
    g.add_argument("--blueprint", metavar="FILE", help="make the songs of a saved plan (JSON) instead of planning")
    g.add_argument("--save-blueprint", action="store_true",
                   help="also write the plan as <name>_plan.json in --out (never overwriting)")


def _check_task(args: argparse.Namespace, option: str) -> None:
    if args.task not in PLAN_TASKS:
        raise AceStepError(f"{option} plans text2music songs, but --task is {args.task}; the source tasks take "
                           "their structure from the recording. Drop the option or use --task text2music.")


def _load_lm(args: argparse.Namespace, device: Any, dtype: str) -> Any:
    from acestep_core.pipeline_models import model_path
    from acestep_core.planner import load_planner

    path = model_path(args.lm, args.models_dir, args.download)
    return load_planner(path, dtype, device)


def make_blueprint(args: argparse.Namespace, request: Any, device: Any, dtype: str,
                   progress: Optional[Callable[[str, int, int], None]] = None) -> Optional[Any]:
    """The plan the arguments ask for (None without --lm and --blueprint); its batch is the request's."""
    from acestep_core.planner import PlannerSettings, PlanRequest, load_blueprint, plan_song

    if args.lm and args.blueprint:
        raise AceStepError("Give either --lm (make a new plan) or --blueprint (reuse one), not both.")
    if args.blueprint:
        _check_task(args, "--blueprint")
        blueprint = load_blueprint(Path(args.blueprint).expanduser())
        if blueprint.batch_size != request.batch_size and args.batch != 1:
            raise AceStepError(f"--batch is {args.batch} but the blueprint holds {blueprint.batch_size} plans; "
                               "leave --batch out to make every plan.")
        return blueprint
    if not args.lm:
        return None
    _check_task(args, "--lm")
    settings = PlannerSettings(temperature=args.lm_temperature, cfg_scale=args.lm_cfg,
                               max_text_tokens=args.lm_max_text_tokens)
    plan = PlanRequest(caption=request.caption, lyrics=request.lyrics, bpm=request.bpm, keyscale=request.keyscale,
                       timesignature=request.timesignature, duration=request.duration, language=request.language,
                       write_codes=not args.no_codes, batch_size=request.batch_size, seeds=request.seeds)
    planner = _load_lm(args, device, dtype)
    return plan_song(planner, plan, settings, rng=random.Random(), progress=progress)


def generate_planned(request: Any, blueprint: Any, models: Any, progress: Any) -> Any:
    """Songs from a blueprint: each take with its own plan's text, metadata, codes and seed."""
    from acestep_core.planner.handoff import blueprint_request, generate_blueprint

    return generate_blueprint(blueprint_request(request, blueprint), blueprint, models, progress)


def save_plan(blueprint: Any, out_dir: Path, name: str) -> Path:
    from acestep_core.audio import unique_path
    from acestep_core.planner import save_blueprint

    out_dir.mkdir(parents=True, exist_ok=True)
    return save_blueprint(blueprint, unique_path(out_dir / f"{name}_plan.json"))
