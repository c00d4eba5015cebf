"""``compeft catalog``: run the compress_catalog flow in this process and print the registry table.

Without PREFECT_API_URL the flow runs against Prefect's ephemeral API (no server to start); with it,
the run is tracked by that server and ``--dispatch deployment`` sends batches to the gpu work pool.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from compeft.errors import CompeftError, InputError, OptionError

DATABASE_URL_ENV = "COMPEFT_DATABASE_URL"


class UsageError(InputError):
    """Bad command-line usage (exit code 2)."""


class CatalogFailures(CompeftError):
    """Some adapters of the catalog failed (each with its reason in the table)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> Parser:
    p = Parser(prog="compeft catalog", description="Compress every adapter of a catalog (local tree, s3:// prefix "
               "or hf:// query), register, store and publish the artifacts, and print the registry table.")
    p.add_argument("source", help="local directory tree, s3://BUCKET/PREFIX, hf://AUTHOR, hf://AUTHOR/REPO[@REV] "
                   "or hf://?search=...&author=...&filter=...&base_model=...&limit=N")
    p.add_argument("--density", type=float, default=0.1, help="fraction k of entries kept (default 0.1)")
    p.add_argument("--alpha", type=float, default=None, help="scale α when not calibrating (default 1.0)")
    p.add_argument("--codec", default="golomb", help="golomb (default) or bitmask")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--task", action="append", default=[], metavar="[ADAPTER=]TASK",
                   help="calibrate α on this lm-eval task (name or YAML path); ADAPTER=TASK for one adapter "
                        "(repeatable)")
    p.add_argument("--base", default=None, help="base model directory or Hub id for calibration "
                   "(default: each adapter's own base_model_name_or_path)")
    p.add_argument("--densities", type=_floats, default=None, help="calibration densities, e.g. 0.05,0.1,0.2")
    p.add_argument("--alphas", type=_floats, default=None, help="calibration α grid, e.g. 0.5,1,2,4,8")
    p.add_argument("--metric", default="acc", help="metric to maximise (default acc)")
    p.add_argument("--limit", type=int, default=None, help="validation examples per evaluation")
    p.add_argument("--tolerance", type=float, default=0.0, help="smallest artifact within T of the best score")
    p.add_argument("--search", choices=("refine", "grid"), default="refine", help="calibration search")
    p.add_argument("--publish-to", default=None, metavar="DEST", help="also publish to hf://ORG, s3://BUCKET/PREFIX or a path")
    p.add_argument("--store", default=None, metavar="URI", help="artifact store (default COMPEFT_STORE or COMPEFT_HOME/artifacts)")
    p.add_argument("--database-url", default=None, metavar="URL", help="registry database (default COMPEFT_DATABASE_URL "
                   "or SQLite in COMPEFT_HOME)")
    p.add_argument("--s3-endpoint", default=None, metavar="URL", help="S3 endpoint (default AWS_ENDPOINT_URL)")
    p.add_argument("--hf-endpoint", default=None, metavar="URL", help="Hub endpoint (default HF_ENDPOINT)")
    p.add_argument("--force", action="store_true", help="compress again even when the registry has the artifact")
    p.add_argument("--batch-size", type=int, default=8, help="adapters per batch sharing one base model load")
    p.add_argument("--dispatch", choices=("inline", "deployment"), default="inline",
                   help="inline (default): here, one batch after another; deployment: submit batches to the "
                        "gpu work pool of the server in PREFECT_API_URL")
    p.add_argument("--json", action="store_true", help="print the run's outcomes as JSON")
    p.add_argument("--verbose", action="store_true", help="also log every task run")
    return p


