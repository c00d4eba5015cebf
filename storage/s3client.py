"""boto3 S3 clients built from an address's endpoint (credentials come only from the environment), and the
one way storage calls them: botocore errors translated, transient ones retried by storage's RetryPolicy
(the clients themselves do not retry, so every call has one retry owner)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from storage.errors import SourceError, TransientError
from storage.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry

_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling", "503", "500"}


def make_s3_client(endpoint_url: str | None = None, *, max_attempts: int = 1) -> Any:
    """A boto3 S3 client; by default botocore makes one attempt per call (``call`` retries)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, s3={"addressing_style": "path"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def error_code(err: ClientError) -> str:
    """The S3 error code of a ClientError (e.g. NoSuchKey, 404, PreconditionFailed)."""
    return str(err.response.get("Error", {}).get("Code", ""))


def translate(err: Exception, what: str) -> Exception:
    """Map a botocore failure to TransientError (retryable) or SourceError (not)."""
    if isinstance(err, ClientError):
        code = error_code(err)
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = err.response.get("Error", {}).get("Message", "") or code
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return TransientError(f"{what}: S3 {code or status}: {message}")
        return SourceError(f"{what}: S3 {code or status}: {message}")
    if isinstance(err, NoCredentialsError):
        return SourceError(f"{what}: no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile")
    if isinstance(err, (EndpointConnectionError, BotoCoreError)):
        return TransientError(f"{what}: {type(err).__name__}: {err}")
    return err


T = TypeVar("T")


def call(what: str, fn: Callable[[], T], policy: RetryPolicy = DEFAULT_POLICY) -> T:
    """``fn()`` (one or more S3 calls), botocore errors translated, transient ones retried under ``policy``."""
    def attempt() -> T:
        try:
            return fn()
        except (ClientError, BotoCoreError) as err:
            raise translate(err, what) from err

    return call_with_retry(attempt, what, policy)
