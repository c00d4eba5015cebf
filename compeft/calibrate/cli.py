"""``compeft calibrate SRC DST --base BASE --task TASK [...]``: argparse front end of ``calibrate``."""

from __future__ import annotations

import json
import logging
import os
import sys

from compeft.cliargs import Parser, add_config_arguments, config_from_args
from compeft.config import CalibrationConfig


def build_parser() -> Parser:
    p = Parser(
        prog="compeft calibrate",
        description="Choose ComPEFT's density k and scale α on a validation task with lm-eval, then write "
        "the artifact at the chosen point plus calibration.json and calibration.png.",
    )
    p.add_argument("src", metavar="SRC", help="PEFT adapter directory, or a full fine-tuned model directory")
    p.add_argument("dst", metavar="DST", help="artifact directory to write at the chosen point")
    p.set_defaults(config_fields=add_config_arguments(p, CalibrationConfig, required=("base",)))
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--quiet", action="store_true", help="no per-point progress lines on stderr")
    return p


def calibrate_main(argv: list[str]) -> int:
    """Parse argv (without the word 'calibrate'), run the calibration, print a summary line; 0 on success."""
    args = build_parser().parse_args(argv)
    config = config_from_args(CalibrationConfig, args, args.config_fields)  # bad options fail before the heavy imports
    # lm-eval and datasets draw progress bars for every evaluation; the per-point log lines replace
    # them (tqdm reads TQDM_DISABLE when it is imported, so this precedes the heavy imports)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from compeft.calibrate.sweep import calibrate

    if not args.quiet:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("compeft.calibrate").setLevel(logging.INFO)
    result = calibrate(args.src, args.dst, config, overwrite=args.overwrite)
    c, ref = result.chosen, result.reference
    summary = {
        "dst": result.dst, "density": c.density, "alpha": c.alpha, result.metric: c.score,
        "original": ref.value, "bytes": result.artifact.bytes_artifact if result.artifact else c.bytes,
        "points": len(result.points), "seconds": round(result.timings.total, 2) if result.timings else None,
    }
    print(json.dumps(summary), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(calibrate_main(sys.argv[1:]))
