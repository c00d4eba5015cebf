"""Artifact store in an S3 prefix: files go to temporary keys, are copied to PREFIX/<sha>/, and the
MANIFEST.json written last (create-only) makes the artifact visible; a crashed upload has no manifest.

The temporary keys are PREFIX/.tmp/<sha>/<file>, one set per content: an upload cut short (the store went away,
the worker died) leaves them behind, and the next upload of the same content overwrites and then deletes them,
so a re-run leaves no orphan or duplicate objects.
"""

from __future__ import annotations

from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from storage.addresses import S3Address
from storage.errors import (
    ArtifactNotFoundError,
    SourceError,
    StoreError,
    TransientError,
)
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.s3client import call, error_code, make_s3_client
from storage.stores.manifest import (
    MANIFEST,
    Manifest,
    build_manifest,
    check_sha,
    materialize,
)
from storage.values import StoredArtifact


class S3Store:
    """Content-addressed store under s3://BUCKET/PREFIX; credentials come from the environment."""

    def __init__(self, address: S3Address, client=None, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.address, self.policy = address, policy
        self.bucket = address.bucket
        self.prefix = address.prefix
        self.client = client if client is not None else make_s3_client(address.endpoint_url)
        self.uri = str(address)

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri_for(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self._key(check_sha(sha256))}"

    def _call(self, what: str, fn):
        """``fn()`` retried under the store's policy; what still fails is a StoreError."""
        try:
            return call(what, fn, self.policy)
        except (SourceError, TransientError) as err:
            raise StoreError(f"{what} failed: {err}") from err

    def _read_manifest(self, sha256: str) -> Manifest | None:
        key = self._key(sha256, MANIFEST)

        def read() -> bytes | None:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as err:
                if error_code(err) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise

        body = self._call(f"reading s3://{self.bucket}/{key}", read)
        return None if body is None else Manifest.from_bytes(body, f"s3://{self.bucket}/{key}")

    def exists(self, sha256: str) -> bool:
        return self._read_manifest(check_sha(sha256)) is not None

    def put(self, artifact_dir: Path) -> StoredArtifact:
        manifest = build_manifest(Path(artifact_dir))
        sha = manifest.sha256
        size = sum(s for s, _ in manifest.files.values())
        uri = self.uri_for(sha)
        if self._read_manifest(sha) is not None:
            return StoredArtifact(uri=uri, sha256=sha, bytes=size, created=False)
        tmp_prefix = self._key(".tmp", sha)
        tmp_keys = [f"{tmp_prefix}/{name}" for name in manifest.files]

        def upload() -> bool:  # a retry (or a re-run) uploads again under the same temporary keys
            for name, (_, digest) in manifest.files.items():
                with open(Path(artifact_dir) / name, "rb") as handle:
                    self.client.put_object(Bucket=self.bucket, Key=f"{tmp_prefix}/{name}", Body=handle,
                                           Metadata={"sha256": digest})
            for name in manifest.files:
                try:
                    self.client.copy_object(
                        Bucket=self.bucket,
                        Key=self._key(sha, name),
                        CopySource={"Bucket": self.bucket, "Key": f"{tmp_prefix}/{name}"},
                        MetadataDirective="COPY",
                    )
                except ClientError as err:  # a concurrent writer of the same content finished and cleaned up
                    if error_code(err) not in ("NoSuchKey", "404") or self._read_manifest(sha) is None:
                        raise TransientError(f"copying {tmp_prefix}/{name}: {err}") from err
                    return False
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(sha, MANIFEST), Body=manifest.to_bytes(), IfNoneMatch="*"
                )
            except ClientError as err:
                if error_code(err) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise
                return False  # a concurrent writer (or an earlier attempt) published the same content first
            return True

        try:
            created = self._call(f"storing {artifact_dir} at {uri}", upload)
        finally:
            self._delete_quietly(tmp_keys)
        return StoredArtifact(uri=uri, sha256=sha, bytes=size, created=created)

    def _delete_quietly(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (ClientError, BotoCoreError):
                pass  # temporary keys are invisible to readers; a lifecycle rule may expire PREFIX/.tmp/

    def get(self, sha256: str, dest: Path) -> Path:
        manifest = self._read_manifest(check_sha(sha256))
        if manifest is None:
            raise ArtifactNotFoundError(f"artifact {sha256} not found in store {self.uri}")
        def download(name: str, target: Path) -> None:
            key = self._key(sha256, name)
            self._call(f"downloading s3://{self.bucket}/{key}", lambda: self.client.download_file(self.bucket, key, str(target)))

        return materialize(manifest, dest, download, self.uri_for(sha256))
