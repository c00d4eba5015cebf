"""boto3 S3 clients built from an address's endpoint; credentials come only from the environment."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from storage.errors import SourceError, TransientError

_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling", "503", "500"}


def make_s3_client(endpoint_url: str | None = None, *, max_attempts: int = 5) -> Any:
    """A boto3 S3 client; boto3 itself retries throttling/5xx (standard mode) up to ``max_attempts``."""
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
