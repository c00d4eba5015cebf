"""Errors raised by the storage package; all are :class:`compeft.errors.CompeftError` subclasses."""

from __future__ import annotations

from compeft.errors import ChecksumError as _ChecksumError
from compeft.errors import CompeftError, InputError


class AddressError(InputError, ValueError):
    """A source/destination address does not follow the address grammar."""


class ValidationError(InputError, ValueError):
    """A repo name, object key or file name is unsafe (traversal, pickle, too large)."""


class SourceError(InputError):
    """A source cannot be read: missing repo/bucket/key, permission denied, malformed listing."""


class TransientError(CompeftError):
    """A network failure, rate limit (429) or server error (5xx) that outlived its retries."""


class StoreError(CompeftError):
    """An artifact store cannot store or return an artifact."""


class ArtifactNotFoundError(StoreError, InputError):
    """No complete artifact with the requested sha256 exists in the store."""

    exit_code = 2


class HashMismatchError(StoreError, _ChecksumError):
    """Downloaded or stored bytes do not match the recorded sha256."""

    exit_code = 2


class PublishError(CompeftError):
    """An artifact could not be published to its destination."""


class RegistryError(CompeftError):
    """The registry database cannot be opened, migrated or queried."""


class NotFoundError(RegistryError, InputError):
    """A registry row (artifact, run, ...) does not exist."""

    exit_code = 2
