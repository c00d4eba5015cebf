"""``compeft registry ...`` and ``compeft db ...`` (dispatched lazily from compeft.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from compeft.cliargs import Parser, add_config_arguments, config_from_args
from storage.errors import RegistryError
from storage.registry.records import ArtifactQuery, SimilarQuery


def _database_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: $COMPEFT_DATABASE_URL, else SQLite in $COMPEFT_HOME or ~/.compeft)",
    )


def _registry_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="compeft registry", description="Query the compressed-artifact registry.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,show,census,similar,sign,serve}",
                                parser_class=Parser)
    listing = sub.add_parser("list", help="list artifacts (newest first)")
    listing.set_defaults(query_fields=add_config_arguments(listing, ArtifactQuery))
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _database_arg(listing)
    show = sub.add_parser("show", help="show one artifact with its adapter, calibrations and publications")
    show.add_argument("id", type=int, help="artifact id (from 'registry list')")
    show.add_argument("--json", action="store_true", help="print JSON")
    _database_arg(show)
    census = sub.add_parser("census", help="what the registry records: adapters by family, layout, dtype and base "
                            "model, bytes before and after, skip reasons of each source's latest run")
    census.add_argument("--json", action="store_true", help="print JSON")
    _database_arg(census)
    similar = sub.add_parser("similar", help="neighbours of an artifact among those of its layout and base model")
    similar.add_argument("id", type=int, help="artifact id (from 'registry list')")
    similar.set_defaults(query_fields=add_config_arguments(similar, SimilarQuery))
    _operation_args(similar)
    similar.add_argument("--json", action="store_true", help="print JSON")
    sign = sub.add_parser("sign", help="sign artifacts registered before signatures existed (for 'similar')")
    _operation_args(sign)
    serve = sub.add_parser("serve", help="serve the read-only HTTP API (OpenAPI docs at /docs)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    _database_arg(serve)
    return parser


def _operation_args(parser: argparse.ArgumentParser) -> None:
    _database_arg(parser)
    parser.add_argument("--store", default=None, help="artifact store (default: COMPEFT_STORE, else COMPEFT_HOME/artifacts)")
    parser.add_argument("--device", default="cpu", help="where the exact comparisons run: cpu, cuda, cuda:N, auto")


def _similar(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from compeft.config import check_device
    from storage import operations
    from storage.config import ServiceConfig
    from storage.registry import open_registry

    store = ServiceConfig(store=args.store).artifact_store()
    device = check_device(args.device)
    with tempfile.TemporaryDirectory(prefix="compeft-similar-") as work, open_registry(args.database_url) as registry:
        if args.command == "sign":
            rows = registry.unsigned_artifacts()
            for row in rows:
                operations.sign_stored(registry, store, row, Path(work), device)
            print(f"signed {len(rows)} artifact(s)")
            return 0
        query = config_from_args(SimilarQuery, args, args.query_fields)
        neighbours = operations.similar(registry, store, args.id, query, Path(work), device)
    if args.json:
        json.dump({"artifact_id": args.id, "neighbours": [n.to_dict() for n in neighbours]}, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'ID':>6}  {'COSINE':>8}  {'SKETCH':>7}  SOURCE")
    for n in neighbours:
        print(f"{n.artifact_id:>6}  {n.cosine:>8.4f}  {n.estimate:>7.3f}  {n.adapter_uri or '-'}")
    print(f"({len(neighbours)} neighbour(s) of artifact {args.id})")
    return 0


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _print_table(rows: list[dict[str, Any]], total: int) -> None:
    columns = [("id", "ID"), ("peft_type", "TYPE"), ("base_model", "BASE MODEL"), ("codec", "CODEC"),
               ("density", "DENSITY"), ("alpha", "ALPHA"), ("ratio", "RATIO"), ("bytes", "BYTES"),
               ("adapter_uri", "SOURCE")]
    cells = [[_fmt(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells]) for i, (_, title) in enumerate(columns)]
    print("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths, strict=True)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    print(f"({len(rows)} of {total} artifacts)")


def _print_detail(data: dict[str, Any]) -> None:
    adapter = data["adapter"]
    lines = [
        f"artifact {data['id']}  sha256 {data['sha256']}",
        f"  source      {adapter['uri']}  (revision {adapter['revision'] or '-'})",
        (
            f"  adapter     {adapter['peft_type'] or '-'} on {adapter['base_model'] or '-'}, "
            f"rank {_fmt(adapter['rank'])}, {_fmt(adapter['parameter_count'])} params, {_fmt(adapter['bytes'])} bytes"
        ),
        (
            f"  options     codec={data['codec']} density={_fmt(data['density'])} alpha={_fmt(data['alpha'])} "
            f"sigma={_fmt(data['sigma'])}"
        ),
        (
            f"  size        {data['bytes']} bytes (from {_fmt(data['bytes_source'])}), ratio {_fmt(data['ratio'])}, "
            f"{_fmt(data['bits_per_param'])} bits/param"
        ),
        f"  stored at   {data['storage_uri'] or '-'}",
        f"  made by     compeft {data['package_version']} at {data['created_at']}",
    ]
    for cal in data["calibrations"]:
        lines.append(
            f"  calibration {cal['task']}/{cal['metric']}: chose density={_fmt(cal['chosen_density'])} "
            f"alpha={_fmt(cal['chosen_alpha'])} score={_fmt(cal['chosen_score'])} "
            f"(original {_fmt(cal['original_score'])}, {len(cal['scores'])} points)"
        )
    for pub in data["publications"]:
        lines.append(f"  published   {pub['uri']} at {pub['published_at']}")
    print("\n".join(lines))


def registry_main(argv: list[str]) -> int:
    """Entry point for ``compeft registry``; returns the exit code."""
    args = _registry_parser().parse_args(argv)
    from storage.registry import open_registry

    if args.command == "list":
        query = config_from_args(ArtifactQuery, args, args.query_fields)
        with open_registry(args.database_url) as registry:
            items, total = registry.list_artifacts(query)
        rows = [i.to_dict() for i in items]
        if args.json:
            json.dump({"items": rows, "total": total, "limit": query.limit, "offset": query.offset}, sys.stdout, indent=2)
            print()
        else:
            _print_table(rows, total)
        return 0
    if args.command == "show":
        with open_registry(args.database_url) as registry:
            data = registry.get_artifact(args.id).to_dict()
        if args.json:
            json.dump(data, sys.stdout, indent=2)
            print()
        else:
            _print_detail(data)
        return 0
    if args.command == "census":
        from storage.census import registry_census

        with open_registry(args.database_url) as registry:
            census = registry_census(registry)
        if args.json:
            json.dump(census.to_dict(), sys.stdout, indent=2)
            print()
        else:
            print(census.text())
        return 0
    if args.command in ("similar", "sign"):
        return _similar(args)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from storage.api import create_app
    from storage.registry import open_registry

    registry = open_registry(args.database_url)
    try:
        uvicorn.run(create_app(registry), host=args.host, port=args.port, log_level="info")
    finally:
        registry.close()
    return 0


def db_main(argv: list[str]) -> int:
    """Entry point for ``compeft db``: ``upgrade`` applies the registry migrations."""
    parser = Parser(prog="compeft db", description="Registry database maintenance.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{upgrade,current}", parser_class=Parser)
    upgrade = sub.add_parser("upgrade", help="apply pending migrations (creates the schema)")
    _database_arg(upgrade)
    current = sub.add_parser("current", help="print the applied and newest migration")
    _database_arg(current)
    args = parser.parse_args(argv)
    from storage.registry import db
    from storage.registry.repository import Registry

    url = db.resolve_database_url(args.database_url)
    engine = db.make_engine(url)
    try:
        if args.command == "upgrade":
            Registry(engine).upgrade()
            print(f"{db.redact_url(url)}: at migration {db.current_revision(engine)} (head)")
        else:
            print(f"{db.redact_url(url)}: at migration {db.current_revision(engine) or 'none'}, newest {db.head_revision()}")
    except Exception as err:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(err, SQLAlchemyError):
            raise RegistryError(f"{db.redact_url(url)}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
        raise
    finally:
        engine.dispose()
    return 0
