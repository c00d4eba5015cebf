"""Typed flow parameters (pydantic): what the Prefect UI's run form shows, with descriptions and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from storage.hashing import options_hash
from storage.values import AdapterRef, RemoteFile

DEFAULT_DENSITIES = (0.05, 0.1, 0.2)
DEFAULT_ALPHAS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


class CompressionOptions(BaseModel):
    """How each adapter is compressed: a fixed (density, α), or α chosen on a validation task."""

    model_config = ConfigDict(extra="forbid")

    density: float = Field(0.1, gt=0, le=1, description="Fraction k of entries kept (ComPEFT density).")
    alpha: float = Field(1.0, gt=0, description="Scale α of the ternary update when no task is given.")
    codec: str = Field("golomb", description="Payload codec: golomb (smallest) or bitmask (2 bits/param).")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N (GPU workers pin CUDA_VISIBLE_DEVICES).")
    task: str | None = Field(
        None, description="Validation task (lm-eval task name or task YAML path) for every adapter: calibrate α.")
    tasks: dict[str, str] = Field(
        default_factory=dict,
        description="Per-adapter validation tasks, adapter name -> task; overrides `task` for those adapters.")
    base: str | None = Field(
        None, description="Base model directory or Hub id for calibration (default: the adapter's own base).")
    densities: list[float] = Field(
        default_factory=lambda: list(DEFAULT_DENSITIES), description="Calibration grid of densities k.")
    alphas: list[float] = Field(
        default_factory=lambda: list(DEFAULT_ALPHAS), description="Calibration grid of α values.")
    metric: str = Field("acc", description="Metric of the validation task to maximise.")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many validation examples.")
    tolerance: float = Field(0.0, ge=0, description="Pick the smallest artifact within this score of the best.")
    search: Literal["refine", "grid"] = Field("refine", description="Coarse-then-refine search or the full grid.")

    def task_for(self, adapter_name: str) -> str | None:
        """The validation task of one adapter (per-adapter mapping first, then the catalog-wide task)."""
        return self.tasks.get(adapter_name) or self.task

    def key_options(self, adapter_name: str) -> dict[str, Any]:
        """The options that define an artifact of this adapter (its idempotency key, without device)."""
        task = self.task_for(adapter_name)
        if task is None:
            return {"mode": "fixed", "codec": self.codec, "density": self.density, "alpha": self.alpha}
        return {
            "mode": "calibrate", "codec": self.codec, "task": task, "base": self.base, "metric": self.metric,
            "densities": sorted(self.densities), "alphas": sorted(self.alphas), "limit": self.limit,
            "tolerance": self.tolerance, "search": self.search,
        }

    def key_hash(self, adapter_name: str) -> str:
        """sha256 of :meth:`key_options` (the registry's options hash)."""
        return options_hash(self.key_options(adapter_name))


class RemoteFileModel(BaseModel):
    """One file of an adapter as its source listed it."""

    name: str
    size: int | None = None
    etag: str | None = None
    sha256: str | None = None


class AdapterItem(BaseModel):
    """A reference to one adapter (no weights): where it is, pinned to a revision, as the crawl found it."""

    uri: str = Field(description="Stable address of the adapter (path, s3://..., hf://A/R@SHA).")
    source_uri: str = Field(description="The source it was found in.")
    name: str = Field(description="Short name; publishers derive destination names from it.")
    revision: str | None = Field(None, description="Commit sha, ETag digest or content hash.")
    files: list[RemoteFileModel] = Field(default_factory=list)
    peft_type: str | None = None
    base_model: str | None = Field(None, description="Base model recorded in adapter_config.json.")
    config: dict[str, Any] = Field(default_factory=dict, description="adapter_config.json as listed.")

    @classmethod
    def from_ref(cls, ref: AdapterRef) -> AdapterItem:
        return cls(
            uri=ref.uri, source_uri=ref.source_uri, name=ref.name, revision=ref.revision,
            files=[RemoteFileModel(name=f.name, size=f.size, etag=f.etag, sha256=f.sha256) for f in ref.files],
            peft_type=ref.peft_type, base_model=ref.base_model, config=dict(ref.config),
        )

    def to_ref(self) -> AdapterRef:
        return AdapterRef(
            uri=self.uri, source_uri=self.source_uri, name=self.name, revision=self.revision,
            files=tuple(RemoteFile(name=f.name, size=f.size, etag=f.etag, sha256=f.sha256) for f in self.files),
            peft_type=self.peft_type, base_model=self.base_model, config=self.config,
        )

    def known_content_sha256(self) -> str | None:
        """The registry content hash when the listing carries every file's sha256 (else None: fetch first)."""
        from storage.adapter_facts import ADAPTER_FILES
        from storage.hashing import content_hash

        hashes = {f.name: f.sha256 for f in self.files}
        if set(hashes) != set(ADAPTER_FILES) or any(h is None for h in hashes.values()):
            return None
        return content_hash(hashes)  # type: ignore[arg-type]


class ServiceConfig(BaseModel):
    """Where the service keeps state and publishes; credentials always come from the environment or blocks."""

    model_config = ConfigDict(extra="forbid")

    database_url: str | None = Field(
        None, description="Registry database URL without a password (default: COMPEFT_DATABASE_URL or the "
                          "compeft-database-url Secret block, else SQLite in COMPEFT_HOME).")
    store: str | None = Field(
        None, description="Artifact store: local directory or s3://BUCKET/PREFIX (default: COMPEFT_STORE, "
                          "else COMPEFT_HOME/artifacts).")
    publish_to: str | None = Field(
        None, description="Also publish each artifact to this destination: hf://ORG, s3://BUCKET/PREFIX or a path.")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (default: AWS_ENDPOINT_URL).")
    hf_endpoint: str | None = Field(None, description="Hub endpoint URL (default: HF_ENDPOINT).")

    @field_validator("database_url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        """Parameters are visible in the UI and stored by Prefect: a password belongs in the environment."""
        if url and "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
            from sqlalchemy.engine import make_url

            if make_url(url).password:
                raise ValueError("database_url must not carry a password: set COMPEFT_DATABASE_URL on the workers "
                                 "or the compeft-database-url Secret block")
        return url


DEFAULT_OPTIONS = CompressionOptions()
DEFAULT_SERVICE = ServiceConfig()


class AdapterOutcome(BaseModel):
    """What happened to one adapter in a run (one line of the run's table artifact)."""

    uri: str
    name: str
    status: Literal["compressed", "existing", "skipped", "failed"]
    reason: str | None = None
    artifact_id: int | None = None
    bytes_source: int | None = None
    bytes_artifact: int | None = None
    ratio: float | None = None
    bits_per_param: float | None = None
    density: float | None = None
    alpha: float | None = None
    score_original: float | None = None
    score_compressed: float | None = None
    storage_uri: str | None = None
    published_uri: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AdapterOutcome:
        return cls.model_validate(dict(data))
