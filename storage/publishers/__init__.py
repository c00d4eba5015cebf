"""Publishers: put a compressed artifact where users fetch it (local dir, S3 prefix, Hub repo)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from storage.addresses import (
    Address,
    HubAuthorAddress,
    HubRepoAddress,
    LocalAddress,
    S3Address,
    parse_address,
)
from storage.errors import AddressError
from storage.publishers.naming import DEFAULT_HUB_TEMPLATE, DEFAULT_TEMPLATE
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.values import Provenance, Publication


@runtime_checkable
class Publisher(Protocol):
    """A destination; publishing the same artifact twice writes nothing new."""

    destination: str

    def publish(self, artifact_dir: Path, provenance: Provenance) -> Publication:
        """Publish ``artifact_dir`` under the name derived from ``provenance.source_name``."""
        ...


def open_publisher(
    address: Address | str,
    *,
    name_template: str | None = None,
    s3_endpoint: str | None = None,
    hf_endpoint: str | None = None,
    s3_client=None,
    hf_token: str | bool | None = None,
    retry_policy: RetryPolicy = DEFAULT_POLICY,
) -> Publisher:
    """Open a publisher for a destination address.

    ``hf://ORG`` publishes to ``ORG/<template>`` (default ``{name}-compeft``); ``hf://ORG/REPO`` to that
    exact repo; ``s3://BUCKET/PREFIX`` and local paths to ``PREFIX/<template>/`` (default ``{name}``).
    """
    if isinstance(address, str):
        address = parse_address(address, s3_endpoint=s3_endpoint, hf_endpoint=hf_endpoint)
    if isinstance(address, LocalAddress):
        from storage.publishers.local import LocalPublisher

        return LocalPublisher(address.path, name_template or DEFAULT_TEMPLATE)
    if isinstance(address, S3Address):
        from storage.publishers.s3 import S3Publisher

        return S3Publisher(address, name_template or DEFAULT_TEMPLATE, client=s3_client)
    if isinstance(address, (HubAuthorAddress, HubRepoAddress)):
        from storage.publishers.hub import HubPublisher

        if isinstance(address, HubRepoAddress) and address.revision:
            raise AddressError(f"invalid destination {address}: publish to a repo, not a revision")
        return HubPublisher(address, name_template or DEFAULT_HUB_TEMPLATE, token=hf_token, policy=retry_policy)
    raise AddressError(f"invalid destination {address}: publish to a path, s3://BUCKET/PREFIX, hf://ORG or hf://ORG/REPO")


__all__ = ["Provenance", "Publication", "Publisher", "open_publisher"]
