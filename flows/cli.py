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
from pathlib import Path
from typing import Any

from compeft.cliargs import Parser, UsageError, add_config_arguments, config_from_args
from compeft.config import CalibrationConfig, CompressionConfig
from compeft.errors import CompeftError, OptionError
from flows.params import CALIBRATION_SKIPPED, CompressionOptions, ServiceParameters
from storage.config import ServiceConfig
from storage.registry.db import DATABASE_URL_ENV


class CatalogFailures(CompeftError):
    """Some adapters of the catalog failed (each with its reason in the table)."""


def build_parser() -> Parser:
    p = Parser(prog="compeft catalog", description="Compress every adapter of a catalog (local tree, s3:// prefix "
               "or hf:// query), register, store and publish the artifacts, and print the registry table.")
    p.add_argument("source", help="local directory tree, s3://BUCKET/PREFIX, hf://AUTHOR, hf://AUTHOR/REPO[@REV][/SUB/DIR] "
                   "or hf://?search=...&author=...&filter=...&base_model=...&limit=N")
    compression = add_config_arguments(p, CompressionConfig, defaults={"alpha": None})
    p.add_argument("--task", action="append", default=[], metavar="[ADAPTER=]TASK",
                   help="calibrate α on this lm-eval task (name or YAML path); ADAPTER=TASK for one adapter (REPO or "
                        "REPO/SUBFOLDER, as the run names it) "
                        "(repeatable)")
    calibration = add_config_arguments(p, CalibrationConfig, skip=CALIBRATION_SKIPPED)
    p.add_argument("--base-for", action="append", default=[], metavar="NAME=BASE",
                   help="the base model (directory or Hub id) of the full fine-tune NAME, over what its card or "
                        "config names (repeatable)")
    service = add_config_arguments(p, ServiceConfig, skip=("database_url",))
    p.add_argument("--database-url", default=None, metavar="URL", help="registry database (default COMPEFT_DATABASE_URL "
                   "or SQLite in COMPEFT_HOME)")
    p.add_argument("--force", action="store_true", help="compress again even when the registry has the artifact")
    p.add_argument("--batch-size", type=int, default=8, help="adapters per GPU flow run with --dispatch deployment "
                   "(inline runs go through each base model's adapters in one pass, loading it once)")
    p.add_argument("--dispatch", choices=("inline", "deployment"), default="inline",
                   help="inline (default): here, one batch after another; deployment: submit batches to the "
                        "gpu work pool of the server in PREFECT_API_URL")
    p.add_argument("--dry-run", action="store_true", help="only list what the source holds and print its census "
                   "(reads listings, small configs and weights headers by range, never weights; compresses and records "
                   "nothing)")
    p.add_argument("--json", action="store_true", help="print the run's outcomes as JSON")
    p.add_argument("--verbose", action="store_true", help="also log every task run")
    p.set_defaults(compression_fields=compression, calibration_fields=calibration, service_fields=service)
    return p


def build_params(args: argparse.Namespace) -> dict[str, Any]:
    """Flow parameters from the arguments, validated before Prefect starts (one-line errors)."""
    from pydantic import ValidationError

    from storage.addresses import parse_address

    tasks: dict[str, str] = {}
    task: str | None = None
    for entry in args.task:
        name, sep, value = entry.partition("=")
        # ADAPTER=TASK (ADAPTER as runs name it: REPO or REPO/SUBFOLDER), unless the whole entry is a task path
        if sep and name and not name.endswith((".yaml", ".yml")) and not Path(entry).exists():
            tasks[name] = value
        elif task is None:
            task = entry
        else:
            raise UsageError("compeft catalog: --task TASK given twice (use ADAPTER=TASK for per-adapter tasks)")
    if task is not None and args.alpha is not None:
        raise UsageError("compeft catalog: --alpha and a catalog-wide --task exclude each other (calibration chooses α)")
    base_for: dict[str, str] = {}
    for entry in args.base_for:
        name, sep, base = entry.partition("=")
        if not (sep and name and base):
            raise UsageError(f"compeft catalog: --base-for {entry!r} must be NAME=BASE")
        base_for[name] = base
    parse_address(args.source, s3_endpoint=args.s3_endpoint, hf_endpoint=args.hf_endpoint)
    if args.publish_to:
        parse_address(args.publish_to, s3_endpoint=args.s3_endpoint, hf_endpoint=args.hf_endpoint)
    if args.batch_size < 1:
        raise OptionError(f"--batch-size {args.batch_size} must be >= 1")
    compression = config_from_args(CompressionConfig, args, args.compression_fields)
    values = {n: getattr(args, n) for n in args.calibration_fields if getattr(args, n) is not None}
    if task is not None or tasks:
        config_from_args(CalibrationConfig, args, args.calibration_fields, task=task or next(iter(tasks.values())))
    try:
        options = CompressionOptions(**compression.to_json(), task=task, tasks=tasks, base_for=base_for, **values)
    except ValidationError as err:
        first = err.errors()[0]
        raise OptionError(f"--{'-'.join(str(x) for x in first['loc'])}: {first['msg']}") from None
    service = ServiceParameters(**{n: getattr(args, n) for n in args.service_fields})  # --database-url: environment
    service.config().check_publish_to([args.source])
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
            scores, (f"near-duplicate of #{o['duplicate_of']} (cosine {o['duplicate_cosine']:.3f}); "
                     if o.get("duplicate_of") is not None else "")
            + (o.get("reason") or o.get("published_uri") or o.get("storage_uri") or "-"),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def dry_run(source: str, service: ServiceConfig, as_json: bool) -> int:
    """``compeft catalog SOURCE --dry-run``: the adapters a source holds, its skips and its census; no Prefect,
    no registry, no weights."""
    from storage.catalog import crawl
    from storage.census import item_of_ref, source_census

    refs, skipped = crawl(service.source(source))
    census = source_census(refs, skipped)
    if as_json:
        print(json.dumps({"source": source, "adapters": [{"uri": r.uri, "name": r.name, "subfolder": r.subfolder,
                                                          **vars(item_of_ref(r))} for r in refs],
                          "skipped": [{"uri": s.uri, "reason": s.reason} for s in skipped],
                          "census": census.to_dict()}, indent=2))
        return 0
    rows = [("adapter", "family", "layout", "dtype", "base model", "bytes", "uri")]
    for ref in refs:
        item = item_of_ref(ref)
        rows.append((ref.name, item.family, item.layout, item.dtype, item.base_model, f"{item.bytes_before:,}", ref.uri))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows))
    for s in skipped:
        print(f"skipped {s.uri}: {s.reason}")
    print()
    print(census.text())
    return 0


def catalog_main(argv: list[str]) -> int:
    """Entry point of ``compeft catalog`` (argv without the word 'catalog')."""
    args = build_parser().parse_args(argv)
    if not args.verbose:  # lm-eval's per-evaluation progress bars; tqdm reads this when first imported
        os.environ.setdefault("TQDM_DISABLE", "1")
    params = build_params(args)
    if args.dry_run:
        return dry_run(args.source, params["service"].config(), args.json)
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
