"""Where the service keeps its state and publishes (``ServiceConfig``), and the process-wide registry, store,
source and publisher it opens from that. Credentials never live here: they come from the environment or
Prefect Secret blocks."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from compeft.config import option
from compeft.errors import OptionError
from storage.registry.db import compeft_home, resolve_database_url
from storage.values import CHECKPOINT_CHOICES

STORE_ENV = "COMPEFT_STORE"


@dataclass(frozen=True)
class ServiceConfig:
    """The registry database, artifact store and publish destination of a run, the endpoints to reach them, and
    which training checkpoints a crawl takes."""

    publish_to: str | None = field(default=None, metadata=option(
        "also publish each artifact to this destination: hf://ORG, s3://BUCKET/PREFIX or a path"))
    store: str | None = field(default=None, metadata=option(
        "artifact store: local directory or s3://BUCKET/PREFIX (default: COMPEFT_STORE, else COMPEFT_HOME/artifacts)",
        advanced=True, label="Artifact store"))
    database_url: str | None = field(default=None, metadata=option(
        "registry database URL without a password (default: COMPEFT_DATABASE_URL or the compeft-database-url "
        "Secret block, else SQLite in COMPEFT_HOME)", advanced=True, label="Registry database URL"))
    s3_endpoint: str | None = field(default=None, metadata=option(
        "S3 endpoint URL (default: AWS_ENDPOINT_URL)", advanced=True, label="S3 endpoint URL"))
    hf_endpoint: str | None = field(default=None, metadata=option(
        "Hub endpoint URL (default: HF_ENDPOINT)", advanced=True, label="Hub endpoint URL"))
    checkpoints: str = field(default="final", metadata=option(
        "training checkpoints (checkpoint-N/ folders): final takes the final adapter beside them (else the latest "
        "checkpoint), all takes every checkpoint too", choices=CHECKPOINT_CHOICES, advanced=True, label="Training checkpoints"))
    near_duplicate_cosine: float | None = field(default=0.95, metadata=option(
        "mark an artifact as a near-duplicate of an earlier one of its layout when their cosine is at least this "
        "(null: do not look)", advanced=True, label="Near-duplicate cosine"))

    def __post_init__(self) -> None:
        if self.checkpoints not in CHECKPOINT_CHOICES:
            raise OptionError(f"checkpoints {self.checkpoints!r} must be one of {', '.join(CHECKPOINT_CHOICES)}",
                              "checkpoints")
        url = self.database_url
        if url and "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
            from sqlalchemy.engine import make_url

            if make_url(url).password:  # parameters are shown in the UI and stored by Prefect
                raise OptionError("database_url must not carry a password: set COMPEFT_DATABASE_URL on the workers "
                                  "or the compeft-database-url Secret block", "database_url")
        cosine = self.near_duplicate_cosine
        if cosine is not None and (isinstance(cosine, bool) or not isinstance(cosine, (int, float)) or not -1 <= cosine <= 1):
            raise OptionError(f"near_duplicate_cosine {cosine!r} must be a number in [-1, 1]", "near_duplicate_cosine")

    def store_uri(self) -> str:
        """The artifact store: explicit, else COMPEFT_STORE, else COMPEFT_HOME/artifacts."""
        return self.store or os.environ.get(STORE_ENV) or str(compeft_home() / "artifacts")

    def registry(self):
        """The process-wide registry (None: COMPEFT_DATABASE_URL or the embedded SQLite)."""
        return _registry(resolve_database_url(self.database_url))

    def artifact_store(self):
        """The process-wide artifact store."""
        return _store(self.store_uri(), self.s3_endpoint)

    def source(self, uri: str):
        """The source at ``uri`` (local tree, S3 prefix or Hub address)."""
        from storage.sources import open_source

        return open_source(uri, s3_endpoint=self.s3_endpoint, hf_endpoint=self.hf_endpoint, checkpoints=self.checkpoints)

    def check_publish_to(self, sources: Iterable[str]) -> None:
        """Refuse (one line) a ``publish_to`` at, inside or around one of ``sources`` or the artifact store."""
        if self.publish_to:
            from storage.publishers.safety import check_publish_destination

            check_publish_destination(self.publish_to, sources, self.store_uri(), s3_endpoint=self.s3_endpoint,
                                      hf_endpoint=self.hf_endpoint)

    def publisher(self):
        """The publisher of ``publish_to``."""
        from storage.publishers import open_publisher

        return open_publisher(self.publish_to, s3_endpoint=self.s3_endpoint, hf_endpoint=self.hf_endpoint)


@functools.lru_cache(maxsize=8)
def _registry(url: str):
    from storage.registry import open_registry

    return open_registry(url)


@functools.lru_cache(maxsize=8)
def _store(uri: str, s3_endpoint: str | None):
    from storage.stores import open_store

    return open_store(uri, s3_endpoint=s3_endpoint)

