"""Where a publisher may write: never at, inside or around the source it compresses or the artifact store, so
that a publication can never replace a source adapter or a stored artifact (``catalog CAT --publish-to CAT``
is refused up front, in one line, before anything is crawled)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

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


def _parts(address: Address) -> tuple[str, tuple[str, ...]] | None:
    """(a namespace, path components) placing ``address`` in one tree per scheme and endpoint; None where a
    place cannot be named (a Hub search without an author)."""
    if isinstance(address, LocalAddress):
        return "file", Path(address.path).expanduser().resolve().parts
    if isinstance(address, S3Address):
        return f"s3 {address.endpoint_url or ''}", (address.bucket, *filter(None, address.prefix.split("/")))
    if isinstance(address, HubAuthorAddress):
        return f"hf {address.endpoint}", (address.author,)
    if isinstance(address, HubRepoAddress):
        return f"hf {address.endpoint}", tuple(address.repo_id.split("/"))
    if isinstance(address, HubQueryAddress) and address.author:
        return f"hf {address.endpoint}", (address.author,)
    return None


def relation(a: Address, b: Address) -> str | None:
    """How ``a`` lies to ``b``: "the same place as", "inside" or "around" (containing), or None when apart."""
    pa, pb = _parts(a), _parts(b)
    if pa is None or pb is None or pa[0] != pb[0]:
        return None
    (_, x), (_, y) = pa, pb
    if x == y:
        return "the same place as"
    if x[: len(y)] == y:
        return "inside"
    if y[: len(x)] == x:
        return "around"
    return None


def check_publish_destination(destination: str, sources: Iterable[str], store: str | None, *,
                              s3_endpoint: str | None = None, hf_endpoint: str | None = None) -> None:
    """Refuse (AddressError, one line) a publish destination equal to, inside or containing a source or the
    artifact store."""
    def parse(text: str) -> Address:
        return parse_address(text, s3_endpoint=s3_endpoint, hf_endpoint=hf_endpoint)

    dest = parse(destination)
    places = [("source", s) for s in sources] + ([("artifact store", store)] if store else [])
    for what, text in places:
        where = relation(dest, parse(text))
        if where is not None:
            raise AddressError(f"publish destination {destination} is {where} the {what} {text}: "
                               f"publishing there could replace what it holds; choose a destination apart from both")
