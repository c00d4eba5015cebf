"""Artifact store in an S3 prefix: files go to a temporary key, are copied to PREFIX/<sha>/, and the
MANIFEST.json written last (create-only) makes the artifact visible; a crashed upload has no manifest.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from storage.addresses import S3Address
from storage.errors import ArtifactNotFoundError, StoreError
from storage.s3client import error_code, make_s3_client, translate
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

    def __init__(self, address: S3Address, client=None) -> None:
        self.address = address
        self.bucket = address.bucket
        self.prefix = address.prefix
        self.client = client if client is not None else make_s3_client(address.endpoint_url)
        self.uri = str(address)

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri_for(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self._key(check_sha(sha256))}"

    def _read_manifest(self, sha256: str) -> Manifest | None:
        key = self._key(sha256, MANIFEST)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as err:
            if error_code(err) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StoreError(f"s3://{self.bucket}/{key}: {translate(err, 'read manifest')}") from err
        except BotoCoreError as err:
            raise translate(err, f"s3://{self.bucket}/{key}") from err
        return Manifest.from_bytes(body, f"s3://{self.bucket}/{key}")

    def exists(self, sha256: str) -> bool:
        return self._read_manifest(check_sha(sha256)) is not None

    def put(self, artifact_dir: Path) -> StoredArtifact:
        manifest = build_manifest(Path(artifact_dir))
        sha = manifest.sha256
        size = sum(s for s, _ in manifest.files.values())
        uri = self.uri_for(sha)
        if self._read_manifest(sha) is not None:
            return StoredArtifact(uri=uri, sha256=sha, bytes=size, created=False)
        tmp_prefix = self._key(".tmp", uuid.uuid4().hex)
        tmp_keys = []
        try:
            for name, (_, digest) in manifest.files.items():
                tmp_key = f"{tmp_prefix}/{name}"
                tmp_keys.append(tmp_key)
                with open(Path(artifact_dir) / name, "rb") as handle:
                    self.client.put_object(Bucket=self.bucket, Key=tmp_key, Body=handle, Metadata={"sha256": digest})
            for name in manifest.files:
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self._key(sha, name),
                    CopySource={"Bucket": self.bucket, "Key": f"{tmp_prefix}/{name}"},
                    MetadataDirective="COPY",
                )
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(sha, MANIFEST), Body=manifest.to_bytes(), IfNoneMatch="*"
                )
                created = True
            except ClientError as err:
                if error_code(err) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise
                created = False  # a concurrent writer published the same content first
        except (ClientError, BotoCoreError) as err:
            raise StoreError(f"storing {artifact_dir} at {uri} failed: {translate(err, 'upload')}") from err
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
            try:
                self.client.download_file(self.bucket, key, str(target))
            except (ClientError, BotoCoreError) as err:
                raise StoreError(f"s3://{self.bucket}/{key}: download failed: {translate(err, 'download')}") from err

        return materialize(manifest, dest, download, self.uri_for(sha256))
