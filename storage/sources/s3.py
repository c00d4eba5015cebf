"""Source over an S3 prefix: paginated listing; a "directory" with adapter files is one adapter.

The revision is a hash of the files' ETags; downloads use If-Match so a file changed after listing
is an error, not a silent mix of versions.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from botocore.exceptions import ClientError

from compeft.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    detect_peft_type,
    parse_config,
)
from compeft.config import canonical_json
from compeft.errors import AdapterFormatError
from storage.addresses import S3Address
from storage.errors import HashMismatchError, SourceError, ValidationError
from storage.fullmodels import CARD, CONFIG, FULL, declared_base, is_full_model, model_files, read_card, read_json
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.s3client import call, error_code, make_s3_client
from storage.sources.common import check_sizes, classify, fetch_into
from storage.validation import MAX_WEIGHTS_BYTES, validate_key
from storage.values import AdapterRef, RemoteFile, Skipped


class S3Source:
    """Lists s3://BUCKET/PREFIX; credentials from the environment (AWS_*), endpoint from the address."""

    kind = "s3"

    def __init__(self, address: S3Address, client=None, max_file_bytes: int = MAX_WEIGHTS_BYTES,
                 policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.address = address
        self.uri = str(address)
        self.client = client if client is not None else make_s3_client(address.endpoint_url)
        self.max_file_bytes = max_file_bytes
        self.policy = policy

    def _call(self, what: str, fn):
        return call(what, fn, self.policy)

    def _list(self) -> dict[str, dict[str, dict]]:
        """Group listed objects by parent prefix: {dir: {file name: object}}."""
        prefix = f"{self.address.prefix}/" if self.address.prefix else ""
        groups: dict[str, dict[str, dict]] = defaultdict(dict)

        def run():
            groups.clear()
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.address.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    directory, _, name = obj["Key"].rpartition("/")
                    groups[directory][name] = obj
            return groups

        return self._call(f"list {self.uri}", run)

    def iter_adapters(self) -> Iterator[AdapterRef | Skipped]:
        for directory, objects in sorted(self._list().items()):
            uri = f"s3://{self.address.bucket}/{directory}" if directory else f"s3://{self.address.bucket}"
            if ADAPTER_CONFIG not in objects:
                if is_full_model(objects):  # a full fine-tune: compressed against the base it names (issue 17)
                    try:
                        yield self._full_ref(directory, objects, uri)
                    except (SourceError, ValidationError) as err:
                        yield Skipped(uri=uri, reason=str(err))
                continue
            reason = classify(objects)
            if reason is not None:
                yield Skipped(uri=uri, reason=reason)
                continue
            try:
                yield self._ref(directory, objects, uri)
            except (SourceError, ValidationError, AdapterFormatError) as err:
                yield Skipped(uri=uri, reason=str(err))

    def _ref(self, directory: str, objects: dict[str, dict], uri: str) -> AdapterRef:
        if directory:
            validate_key(directory)
        files = tuple(
            RemoteFile(name=n, size=int(objects[n]["Size"]), etag=objects[n]["ETag"]) for n in ADAPTER_FILES
        )
        check_sizes(files, self.max_file_bytes)
        key = f"{directory}/{ADAPTER_CONFIG}" if directory else ADAPTER_CONFIG
        config_file = files[0]
        body = self._call(
            f"{uri}/{ADAPTER_CONFIG}",
            lambda: self.client.get_object(Bucket=self.address.bucket, Key=key, IfMatch=config_file.etag)["Body"].read(),
        )
        config = parse_config(body, f"{uri}/{ADAPTER_CONFIG}")
        revision = hashlib.sha256(canonical_json({f.name: f.etag for f in files}).encode()).hexdigest()
        return AdapterRef(
            uri=uri,
            source_uri=self.uri,
            name=directory.rsplit("/", 1)[-1] if directory else self.address.bucket,
            revision=revision,
            files=files,
            peft_type=detect_peft_type(config),
            base_model=config.get("base_model_name_or_path") or None,
            config=config,
        )

    def _full_ref(self, directory: str, objects: dict[str, dict], uri: str) -> AdapterRef:
        """A full fine-tune's reference: its model files (revision: their ETags), the base its card or config names."""
        if directory:
            validate_key(directory)
        files = tuple(RemoteFile(name=n, size=int(objects[n]["Size"]), etag=objects[n]["ETag"]) for n in model_files(objects))
        check_sizes(files, self.max_file_bytes)
        texts = {}
        with tempfile.TemporaryDirectory(prefix="compeft-cfg-") as tmp:
            for name in (CONFIG, CARD):
                if name in objects:
                    key, etag = f"{directory}/{name}" if directory else name, objects[name]["ETag"]
                    body = self._call(f"{uri}/{name}", lambda key=key, etag=etag: self.client.get_object(
                        Bucket=self.address.bucket, Key=key, IfMatch=etag)["Body"].read(1 << 20))
                    (Path(tmp) / name).write_bytes(body)
            config = read_json(Path(tmp) / CONFIG, uri)
            texts[CARD] = read_card(Path(tmp) / CARD)
        revision = hashlib.sha256(canonical_json({f.name: f.etag for f in files}).encode()).hexdigest()
        return AdapterRef(uri=uri, source_uri=self.uri, name=directory.rsplit("/", 1)[-1] if directory else self.address.bucket,
                          revision=revision, files=files, peft_type=FULL, base_model=declared_base(config, texts[CARD]),
                          config=config)

    def fetch(self, ref: AdapterRef, dest_dir: Path) -> Path:
        bucket_uri = f"s3://{self.address.bucket}"
        if not (ref.uri == bucket_uri or ref.uri.startswith(bucket_uri + "/")):
            raise SourceError(f"{ref.uri}: not in bucket {self.address.bucket}")
        directory = ref.uri[len(bucket_uri) + 1:]

        def download(remote: RemoteFile, target: Path) -> None:
            key = f"{directory}/{remote.name}" if directory else remote.name
            validate_key(key)

            def run():
                try:
                    response = self.client.get_object(Bucket=self.address.bucket, Key=key, IfMatch=remote.etag)
                except ClientError as err:
                    if error_code(err) in ("PreconditionFailed", "412"):
                        raise HashMismatchError(f"{ref.uri}/{remote.name}: changed since it was listed (ETag)") from err
                    raise
                with open(target, "wb") as handle:
                    for chunk in response["Body"].iter_chunks(1024 * 1024):
                        handle.write(chunk)
                        if handle.tell() > self.max_file_bytes:
                            raise ValidationError(f"{ref.uri}/{remote.name}: exceeds the {self.max_file_bytes}-byte cap")

            self._call(f"{ref.uri}/{remote.name}", run)

        return fetch_into(ref, Path(dest_dir), download, self.max_file_bytes)
