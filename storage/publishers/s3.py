"""Publish to s3://BUCKET/PREFIX/<name>/[SUBFOLDER/] (an adapter below its repo's root keeps its folder);
compeft.safetensors goes last and its metadata marks completion."""

from __future__ import annotations

from pathlib import Path

from botocore.exceptions import ClientError

from storage.addresses import S3Address
from storage.errors import PublishError, SourceError, TransientError
from storage.publishers.naming import render_path
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.s3client import call, error_code, make_s3_client
from storage.stores.manifest import CONTAINER, build_manifest
from storage.values import Provenance, Publication


class S3Publisher:
    """Writes the artifact files with provenance metadata (no credentials) to PREFIX/<name>/."""

    def __init__(self, address: S3Address, name_template: str, client=None, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.address, self.policy = address, policy
        self.destination = str(address)
        self.name_template = name_template
        self.client = client if client is not None else make_s3_client(address.endpoint_url)

    def _key(self, name: str, file_name: str) -> str:
        return "/".join(p for p in (self.address.prefix, name, file_name) if p)

    def _current_sha(self, key: str) -> str | None:
        try:
            head = self.client.head_object(Bucket=self.address.bucket, Key=key)
        except ClientError as err:
            if error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head.get("Metadata", {}).get("sha256")

    def publish(self, artifact_dir: Path, provenance: Provenance) -> Publication:
        name = render_path(self.name_template, provenance)
        manifest = build_manifest(Path(artifact_dir))
        uri = f"s3://{self.address.bucket}/{self._key(name, '')}".rstrip("/")
        metadata = {
            "artifact-sha256": manifest.sha256,
            "source-uri": provenance.source_uri,
            "source-revision": provenance.source_revision or "",
            "compeft-version": provenance.package_version,
        }

        def run() -> Publication:  # idempotent: files already there are skipped, so a retry resumes
            current = {n: self._current_sha(self._key(name, n)) for n in manifest.files}
            if all(current[n] == digest for n, (_, digest) in manifest.files.items()):
                return Publication(self.destination, uri, manifest.sha256, created=False)
            order = sorted(n for n in manifest.files if n != CONTAINER) + [CONTAINER]
            for file_name in order:
                if current[file_name] == manifest.files[file_name][1] and file_name != CONTAINER:
                    continue
                with open(Path(artifact_dir) / file_name, "rb") as handle:
                    self.client.put_object(
                        Bucket=self.address.bucket, Key=self._key(name, file_name), Body=handle,
                        Metadata=dict(metadata, sha256=manifest.files[file_name][1]),
                    )
            return Publication(self.destination, uri, manifest.sha256, created=True)

        try:
            return call(f"upload to {uri}", run, self.policy)
        except (SourceError, TransientError) as err:
            raise PublishError(f"publishing {artifact_dir} to {uri} failed: {err}") from err
