"""The registry: idempotent get-or-create writes and filtered reads over the schema tables.

Writes use INSERT ... ON CONFLICT DO NOTHING followed by a SELECT on the unique key, so any
number of concurrent workers (processes or threads) converge on one row per key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from storage.errors import NotFoundError, RegistryError
from storage.registry import db
from storage.registry.records import (
    MAX_ROW,
    AdapterRecord,
    AdapterRow,
    ArtifactDetail,
    ArtifactQuery,
    ArtifactRecord,
    ArtifactRow,
    ArtifactSummary,
    CalibrationRecord,
    CalibrationRow,
    OperationInput,
    OperationRecord,
    OperationRow,
    PublicationRow,
    RunRow,
    SignatureRecord,
    SignatureRow,
    SourceRow,
    from_mapping,
)
from storage.registry.schema import (
    adapters,
    artifacts,
    calibrations,
    operation_inputs,
    operations,
    publications,
    runs,
    signatures,
    sources,
)

RUN_STATUSES = ("running", "completed", "failed", "cancelled")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Registry:
    """Repository over one registry database (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- lifecycle -----------------------------------------------------------------------------
    def upgrade(self) -> None:
        """Apply pending migrations."""
        db.upgrade(self.engine)

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Registry:  # noqa: PYI034 - Registry is not meant to be subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------------
    def _insert(self, table):
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise RegistryError(f"unsupported database dialect {self.engine.dialect.name!r} (use SQLite or PostgreSQL)")
        return insert(table)

    def _get_or_create(self, conn: Connection, table, key: Mapping[str, Any], values: Mapping[str, Any]):
        """Insert ``values`` unless a row with ``key`` exists; return (row mapping, created)."""
        stmt = self._insert(table).values(**values).on_conflict_do_nothing(index_elements=list(key))
        created = conn.execute(stmt).rowcount == 1
        where = [table.c[name] == value for name, value in key.items()]
        row = conn.execute(select(table).where(*where)).mappings().one()
        return row, created

    def _write(self, what: str, fn):
        try:
            with self.engine.begin() as conn:
                return fn(conn)
        except SQLAlchemyError as err:
            raise RegistryError(f"registry write ({what}) failed: {type(err).__name__}: {_first_line(err)}") from err

    def _read(self, what: str, fn):
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except SQLAlchemyError as err:
            raise RegistryError(f"registry read ({what}) failed: {type(err).__name__}: {_first_line(err)}") from err

    # -- writes --------------------------------------------------------------------------------
    def get_or_create_source(self, uri: str, kind: str) -> SourceRow:
        """The source row for ``uri`` (kind: local, s3, hf), created on first use."""
        def run(conn):
            row, _ = self._get_or_create(conn, sources, {"uri": uri}, {"uri": uri, "kind": kind, "created_at": _now()})
            return from_mapping(SourceRow, row)

        return self._write(f"source {uri}", run)

    def get_or_create_adapter(self, record: AdapterRecord, source_id: int | None = None) -> AdapterRow:
        """The adapter row for (uri, content_sha256), created on first sight."""
        values = record.to_dict()
        values["target_modules"] = list(record.target_modules) if record.target_modules is not None else None
        values.update(source_id=source_id, created_at=_now())
        key = {"uri": record.uri, "content_sha256": record.content_sha256}

        def run(conn):
            row, _ = self._get_or_create(conn, adapters, key, values)
            return from_mapping(AdapterRow, row)

        return self._write(f"adapter {record.uri}", run)

    def find_adapter_content(self, uri: str, revision: str) -> str | None:
        """Content sha256 of the newest adapter registered at this URI and revision, if any."""
        def run(conn):
            query = (select(adapters.c.content_sha256)
                     .where(adapters.c.uri == uri, adapters.c.revision == revision)
                     .order_by(adapters.c.id.desc()).limit(1))
            return conn.execute(query).scalar_one_or_none()

        return self._read("find adapter", run)

    def find_artifact(self, source_sha256: str, options_hash: str) -> ArtifactRow | None:
        """The artifact already made from this content with these options, if any."""
        def run(conn):
            row = conn.execute(
                select(artifacts).where(artifacts.c.source_sha256 == source_sha256, artifacts.c.options_hash == options_hash)
            ).mappings().first()
            return from_mapping(ArtifactRow, row) if row else None

        return self._read("find artifact", run)

    def get_or_create_artifact(self, adapter_id: int, record: ArtifactRecord) -> tuple[ArtifactRow, bool]:
        """Register an artifact; if (source_sha256, options_hash) exists return that row and False."""
        values = record.to_dict()
        values.update(adapter_id=adapter_id, created_at=_now())
        key = {"source_sha256": record.source_sha256, "options_hash": record.options_hash}

        def run(conn):
            row, created = self._get_or_create(conn, artifacts, key, values)
            return from_mapping(ArtifactRow, row), created

        return self._write(f"artifact {record.sha256}", run)

    def add_calibration(self, artifact_id: int, record: CalibrationRecord) -> CalibrationRow:
        """Store one calibration sweep for an artifact."""
        values = record.to_dict()
        values.update(artifact_id=artifact_id, scores=list(values["scores"]), created_at=_now())

        def run(conn):
            new_id = conn.execute(calibrations.insert().values(**values)).inserted_primary_key[0]
            row = conn.execute(select(calibrations).where(calibrations.c.id == new_id)).mappings().one()
            return from_mapping(CalibrationRow, row)

        return self._write(f"calibration of artifact {artifact_id}", run)

    def get_or_create_publication(
        self, artifact_id: int, destination: str, uri: str, remote_revision: str | None
    ) -> tuple[PublicationRow, bool]:
        """Record that ``artifact_id`` is at ``destination`` (remote revision); idempotent. Rows of other artifacts
        at the same URI go in the same transaction: what they described was replaced there."""
        revision = remote_revision or ""
        key = {"artifact_id": artifact_id, "destination": destination, "remote_revision": revision}
        values = dict(key, uri=uri, published_at=_now())

        def run(conn):
            row, created = self._get_or_create(conn, publications, key, values)
            conn.execute(delete(publications).where(publications.c.destination == destination, publications.c.uri == uri,
                                                    publications.c.artifact_id != artifact_id))
            return from_mapping(PublicationRow, row), created

        return self._write(f"publication to {destination}", run)

    def start_run(self, flow_run_id: str, parameters: Mapping[str, Any]) -> RunRow:
        """Record a flow run as running (idempotent per flow_run_id, so retried flows keep one row)."""
        values = {
            "flow_run_id": flow_run_id,
            "parameters": dict(parameters),
            "status": "running",
            "counts": {},
            "errors": [],
            "started_at": _now(),
        }

        def run(conn):
            row, _ = self._get_or_create(conn, runs, {"flow_run_id": flow_run_id}, values)
            return from_mapping(RunRow, row)

        return self._write(f"run {flow_run_id}", run)

    def finish_run(
        self, flow_run_id: str, status: str, counts: Mapping[str, int], errors: Sequence[Any] = ()
    ) -> RunRow:
        """Set a run's final status, counts (e.g. found/compressed/skipped/failed) and error list."""
        if status not in RUN_STATUSES:
            raise RegistryError(f"run {flow_run_id}: unknown status {status!r} (expected one of {', '.join(RUN_STATUSES)})")

        def run(conn):
            result = conn.execute(
                update(runs)
                .where(runs.c.flow_run_id == flow_run_id)
                .values(status=status, counts=dict(counts), errors=list(errors), finished_at=_now())
            )
            if result.rowcount != 1:
                raise NotFoundError(f"run {flow_run_id!r} not found; call start_run first")
            row = conn.execute(select(runs).where(runs.c.flow_run_id == flow_run_id)).mappings().one()
            return from_mapping(RunRow, row)

        return self._write(f"run {flow_run_id}", run)

    # -- reads ---------------------------------------------------------------------------------
    def list_artifacts(self, query: ArtifactQuery | None = None, **filters: Any) -> tuple[list[ArtifactSummary], int]:
        """Artifacts matching the query (or its fields as keywords), newest first, with the total before paging."""
        query = query if query is not None else ArtifactQuery(**filters)
        base_model, peft_type, min_ratio, limit, offset = (
            query.base_model, query.peft_type, query.min_ratio, query.limit, query.offset)
        joined = artifacts.join(adapters, artifacts.c.adapter_id == adapters.c.id)
        where = []
        if base_model is not None:
            where.append(adapters.c.base_model == base_model)
        if peft_type is not None:
            where.append(func.upper(adapters.c.peft_type) == peft_type.upper())
        if min_ratio is not None:
            where.append(artifacts.c.ratio >= min_ratio)

        def run(conn):
            total = conn.execute(select(func.count()).select_from(joined).where(*where)).scalar_one()
            query = (
                select(artifacts, adapters.c.uri.label("adapter_uri"), adapters.c.base_model, adapters.c.peft_type)
                .select_from(joined)
                .where(*where)
                .order_by(artifacts.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
            items = [
                ArtifactSummary(
                    artifact=from_mapping(ArtifactRow, row),
                    adapter_uri=row["adapter_uri"],
                    base_model=row["base_model"],
                    peft_type=row["peft_type"],
                )
                for row in conn.execute(query).mappings()
            ]
            return items, total

        return self._read("list artifacts", run)

    def get_artifact(self, artifact_id: int) -> ArtifactDetail:
        """One artifact with its adapter, calibrations and publications; NotFoundError if absent."""
        if isinstance(artifact_id, bool) or not isinstance(artifact_id, int) or not 0 <= artifact_id <= MAX_ROW:
            raise NotFoundError(f"artifact {artifact_id!r} not found in the registry")

        def run(conn):
            row = conn.execute(select(artifacts).where(artifacts.c.id == artifact_id)).mappings().first()
            if row is None:
                raise NotFoundError(f"artifact {artifact_id} not found in the registry")
            adapter = conn.execute(select(adapters).where(adapters.c.id == row["adapter_id"])).mappings().one()
            cals = conn.execute(
                select(calibrations).where(calibrations.c.artifact_id == artifact_id).order_by(calibrations.c.id)
            ).mappings()
            pubs = conn.execute(
                select(publications).where(publications.c.artifact_id == artifact_id).order_by(publications.c.id)
            ).mappings()
            return ArtifactDetail(
                artifact=from_mapping(ArtifactRow, row),
                adapter=from_mapping(AdapterRow, adapter),
                calibrations=tuple(from_mapping(CalibrationRow, c) for c in cals),
                publications=tuple(from_mapping(PublicationRow, p) for p in pubs),
            )

        return self._read(f"artifact {artifact_id}", run)

    def find_work(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], ArtifactDetail]:
        """The artifacts made from these (content sha256, options hash) pairs, with their adapter, calibrations
        and publications: four queries per 500 pairs, so planning a catalog of thousands costs milliseconds
        per adapter (a catalog re-run asks this once)."""
        wanted = sorted(set(pairs))

        def run(conn):
            found: dict[tuple[str, str], ArtifactDetail] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                contents = sorted({c for c, _ in chunk})
                keys = set(chunk)
                rows = [r for r in conn.execute(select(artifacts).where(artifacts.c.source_sha256.in_(contents))).mappings()
                        if (r["source_sha256"], r["options_hash"]) in keys]
                if not rows:
                    continue
                ids = [r["id"] for r in rows]
                adapter_rows = {a["id"]: from_mapping(AdapterRow, a) for a in conn.execute(
                    select(adapters).where(adapters.c.id.in_(sorted({r["adapter_id"] for r in rows})))).mappings()}
                cals: dict[int, list[CalibrationRow]] = {}
                for c in conn.execute(select(calibrations).where(calibrations.c.artifact_id.in_(ids))
                                      .order_by(calibrations.c.id)).mappings():
                    cals.setdefault(c["artifact_id"], []).append(from_mapping(CalibrationRow, c))
                pubs: dict[int, list[PublicationRow]] = {}
                for p in conn.execute(select(publications).where(publications.c.artifact_id.in_(ids))
                                      .order_by(publications.c.id)).mappings():
                    pubs.setdefault(p["artifact_id"], []).append(from_mapping(PublicationRow, p))
                for r in rows:
                    found[(r["source_sha256"], r["options_hash"])] = ArtifactDetail(
                        artifact=from_mapping(ArtifactRow, r), adapter=adapter_rows[r["adapter_id"]],
                        calibrations=tuple(cals.get(r["id"], ())), publications=tuple(pubs.get(r["id"], ())))
            return found

        return self._read(f"work of {len(wanted)} adapter(s)", run)

    def find_adapter_contents(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Content sha256 of the newest adapter registered at each (URI, revision) pair (those registered)."""
        wanted = set(pairs)

        def run(conn):
            found: dict[tuple[str, str], str] = {}
            uris = sorted({u for u, _ in wanted})
            for start in range(0, len(uris), 500):
                query = (select(adapters.c.uri, adapters.c.revision, adapters.c.content_sha256)
                         .where(adapters.c.uri.in_(uris[start:start + 500])).order_by(adapters.c.id))
                for uri, revision, content in conn.execute(query):
                    if (uri, revision) in wanted:
                        found[(uri, revision)] = content  # ordered by id: the newest wins
            return found

        return self._read(f"contents of {len(wanted)} adapter(s)", run)

    def find_artifacts_by_sha256(self, sha256: str) -> list[ArtifactRow]:
        """Artifacts whose compeft.safetensors has this sha256 (several if options differ only in name)."""
        def run(conn):
            rows = conn.execute(select(artifacts).where(artifacts.c.sha256 == sha256).order_by(artifacts.c.id))
            return [from_mapping(ArtifactRow, row) for row in rows.mappings()]

        return self._read(f"artifacts with sha256 {sha256}", run)

    def get_adapters(self, ids: Sequence[int]) -> list[AdapterRow]:
        """The adapters with these ids (any order; unknown ids are left out)."""
        ids = sorted(set(ids))

        def run(conn):
            rows = []
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                rows += [from_mapping(AdapterRow, r) for r in
                         conn.execute(select(adapters).where(adapters.c.id.in_(chunk))).mappings()]
            return rows

        return self._read("adapters by id", run)

    def list_adapters(self) -> list[AdapterRow]:
        """Every registered adapter, oldest first (the census's input)."""
        def run(conn):
            return [from_mapping(AdapterRow, r) for r in conn.execute(select(adapters).order_by(adapters.c.id)).mappings()]

        return self._read("list adapters", run)

    def artifact_bytes(self) -> dict[str, int]:
        """content sha256 -> size of the newest artifact made from that content (the census's 'after')."""
        def run(conn):
            query = select(artifacts.c.source_sha256, artifacts.c.bytes).order_by(artifacts.c.id)
            return {sha: size for sha, size in conn.execute(query)}

        return self._read("artifact sizes", run)

    def latest_runs(self, limit: int = 500) -> list[RunRow]:
        """The newest completed flow runs, newest first (their skips are the census's skip reasons)."""
        return self.list_runs(status="completed", limit=limit)[0]

    def list_runs(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[RunRow], int]:
        """Flow runs, newest first, optionally of one status, with the total count before paging."""
        if limit < 1 or offset < 0:
            raise RegistryError(f"invalid paging limit={limit} offset={offset}: limit >= 1, offset >= 0")
        where = [runs.c.status == status] if status is not None else []

        def run(conn):
            total = conn.execute(select(func.count()).select_from(runs).where(*where)).scalar_one()
            rows = conn.execute(select(runs).where(*where).order_by(runs.c.id.desc()).limit(limit).offset(offset))
            return [from_mapping(RunRow, row) for row in rows.mappings()], total

        return self._read("list runs", run)

    def get_run(self, flow_run_id: str) -> RunRow:
        """One run by its flow run id; NotFoundError if absent."""
        def run(conn):
            row = conn.execute(select(runs).where(runs.c.flow_run_id == flow_run_id)).mappings().first()
            if row is None:
                raise NotFoundError(f"run {flow_run_id!r} not found in the registry")
            return from_mapping(RunRow, row)

        return self._read(f"run {flow_run_id}", run)

    # -- issue 14: signatures, near-duplicates, operations ---------------------------------------
    def put_signature(self, artifact_id: int, record: SignatureRecord) -> SignatureRow:
        """Store an artifact's signature (idempotent: an existing one is kept and returned)."""
        values = dict(record.to_dict(), sketch=record.sketch, artifact_id=artifact_id, created_at=_now())

        def run(conn):
            row, _ = self._get_or_create(conn, signatures, {"artifact_id": artifact_id}, values)
            return from_mapping(SignatureRow, row)

        return self._write(f"signature of artifact {artifact_id}", run)

    def get_signature(self, artifact_id: int) -> SignatureRow | None:
        """An artifact's signature, or None when it has none yet."""
        def run(conn):
            row = conn.execute(select(signatures).where(signatures.c.artifact_id == artifact_id)).mappings().first()
            return from_mapping(SignatureRow, row) if row else None

        return self._read(f"signature of artifact {artifact_id}", run)

    def signatures_like(self, layout_sha256: str, base_model: str) -> list[SignatureRow]:
        """The signatures of every artifact with this layout and base model, oldest artifact first."""
        def run(conn):
            rows = conn.execute(select(signatures).where(signatures.c.layout_sha256 == layout_sha256,
                                                         signatures.c.base_model == base_model)
                                .order_by(signatures.c.artifact_id)).mappings()
            return [from_mapping(SignatureRow, row) for row in rows]

        return self._read("signatures of a layout", run)

    def unsigned_artifacts(self) -> list[ArtifactRow]:
        """Artifacts without a signature (registered before signatures existed), oldest first."""
        def run(conn):
            query = (select(artifacts).where(~artifacts.c.id.in_(select(signatures.c.artifact_id)))
                     .order_by(artifacts.c.id))
            return [from_mapping(ArtifactRow, row) for row in conn.execute(query).mappings()]

        return self._read("unsigned artifacts", run)

    def mark_duplicate(self, artifact_id: int, duplicate_of: int, cosine: float) -> SignatureRow:
        """Record that an artifact is a near-duplicate of an earlier one (their exact cosine)."""
        def run(conn):
            conn.execute(update(signatures).where(signatures.c.artifact_id == artifact_id)
                         .values(duplicate_of=duplicate_of, duplicate_cosine=cosine))
            row = conn.execute(select(signatures).where(signatures.c.artifact_id == artifact_id)).mappings().one()
            return from_mapping(SignatureRow, row)

        return self._write(f"duplicate mark of artifact {artifact_id}", run)

    def duplicate_marks(self, artifact_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        """artifact id → (duplicate_of, cosine) for the marked ones among ``artifact_ids``."""
        def run(conn):
            rows = conn.execute(select(signatures.c.artifact_id, signatures.c.duplicate_of, signatures.c.duplicate_cosine)
                                .where(signatures.c.artifact_id.in_(list(artifact_ids)),
                                       signatures.c.duplicate_of.is_not(None)))
            return {r.artifact_id: (r.duplicate_of, r.duplicate_cosine) for r in rows}

        return self._read("duplicate marks", run) if artifact_ids else {}

    def add_operation(self, record: OperationRecord) -> OperationRow:
        """Record a merge or composition with its inputs (lineage)."""
        values = record.to_dict()
        inputs = values.pop("inputs")
        values["created_at"] = _now()

        def run(conn):
            new_id = conn.execute(operations.insert().values(**values)).inserted_primary_key[0]
            if inputs:
                conn.execute(operation_inputs.insert(), [dict(i, operation_id=new_id, position=n)
                                                         for n, i in enumerate(inputs)])
            return self._operation(conn, new_id)

        return self._write(f"{record.kind} operation", run)

    def get_operation(self, operation_id: int) -> OperationRow:
        """One operation with its inputs; NotFoundError if absent."""
        return self._read(f"operation {operation_id}", lambda conn: self._operation(conn, operation_id))

    def operations_using(self, artifact_id: int) -> list[OperationRow]:
        """The operations that took this artifact as an input, oldest first."""
        def run(conn):
            ids = conn.execute(select(operation_inputs.c.operation_id).distinct()
                               .where(operation_inputs.c.artifact_id == artifact_id)
                               .order_by(operation_inputs.c.operation_id)).scalars().all()
            return [self._operation(conn, i) for i in ids]

        return self._read(f"operations using artifact {artifact_id}", run)

    @staticmethod
    def _operation(conn: Connection, operation_id: int) -> OperationRow:
        row = conn.execute(select(operations).where(operations.c.id == operation_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"operation {operation_id} not found in the registry")
        inputs = conn.execute(select(operation_inputs).where(operation_inputs.c.operation_id == operation_id)
                              .order_by(operation_inputs.c.position)).mappings()
        return OperationRow(**{**{k: row[k] for k in ("id", "kind", "method", "options", "output_format", "output_uri",
                                                      "output_sha256", "artifact_id", "result", "flow_run_id")},
                               "created_at": _aware(row["created_at"]),
                               "inputs": tuple(from_mapping(OperationInput, i) for i in inputs)})


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _first_line(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def open_registry(url: str | None = None, *, upgrade: bool | None = None) -> Registry:
    """Open the registry at ``url`` (resolved flag > COMPEFT_DATABASE_URL > embedded SQLite).

    SQLite databases are migrated automatically (``upgrade=None``); other databases must be at the
    newest migration already (``compeft db upgrade``) unless ``upgrade=True``.
    """
    resolved = db.resolve_database_url(url)
    engine = db.make_engine(resolved)
    registry = Registry(engine)
    should_upgrade = db.is_sqlite(resolved) if upgrade is None else upgrade
    try:
        if should_upgrade:
            if upgrade or db.current_revision(engine) != db.head_revision():
                registry.upgrade()
        else:
            current = db.current_revision(engine)
            if current != db.head_revision():
                raise RegistryError(
                    f"registry database {db.redact_url(resolved)} is at migration {current or 'none'}, "
                    f"expected {db.head_revision()}: run 'compeft db upgrade'"
                )
    except SQLAlchemyError as err:
        engine.dispose()
        raise RegistryError(f"cannot open registry {db.redact_url(resolved)}: {type(err).__name__}: {_first_line(err)}") from err
    except RegistryError:
        engine.dispose()
        raise
    return registry
