"""``compeft calibrate SRC DST --base BASE --task TASK [...]``: argparse front end of ``calibrate``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from compeft.calibrate.search import (
    DEFAULT_DENSITIES,
    PAPER_ALPHAS,
    SEARCH_MODES,
    parse_floats,
)
from compeft.errors import OptionError


class _Parser(argparse.ArgumentParser):
    """argparse that raises OptionError (one line, exit 2 via the main CLI) instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise OptionError(f"{self.prog}: {message}")


def _csv(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="compeft calibrate",
        description="Choose ComPEFT's density k and scale α on a validation task with lm-eval, then write "
        "the artifact at the chosen point plus calibration.json and calibration.png.",
    )
    p.add_argument("src", metavar="SRC", help="PEFT adapter directory, or a full fine-tuned model directory")
    p.add_argument("dst", metavar="DST", help="artifact directory to write at the chosen point")
    p.add_argument("--base", required=True, metavar="BASE_DIR", help="base model directory (or a model id)")
    p.add_argument("--task", required=True, metavar="TASK", help="lm-eval task name or path to a task YAML (local data files)")
    p.add_argument("--densities", default=_csv(DEFAULT_DENSITIES), help="comma-separated densities k (default %(default)s)")
    p.add_argument("--alphas", default=_csv(PAPER_ALPHAS), help="comma-separated α grid (default %(default)s)")
    p.add_argument("--metric", default="acc", help="metric to maximise (default %(default)s)")
    p.add_argument("--limit", type=float, default=None, metavar="N", help="evaluate only N documents (or a fraction < 1)")
    p.add_argument("--tolerance", type=float, default=0.0, metavar="T",
                   help="choose the smallest artifact within T of the best score (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="lm-eval batch size (default %(default)s)")
    p.add_argument("--search", choices=SEARCH_MODES, default="refine",
                   help="refine: coarse α sweep then refine around the best (default); grid: every point")
    p.add_argument("--seed", type=int, default=1234, help="seed for lm-eval sampling (default %(default)s)")
    p.add_argument("--codec", default="golomb", help="codec of the artifact (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--quiet", action="store_true", help="no per-point progress lines on stderr")
    return p


def calibrate_main(argv: list[str]) -> int:
    """Parse argv (without the word 'calibrate'), run the calibration, print a summary line; 0 on success."""
    args = build_parser().parse_args(argv)
    # lm-eval and datasets draw progress bars for every evaluation; the per-point log lines replace
    # them (tqdm reads TQDM_DISABLE when it is imported, so this precedes the heavy imports)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from compeft.calibrate.sweep import calibrate

    if not args.quiet:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("compeft.calibrate").setLevel(logging.INFO)
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    result = calibrate(
        args.src, args.dst, base=args.base, task=args.task,
        densities=parse_floats(args.densities, "--densities", low=0.0, high=1.0),
        alphas=parse_floats(args.alphas, "--alphas", low=0.0, high=float("inf")),
        metric=args.metric, limit=limit, tolerance=args.tolerance, device=args.device,
        batch_size=args.batch_size, search=args.search, seed=args.seed, codec=args.codec, overwrite=args.overwrite,
    )
    c, ref = result.chosen, result.reference
    summary = {
        "dst": result.dst, "density": c.density, "alpha": c.alpha, result.metric: c.score,
        "original": ref.value, "bytes": (result.artifact or {}).get("bytes_artifact", c.bytes),
        "points": len(result.points), "seconds": round(result.timings.total, 2) if result.timings else None,
    }
    print(json.dumps(summary), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(calibrate_main(sys.argv[1:]))
