"""One address grammar for sources and destinations.

- a local path (``/data/adapters``, ``./out``, ``file:///data``);
- ``s3://BUCKET/PREFIX`` (endpoint: explicit, else ``AWS_ENDPOINT_URL``, else AWS);
- ``hf://AUTHOR`` (every adapter repo of a user/org), ``hf://AUTHOR/REPO[@REVISION][/SUB/DIR]`` (one repo, or
  the part of it below a folder), ``hf://?search=TEXT&author=A&filter=TAG&base_model=ID&limit=N`` (a query)
  (endpoint: explicit, else ``HF_ENDPOINT``, else https://huggingface.co).

A revision is one path segment: a branch or tag with a ``/`` in its name is written percent-encoded
(``hf://acme/x@refs%2Fpr%2F1/sub``), as the Hub's own API spells it. Adapters below the root of a repo, bucket
prefix or directory are addressed the same way as whole ones: ``hf://ORG/REPO@SHA/SUB/DIR``,
``s3://BUCKET/PREFIX/SUB/DIR``, ``/path/to/tree/SUB/DIR``.

Addresses never carry credentials; tokens and keys come from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from storage.errors import AddressError, ValidationError
from storage.validation import (
    validate_bucket,
    validate_key,
    validate_namespace,
    validate_repo_id,
    validate_revision,
    validate_subfolder,
)

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
_QUERY_KEYS = ("search", "author", "filter", "base_model", "limit")


@dataclass(frozen=True)
class LocalAddress:
    """A directory on this machine."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class S3Address:
    """A bucket and key prefix ('' for the whole bucket); ``endpoint_url`` None means AWS."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class HubAuthorAddress:
    """Every adapter repo of one Hub user or organization."""

    author: str
    endpoint: str = DEFAULT_HF_ENDPOINT

    def __str__(self) -> str:
        return f"hf://{self.author}"


@dataclass(frozen=True)
class HubRepoAddress:
    """One Hub model repo, optionally at a revision (branch, tag or commit sha) and below a folder
    (``subfolder``, '' for the whole repo)."""

    repo_id: str
    revision: str | None = None
    endpoint: str = DEFAULT_HF_ENDPOINT
    subfolder: str = ""

    @property
    def name(self) -> str:
        """The repo name without the author."""
        return self.repo_id.split("/", 1)[1]

    def __str__(self) -> str:
        return hub_uri(self.repo_id, self.revision, self.subfolder)


def hub_uri(repo_id: str, revision: str | None = None, subfolder: str = "") -> str:
    """``hf://REPO[@REVISION][/SUBFOLDER]``, the revision percent-encoded when it holds a ``/``."""
    text = f"hf://{repo_id}"
    if revision:
        text += "@" + quote(revision, safe="")
    return f"{text}/{subfolder}" if subfolder else text


@dataclass(frozen=True)
class HubQueryAddress:
    """A Hub model search: free text, author, tag filter, base model, result limit."""

    search: str | None = None
    author: str | None = None
    filter: str | None = None
    base_model: str | None = None
    limit: int | None = None
    endpoint: str = DEFAULT_HF_ENDPOINT

    def __str__(self) -> str:
        pairs = [(k, getattr(self, k)) for k in _QUERY_KEYS if getattr(self, k) is not None]
        return "hf://?" + urlencode([(k, str(v)) for k, v in pairs])


Address = LocalAddress | S3Address | HubAuthorAddress | HubRepoAddress | HubQueryAddress
HubAddress = HubAuthorAddress | HubRepoAddress | HubQueryAddress


def resolve_hf_endpoint(explicit: str | None = None) -> str:
    """Hub endpoint: explicit value, else ``HF_ENDPOINT``, else the public Hub (read at call time)."""
    endpoint = explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
    return _check_http_url(endpoint, "Hub endpoint").rstrip("/")


def resolve_s3_endpoint(explicit: str | None = None) -> str | None:
    """S3 endpoint: explicit value, else ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, else None (AWS)."""
    endpoint = explicit or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _check_http_url(endpoint, "S3 endpoint").rstrip("/") if endpoint else None


def _check_http_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressError(f"invalid {what} {url!r}: expected http(s)://HOST[:PORT]")
    if parts.username or parts.password:
        raise AddressError(f"invalid {what}: credentials in the URL are not allowed, use the environment")
    return url


