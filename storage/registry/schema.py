"""SQLAlchemy Core tables of the registry (the Alembic migrations create exactly these)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

#: Alembic's bookkeeping table; named so it cannot clash with Prefect's own ``alembic_version``.
VERSION_TABLE = "compeft_alembic_version"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uri", String(1024), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

adapters = Table(
    "adapters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=True),
    Column("uri", String(1024), nullable=False),
    Column("repo", String(512), nullable=False),
    Column("revision", String(256), nullable=True),
    Column("content_sha256", String(64), nullable=False),
    Column("file_hashes", JSON, nullable=False),
    Column("peft_type", String(64), nullable=True),
    Column("base_model", String(512), nullable=True),
    Column("rank", Integer, nullable=True),
    Column("target_modules", JSON, nullable=True),
    Column("parameter_count", BigInteger, nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("subfolder", String(1024), nullable=False, server_default=""),
    Column("layout", String(64), nullable=True),
    Column("dtype", String(64), nullable=True),
    UniqueConstraint("uri", "content_sha256"),
    Index(None, "content_sha256"),
    Index(None, "base_model"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("adapter_id", Integer, ForeignKey("adapters.id"), nullable=False),
    Column("source_sha256", String(64), nullable=False),
    Column("options_hash", String(64), nullable=False),
    Column("options", JSON, nullable=False),
    Column("codec", String(64), nullable=False),
    Column("density", Float, nullable=False),
    Column("alpha", Float, nullable=False),
    Column("sigma", Float, nullable=True),
    Column("scale", Float, nullable=True),
    Column("kept", BigInteger, nullable=True),
    Column("bits_per_param", Float, nullable=True),
    Column("bytes", BigInteger, nullable=False),
    Column("bytes_source", BigInteger, nullable=True),
    Column("ratio", Float, nullable=True),
    Column("storage_uri", String(2048), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("package_version", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source_sha256", "options_hash", name="uq_artifacts_idempotency"),
    Index(None, "sha256"),
    Index(None, "ratio"),
)

calibrations = Table(
    "calibrations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), nullable=False),
    Column("task", String(256), nullable=False),
    Column("metric", String(128), nullable=False),
    Column("scores", JSON, nullable=False),
    Column("chosen_density", Float, nullable=False),
    Column("chosen_alpha", Float, nullable=False),
    Column("chosen_score", Float, nullable=True),
    Column("original_score", Float, nullable=True),
    Column("runtime_s", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "artifact_id"),
)

publications = Table(
    "publications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), nullable=False),
    Column("destination", String(2048), nullable=False),
    Column("uri", String(2048), nullable=False),
    Column("remote_revision", String(256), nullable=False, default=""),
    Column("published_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("artifact_id", "destination", "remote_revision"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("flow_run_id", String(128), nullable=False, unique=True),
    Column("parameters", JSON, nullable=False),
    Column("status", String(32), nullable=False),
    Column("counts", JSON, nullable=False),
    Column("errors", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

# issue 14 (migration 0003): the search signature of each artifact and its near-duplicate mark; merges and
# compositions with their inputs (lineage)
signatures = Table(
    "signatures",
    metadata,
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), primary_key=True),
    Column("layout_sha256", String(64), nullable=False),
    Column("base_model", String(512), nullable=False),  # the adapter's base model, "" when unknown
    Column("d", BigInteger, nullable=False),
    Column("kept", BigInteger, nullable=False),
    Column("sketch_version", Integer, nullable=False),
    Column("sketch", LargeBinary, nullable=False),
    Column("duplicate_of", Integer, ForeignKey("artifacts.id"), nullable=True),
    Column("duplicate_cosine", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "layout_sha256", "base_model"),
)

operations = Table(
    "operations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # merge | compose
    Column("method", String(64), nullable=False),
    Column("options", JSON, nullable=False),
    Column("output_format", String(16), nullable=False),  # peft | compeft
    Column("output_uri", String(2048), nullable=False),
    Column("output_sha256", String(64), nullable=False),
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), nullable=True),  # the output, when registered
    Column("result", JSON, nullable=False),
    Column("flow_run_id", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

operation_inputs = Table(
    "operation_inputs",
    metadata,
    Column("operation_id", Integer, ForeignKey("operations.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("artifact_id", Integer, ForeignKey("artifacts.id"), nullable=True),
    Column("address", String(2048), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("weight", Float, nullable=False),
    Index(None, "artifact_id"),
)