def build_params(args: argparse.Namespace) -> dict[str, Any]:
    """Flow parameters from the arguments, validated before Prefect starts (one-line errors)."""
    from pydantic import ValidationError

    from flows.params import CompressionOptions, ServiceConfig
    from storage.addresses import parse_address

    tasks: dict[str, str] = {}
    task: str | None = None
    for entry in args.task:
        name, sep, value = entry.partition("=")
        if sep and name and "/" not in name and not name.endswith((".yaml", ".yml")):
            tasks[name] = value
        elif task is None:
            task = entry
        else:
            raise UsageError("compeft catalog: --task TASK given twice (use ADAPTER=TASK for per-adapter tasks)")
    if task is not None and args.alpha is not None:
        raise UsageError("compeft catalog: --alpha and a catalog-wide --task exclude each other (calibration chooses α)")
    parse_address(args.source, s3_endpoint=args.s3_endpoint, hf_endpoint=args.hf_endpoint)
    if args.publish_to:
        parse_address(args.publish_to, s3_endpoint=args.s3_endpoint, hf_endpoint=args.hf_endpoint)
    if args.batch_size < 1:
        raise OptionError(f"--batch-size {args.batch_size} must be >= 1")
    values: dict[str, Any] = {
        "density": args.density, "alpha": 1.0 if args.alpha is None else args.alpha, "codec": args.codec,
        "device": args.device, "task": task, "tasks": tasks, "base": args.base, "metric": args.metric,
        "limit": args.limit, "tolerance": args.tolerance, "search": args.search,
    }
    if args.densities is not None:
        values["densities"] = args.densities
    if args.alphas is not None:
        values["alphas"] = args.alphas
    try:
        options = CompressionOptions(**values)
    except ValidationError as err:
        first = err.errors()[0]
        raise OptionError(f"--{'-'.join(str(x) for x in first['loc'])}: {first['msg']}") from None
    from compeft.codecs import get_codec

    get_codec(options.codec)
    service = ServiceConfig(store=args.store, publish_to=args.publish_to, s3_endpoint=args.s3_endpoint,
                            hf_endpoint=args.hf_endpoint)  # --database-url travels in the environment (passwords)
    return {"source": args.source, "options": options, "service": service, "force": args.force,
            "batch_size": args.batch_size, "dispatch": args.dispatch}


def _cell(value: Any, fmt: str = "") -> str:
    if value is None or value == "":
        return "-"
    return format(value, fmt) if fmt else str(value)


def format_table(outcomes: list[dict[str, Any]]) -> str:
    """The run's outcomes as a fixed-width text table."""
    header = ("id", "adapter", "status", "bytes before → after", "ratio", "bits/param", "k", "alpha",
              "score orig → comp", "link / reason")
    rows = [header]
    for o in outcomes:
        size = f"{o['bytes_source']:,} → {o['bytes_artifact']:,}" if o.get("bytes_artifact") is not None else "-"
        scores = (f"{_cell(o.get('score_original'), '.3f')} → {_cell(o.get('score_compressed'), '.3f')}"
                  if o.get("score_compressed") is not None else "-")
        rows.append((
            _cell(o.get("artifact_id")), o["name"], o["status"], size, _cell(o.get("ratio"), ".1f"),
            _cell(o.get("bits_per_param"), ".3f"), _cell(o.get("density"), "g"), _cell(o.get("alpha"), "g"),
            scores, o.get("reason") or o.get("published_uri") or o.get("storage_uri") or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def catalog_main(argv: list[str]) -> int:
    """Entry point of ``compeft catalog`` (argv without the word 'catalog')."""
    args = build_parser().parse_args(argv)
    if not args.verbose:  # lm-eval's per-evaluation progress bars; tqdm reads this when first imported
        os.environ.setdefault("TQDM_DISABLE", "1")
    params = build_params(args)
    from flows.settings import configure_prefect_env

    configure_prefect_env()
    from flows.catalog import compress_catalog

    if not args.verbose:  # flow-run lines (progress, per-adapter results) stay; per-task lines go
        logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
    saved = os.environ.get(DATABASE_URL_ENV)
    if args.database_url:
        os.environ[DATABASE_URL_ENV] = args.database_url
    try:
        result = compress_catalog(**params)
    finally:
        if args.database_url:
            if saved is None:
                os.environ.pop(DATABASE_URL_ENV, None)
            else:
                os.environ[DATABASE_URL_ENV] = saved
    outcomes = result["outcomes"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(outcomes))
        counts = result["counts"]
        print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"  (run {result['run_id']})")
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        raise CatalogFailures(f"{len(failed)} adapter(s) failed: " + "; ".join(f"{o['name']}: {o['reason']}" for o in failed[:3]))
    return 0


def main() -> int:  # python -m flows.cli
    from compeft.cli import main as compeft_main

    return compeft_main(["catalog", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