def parse_address(text: str, *, s3_endpoint: str | None = None, hf_endpoint: str | None = None) -> Address:
    """Parse a source/destination address string into a typed address (see module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise AddressError("empty address: expected a path, s3://BUCKET/PREFIX or hf://...")
    text = text.strip()
    try:
        if text.startswith("s3://"):
            return _parse_s3(text, resolve_s3_endpoint(s3_endpoint))
        if text.startswith("hf://"):
            return _parse_hub(text, resolve_hf_endpoint(hf_endpoint))
        if text.startswith("file://"):
            return LocalAddress(Path(unquote(urlsplit(text).path)).expanduser())
    except ValidationError as err:
        raise AddressError(f"invalid address {text!r}: {err}") from err
    if "://" in text:
        raise AddressError(f"invalid address {text!r}: unknown scheme (use a path, s3:// or hf://)")
    return LocalAddress(Path(text).expanduser())


def _parse_s3(text: str, endpoint: str | None) -> S3Address:
    rest = text[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise AddressError(f"invalid address {text!r}: credentials or ports do not belong in s3:// addresses")
    validate_bucket(bucket)
    prefix = prefix.strip("/")
    validate_key(prefix, allow_empty=True)
    return S3Address(bucket=bucket, prefix=prefix, endpoint_url=endpoint)


def _parse_hub(text: str, endpoint: str) -> HubAddress:
    rest = text[len("hf://"):]
    path, sep, query = rest.partition("?")
    if sep:
        if path.strip("/"):
            raise AddressError(f"invalid address {text!r}: a query is written hf://?search=...&author=...")
        return _parse_hub_query(text, query, endpoint)
    if "@" in path.split("/")[0] and "/" in path or ":" in path:
        raise AddressError(f"invalid address {text!r}: credentials do not belong in hf:// addresses")
    path = path.strip("/")
    repo, at, rest = path.partition("@")
    if not repo:
        raise AddressError(f"invalid address {text!r}: expected hf://AUTHOR or hf://AUTHOR/REPO[@REVISION][/SUB/DIR]")
    if at:
        revision, _, subfolder = rest.partition("/")
        if repo.count("/") > 1:
            raise AddressError(f"invalid address {text!r}: the revision goes right after the repo "
                               "(hf://AUTHOR/REPO@REVISION/SUB/DIR)")
        revision = unquote(revision)
        if not revision:
            raise AddressError(f"invalid address {text!r}: empty revision after '@'")
    else:
        repo, revision, subfolder = "/".join(repo.split("/")[:2]), "", "/".join(repo.split("/")[2:])
    if "/" not in repo:
        if at:
            raise AddressError(f"invalid address {text!r}: a revision needs a repo (hf://AUTHOR/REPO@REV)")
        return HubAuthorAddress(author=validate_namespace(repo), endpoint=endpoint)
    validate_repo_id(repo)
    if revision:
        validate_revision(revision)
    if subfolder:
        validate_subfolder(subfolder)
    return HubRepoAddress(repo_id=repo, revision=revision or None, endpoint=endpoint, subfolder=subfolder)


def _parse_hub_query(text: str, query: str, endpoint: str) -> HubQueryAddress:
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _QUERY_KEYS:
            raise AddressError(f"invalid address {text!r}: unknown query key {key!r} (allowed: {', '.join(_QUERY_KEYS)})")
        if key in values:
            raise AddressError(f"invalid address {text!r}: query key {key!r} given twice")
        if not value:
            raise AddressError(f"invalid address {text!r}: query key {key!r} is empty")
        values[key] = value
    if not values:
        raise AddressError(f"invalid address {text!r}: empty query")
    limit = None
    if "limit" in values:
        try:
            limit = int(values["limit"])
        except ValueError as err:
            raise AddressError(f"invalid address {text!r}: limit must be a positive integer") from err
        if limit <= 0:
            raise AddressError(f"invalid address {text!r}: limit must be a positive integer")
    if "author" in values:
        validate_namespace(values["author"])
    if "base_model" in values and "/" in values["base_model"]:
        validate_repo_id(values["base_model"])
    return HubQueryAddress(
        search=values.get("search"),
        author=values.get("author"),
        filter=values.get("filter"),
        base_model=values.get("base_model"),
        limit=limit,
        endpoint=endpoint,
    )
