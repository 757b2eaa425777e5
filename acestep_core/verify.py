"""`python -m acestep_core.verify --golden DIR`: check our code against a folder of official golden tensors.

Prints one line per output tensor (case, name, max abs error, relative L2 error, verdict), then
`N passed, M failed`. Exits 1 when any output misses the tolerance or any case cannot be run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from acestep_core.parity import FLOAT_MAX_ABS, FLOAT_REL_L2, UnsupportedCase, check_case, load_cases


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m acestep_core.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--golden", required=True, type=Path, help="folder holding index.json and the case files")
    parser.add_argument("--case", default="", help="only cases whose file path contains this text")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the golden files were made with 1; default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not (args.golden / "index.json").is_file():
        print(f"error: {args.golden} has no index.json (expected a golden folder)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cases = [c for c in load_cases(args.golden) if args.case in c.file]
    print(f"tolerance: floats rel L2 <= {FLOAT_REL_L2:g} and max abs <= {FLOAT_MAX_ABS:g}; integers exact")
    passed = failed = 0
    for case in cases:
        try:
            results = check_case(case)
        except UnsupportedCase as reason:
            print(f"{case.file}  -  FAIL  {reason}")
            failed += 1
            continue
        except Exception as error:  # a case that crashes is reported and counted, never hidden
            print(f"{case.file}  -  FAIL  could not run: {type(error).__name__}: {error}")
            failed += 1
            continue
        for result in results:
            verdict = "ok" if result.passed else "FAIL"
            note = f"  {result.note}" if result.note else ""
            print(f"{case.file}  {result.name}  max_abs={result.max_abs:.3e}  rel_l2={result.rel_l2:.3e}  "
                  f"{verdict}{note}")
            passed += result.passed
            failed += not result.passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
