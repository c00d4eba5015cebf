"""Source over an S3 prefix: paginated listing; every folder (at any depth below the prefix) holding an adapter
is one adapter.

The revision is a hash of the files' ETags; downloads use If-Match so a file changed after listing
is an error, not a silent mix of versions. The listing reads each adapter's config and its weights' safetensors
header (ranged GetObjects: dtypes, a config-less layout's kind), never the weights.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from botocore.exceptions import ClientError

from compeft.adapters import base_model_of, parse_config
from compeft.config import canonical_json
from compeft.errors import AdapterFormatError
from storage.addresses import S3Address
from storage.errors import HashMismatchError, SourceError, ValidationError
from storage.fullmodels import CARD, CONFIG, FULL, FULL_LAYOUT, FullFolder, declared_base, read_card, read_json
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.s3client import call, error_code, make_s3_client
from storage.sources.common import (
    Found,
    check_sizes,
    fetch_into,
    listed_facts,
    listed_kind,
    repo_split,
    root_is_repo,
    survey,
)
from storage.validation import MAX_WEIGHTS_BYTES, validate_key
from storage.values import AdapterRef, RemoteFile, Skipped, adapter_name


class S3Source:
    """Lists s3://BUCKET/PREFIX; credentials from the environment (AWS_*), endpoint from the address."""

    kind = "s3"

    def __init__(self, address: S3Address, client=None, max_file_bytes: int = MAX_WEIGHTS_BYTES,
                 policy: RetryPolicy = DEFAULT_POLICY, checkpoints: str = "final") -> None:
        self.address = address
        self.uri = str(address)
        self.client = client if client is not None else make_s3_client(address.endpoint_url)
        self.max_file_bytes = max_file_bytes
        self.policy = policy
        self.checkpoints = checkpoints

    def _call(self, what: str, fn):
        return call(what, fn, self.policy)

    def _list(self) -> dict[str, RemoteFile]:
        """Every object below the prefix: {key relative to the prefix: the object as listed}."""
        prefix = f"{self.address.prefix}/" if self.address.prefix else ""
        listing: dict[str, RemoteFile] = {}

        def run():
            listing.clear()
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.address.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(prefix):]
                    if key and not key.endswith("/"):
                        listing[key] = RemoteFile(name=key.rpartition("/")[2], size=int(obj["Size"]), etag=obj["ETag"])
            return listing

        return self._call(f"list {self.uri}", run)

    def _uri(self, directory: str) -> str:
        key = "/".join(p for p in (self.address.prefix, directory) if p)
        return f"s3://{self.address.bucket}/{key}" if key else f"s3://{self.address.bucket}"

    def iter_adapters(self) -> Iterator[AdapterRef | Skipped]:
        entries = survey(self._list(), self.checkpoints)
        root_repo = root_is_repo(entries)
        for entry in entries:
            uri = self._uri(entry.directory)
            if isinstance(entry, FullFolder):  # a full fine-tune: compressed against the base it names (issue 17)
                try:
                    yield self._full_ref(entry, uri, root_repo)
                except (SourceError, ValidationError) as err:
                    yield Skipped(uri=uri, reason=str(err))
                continue
            if not isinstance(entry, Found):
                yield Skipped(uri=uri, reason=entry.reason)
                continue
            try:
                yield self._ref(entry, uri, root_repo)
            except (SourceError, ValidationError, AdapterFormatError) as err:
                yield Skipped(uri=uri, reason=str(err))

    def _ref(self, entry: Found, uri: str, root_repo: bool) -> AdapterRef:
        key_dir = "/".join(p for p in (self.address.prefix, entry.directory) if p)
        if key_dir:
            validate_key(key_dir)
        files, layout = entry.files, entry.layout
        check_sizes(files, self.max_file_bytes)
        config: dict = {}
        if layout.config:
            key = f"{key_dir}/{layout.config}" if key_dir else layout.config
            etag = next(f.etag for f in files if f.name == layout.config)
            body = self._call(
                f"{uri}/{layout.config}",
                lambda: self.client.get_object(Bucket=self.address.bucket, Key=key, IfMatch=etag)["Body"].read(),
            )
            config = parse_config(body, f"{uri}/{layout.config}")
        weights = next(f for f in files if f.name == layout.weights)
        facts = listed_facts(self._range_reader(f"{key_dir}/{weights.name}" if key_dir else weights.name, weights.etag),
                             weights, f"{uri}/{weights.name}")
        revision = hashlib.sha256(canonical_json({f.name: f.etag for f in files}).encode()).hexdigest()
        repo, subfolder = repo_split(entry.directory, root_repo)
        top = "/".join(p for p in (self.address.prefix, repo) if p)
        return AdapterRef(
            uri=uri,
            source_uri=self.uri,
            name=adapter_name(top.rsplit("/", 1)[-1] if top else self.address.bucket, subfolder),
            revision=revision,
            files=files,
            peft_type=listed_kind(layout, config, facts),
            base_model=base_model_of(config),
            config=config,
            subfolder=subfolder,
            layout=layout.name,
            dtype=facts.dtype if facts else None,
        )

    def _range_reader(self, key: str, etag: str | None) -> Callable[[int, int], bytes]:
        """``read(start, length)``: that byte range of one object (a ranged GetObject, If-Match its listed ETag)."""
        def read(start: int, length: int) -> bytes:
            def run() -> bytes:
                extra = {"IfMatch": etag} if etag else {}
                response = self.client.get_object(Bucket=self.address.bucket, Key=key,
                                                  Range=f"bytes={start}-{start + length - 1}", **extra)
                body = response["Body"]
                try:
                    if "ContentRange" not in response:  # a store that ignores Range sends the whole object
                        body.read(start)
                    return body.read(length)  # and only ``length`` bytes of it are read
                finally:
                    body.close()

            return self._call(f"s3://{self.address.bucket}/{key} (bytes {start}-{start + length - 1})", run)

        return read

    def _full_ref(self, entry: FullFolder, uri: str, root_repo: bool) -> AdapterRef:
        """A full fine-tune's reference: its model files (revision: their ETags), the base its card or config names."""
        key_dir = "/".join(p for p in (self.address.prefix, entry.directory) if p)
        if key_dir:
            validate_key(key_dir)
        check_sizes(entry.files, self.max_file_bytes)
        etags = {f.name: f.etag for f in entry.files}
        with tempfile.TemporaryDirectory(prefix="compeft-cfg-") as tmp:
            for name in (CONFIG, CARD):
                if name in etags:
                    key = f"{key_dir}/{name}" if key_dir else name
                    body = self._call(f"{uri}/{name}", lambda key=key, etag=etags[name]: self.client.get_object(
                        Bucket=self.address.bucket, Key=key, IfMatch=etag)["Body"].read(1 << 20))
                    (Path(tmp) / name).write_bytes(body)
            config, card = read_json(Path(tmp) / CONFIG, uri), read_card(Path(tmp) / CARD)
        repo, subfolder = repo_split(entry.directory, root_repo)
        top = "/".join(p for p in (self.address.prefix, repo) if p)
        return AdapterRef(uri=uri, source_uri=self.uri, name=adapter_name(top.rsplit("/", 1)[-1] if top else self.address.bucket,
                                                                           subfolder),
                          revision=hashlib.sha256(canonical_json(etags).encode()).hexdigest(), files=entry.files,
                          peft_type=FULL, base_model=declared_base(config, card), config=config, subfolder=subfolder,
                          layout=FULL_LAYOUT)

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
