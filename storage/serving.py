"""Addresses for serving: turn where an artifact lives into a ``ResidentArtifact`` that ``compeft.serving`` swaps in.

The library never imports ``storage``; a caller passes an ``ArtifactResolver`` to ``AdapterPool(resolver=...)``
(``pool.add(name, "registry:42")``) or resolves first (``hotswap(model, resolve("s3://..."))``). Addresses:

- ``registry:ID``: an artifact the registry knows, fetched from its store (the resolver's store, else the store
  its recorded location names);
- ``sha256:HEX``: an artifact in the resolver's store;
- ``s3://BUCKET/PREFIX`` or ``hf://ORG/REPO[@REVISION]``: a published artifact directory (``compeft.safetensors``
  and ``adapter_config.json``);
- a local artifact directory.

Every fetch is verified (store manifests, the container's checksums, the config's recorded hash); the files go
to a temporary directory, are read into (pinned) host memory, and are deleted. ``ArtifactResolver.fetch`` (and
``fetch_inputs`` for the operations' command line) stops at the directory: the inputs of ``compeft similar``,
``merge`` and ``compose`` and of the operation flows are fetched by the same code.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from compeft.adapters import ADAPTER_CONFIG
from compeft.container import FILENAME
from compeft.errors import CompeftError
from compeft.fastload import ResidentArtifact
from storage.addresses import HubRepoAddress, LocalAddress, S3Address, parse_address
from storage.errors import AddressError, StoreError
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.stores import ArtifactStore, open_store
from storage.stores.manifest import check_sha

REGISTRY_PREFIX, SHA_PREFIX = "registry:", "sha256:"
ARTIFACT_FILES = (FILENAME, ADAPTER_CONFIG)


class ArtifactResolver:
    """A callable ``address → ResidentArtifact`` (see the module docstring). ``registry`` (an open
    ``Registry``) serves ``registry:ID``; ``store`` (an ``ArtifactStore`` or its address) serves ``sha256:HEX``."""

    def __init__(self, *, registry=None, store: ArtifactStore | str | Path | None = None, s3_endpoint: str | None = None,
                 hf_endpoint: str | None = None, s3_client=None, hf_token: str | bool | None = None,
                 retry_policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.registry = registry
        self.s3_endpoint, self.hf_endpoint, self.s3_client, self.hf_token = s3_endpoint, hf_endpoint, s3_client, hf_token
        self.retry_policy = retry_policy
        self.store = open_store(store, s3_endpoint=s3_endpoint, s3_client=s3_client) \
            if isinstance(store, (str, Path)) else store

    def __call__(self, address: str) -> ResidentArtifact:
        with tempfile.TemporaryDirectory(prefix="compeft-serve-") as tmp:
            return ResidentArtifact.open(self.fetch(address, Path(tmp)))

    def fetch(self, address: str, work: Path) -> Path:
        """The artifact directory at ``address`` on this machine: a local directory as it is, anything else fetched
        into a new directory below ``work`` (the caller's to delete; checked when opened)."""
        text = str(address).strip()
        if text.startswith(REGISTRY_PREFIX):
            return self._from_registry(text, work)
        if text.startswith(SHA_PREFIX):
            if self.store is None:
                raise StoreError(f"{text}: resolving a sha256 needs a store (ArtifactResolver(store=...))")
            sha256 = check_sha(text[len(SHA_PREFIX):])
            return self.store.get(sha256, _fresh(work) / sha256)
        parsed = parse_address(text, s3_endpoint=self.s3_endpoint, hf_endpoint=self.hf_endpoint)
        if isinstance(parsed, LocalAddress):
            return parsed.path
        if isinstance(parsed, S3Address):
            return _download(lambda name, dest: self._s3_get(parsed, name, dest), work)
        if isinstance(parsed, HubRepoAddress):
            return _download(lambda name, dest: self._hub_get(parsed, name, dest), work)
        raise AddressError(f"{text}: not one artifact (use registry:ID, sha256:HEX, s3://BUCKET/PREFIX, "
                           "hf://ORG/REPO or a directory)")

    def _from_registry(self, text: str, work: Path) -> Path:
        if self.registry is None:
            raise StoreError(f"{text}: resolving a registry id needs a registry (ArtifactResolver(registry=...))")
        try:
            artifact_id = int(text[len(REGISTRY_PREFIX):])
        except ValueError:
            raise AddressError(f"{text}: a registry address is registry:ID with an integer id") from None
        row = self.registry.get_artifact(artifact_id).artifact
        store = self.store or self._store_at(row.storage_uri, row.sha256, text)
        return store.get(row.sha256, _fresh(work) / row.sha256)

    def _store_at(self, uri: str | None, sha256: str, text: str) -> ArtifactStore:
        """The store an artifact's recorded location is in (local ROOT/<sha[:2]>/<sha>, S3 PREFIX/<sha>)."""
        if not uri or not uri.rstrip("/").endswith(sha256):
            raise StoreError(f"{text}: the registry records no store location for artifact {sha256}")
        root = uri.rstrip("/")[: -len(sha256) - 1]
        if not root.startswith("s3://") and root.endswith("/" + sha256[:2]):
            root = root[:-3]
        return open_store(root, s3_endpoint=self.s3_endpoint, s3_client=self.s3_client)

    def _s3_get(self, address: S3Address, name: str, dest: Path) -> None:
        from storage.s3client import call, make_s3_client

        client = self.s3_client or make_s3_client(address.endpoint_url)
        key = "/".join(p for p in (address.prefix, name) if p)
        call(f"downloading s3://{address.bucket}/{key}", lambda: client.download_file(address.bucket, key, str(dest)),
             self.retry_policy)

    def _hub_get(self, address: HubRepoAddress, name: str, dest: Path) -> None:
        from storage.hub import HubClient

        HubClient(address.endpoint, self.hf_token, self.retry_policy).download(
            address.repo_id, "/".join(p for p in (address.subfolder, name) if p), address.revision or "main", dest)


def _fresh(work: Path) -> Path:
    """A new empty directory below ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="artifact-", dir=work))


def _download(get, work: Path) -> Path:
    """The artifact files (``get(name, dest)`` each) in a new directory below ``work``."""
    dest = _fresh(work)
    for name in ARTIFACT_FILES:
        get(name, dest / name)
    return dest


def fetch_input(resolver: ArtifactResolver, address: str, work: Path) -> Path:
    """``resolver.fetch`` for an operation's input: its errors name the input (one line)."""
    try:
        return resolver.fetch(address, work)
    except CompeftError as err:
        if str(address).strip() in str(err):
            raise
        raise type(err)(f"input {address!r}: {err}") from err


def fetch_inputs(addresses: Sequence[str], work: Path) -> list[Path]:
    """Operation inputs for ``compeft similar/merge/compose`` (called lazily by compeft.cli): each address an
    artifact directory on this machine, published S3 and Hub artifacts fetched into ``work`` (endpoints and
    credentials from the environment, as everywhere)."""
    resolver = ArtifactResolver()
    return [fetch_input(resolver, address, work) for address in addresses]
