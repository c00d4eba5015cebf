"""Sources (crawlers): find adapters (at any depth) in a local tree, an S3 prefix or on the Hugging Face Hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from storage.addresses import (
    Address,
    HubAuthorAddress,
    HubQueryAddress,
    HubRepoAddress,
    LocalAddress,
    S3Address,
    parse_address,
)
from storage.errors import AddressError
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.validation import MAX_WEIGHTS_BYTES
from storage.values import AdapterRef, Skipped


@runtime_checkable
class Source(Protocol):
    """Somewhere adapters live. ``iter_adapters`` lists without downloading weights."""

    uri: str
    kind: str

    def iter_adapters(self) -> Iterator[AdapterRef | Skipped]:
        """Yield every adapter found (pinned to a revision) and every skipped candidate with its reason."""
        ...

    def fetch(self, ref: AdapterRef, dest_dir: Path) -> Path:
        """Download only the adapter files of ``ref`` into ``dest_dir`` (created), verified; return it."""
        ...


def open_source(
    address: Address | str,
    *,
    s3_endpoint: str | None = None,
    hf_endpoint: str | None = None,
    s3_client=None,
    hf_token: str | bool | None = None,
    retry_policy: RetryPolicy = DEFAULT_POLICY,
    max_file_bytes: int = MAX_WEIGHTS_BYTES,
    checkpoints: str = "final",
) -> Source:
    """Open a source from an address (string or parsed). Credentials default to the environment; ``checkpoints``
    says which ``checkpoint-N/`` training folders are taken (``final`` or ``all``, see ``common.survey``)."""
    if isinstance(address, str):
        address = parse_address(address, s3_endpoint=s3_endpoint, hf_endpoint=hf_endpoint)
    if isinstance(address, LocalAddress):
        from storage.sources.local import LocalSource

        return LocalSource(address.path, max_file_bytes=max_file_bytes, checkpoints=checkpoints)
    if isinstance(address, S3Address):
        from storage.sources.s3 import S3Source

        return S3Source(address, client=s3_client, max_file_bytes=max_file_bytes, policy=retry_policy,
                        checkpoints=checkpoints)
    if isinstance(address, (HubAuthorAddress, HubRepoAddress, HubQueryAddress)):
        from storage.sources.hub import HubSource

        return HubSource(address, token=hf_token, policy=retry_policy, max_file_bytes=max_file_bytes,
                         checkpoints=checkpoints)
    raise AddressError(f"unsupported source address {address!r}")


__all__ = ["AdapterRef", "Skipped", "Source", "open_source"]
