"""Thin wrapper over ``huggingface_hub`` with an explicit endpoint and token, timeouts, retries and error mapping.

429/5xx/network failures and timeouts become :class:`storage.retry.RetryableError` and are retried with backoff;
any other HTTP error (4xx) is raised at once as the caller's error class (SourceError, PublishError).
huggingface_hub's shared HTTP client waits forever by default (``timeout=None``, and ``model_info`` passes None
explicitly: a stalled Hub hangs a listing, a download or a commit for good); every Hub call here waits at most
``COMPEFT_HUB_TIMEOUT`` seconds (default 60) for each read or write, then it is a timeout, retried like any
network error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from storage.errors import CompeftError, SourceError
from storage.retry import DEFAULT_POLICY, RetryableError, RetryPolicy, call_with_retry

T = TypeVar("T")
TOKEN_ENV = "HF_TOKEN"
TIMEOUT_ENV = "COMPEFT_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
_RETRY_STATUSES = {429, 500, 502, 503, 504}


def hub_timeout() -> float:
    """Seconds a Hub request may wait for each read or write: COMPEFT_HUB_TIMEOUT, else 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        from compeft.errors import OptionError

        raise OptionError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds > 0")
    return value


def _client_with_timeouts():
    """huggingface_hub's default HTTP client (its request hooks, redirects) with compeft's timeouts."""
    import httpx2
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()
    seconds = hub_timeout()
    client.timeout = httpx2.Timeout(seconds, connect=min(seconds, 10.0))
    return client


_installed: list[float] = []  # the timeout huggingface_hub's shared client was last built with


def use_timeouts() -> None:
    """Make huggingface_hub's shared client (every HfApi call and download) use compeft's timeouts; it is rebuilt
    only when COMPEFT_HUB_TIMEOUT changed (rebuilding closes the client other threads may be using)."""
    from huggingface_hub import set_client_factory

    seconds = hub_timeout()  # a bad value is an error here, not inside the client factory
    if _installed != [seconds]:
        set_client_factory(_client_with_timeouts)
        _installed[:] = [seconds]


def token_from_env() -> str | bool:
    """The Hub token from ``HF_TOKEN``, or False (anonymous; never a token file on disk)."""
    return os.environ.get(TOKEN_ENV) or False


class HubClient:
    """Calls the Hub at ``endpoint`` through huggingface_hub; ``token`` is never logged or stored."""

    def __init__(self, endpoint: str, token: str | bool | None = None, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        from huggingface_hub import HfApi

        self.endpoint = endpoint.rstrip("/")
        use_timeouts()
        self._token = token_from_env() if token is None else token
        self.policy = policy
        self.api = HfApi(endpoint=self.endpoint, token=self._token, library_name="compeft")

    def __repr__(self) -> str:
        return f"HubClient(endpoint={self.endpoint!r})"

    def call(self, what: str, fn: Callable[[], T], error: type[CompeftError] = SourceError) -> T:
        """Run ``fn`` with retries on transient failures; other HTTP errors become ``error``."""
        return call_with_retry(lambda: _translate(what, fn, error), what, self.policy)

    def list_models(self, **query: Any) -> list[Any]:
        """All ModelInfo matching ``query`` (author, search, filter, limit), with siblings and sha."""
        return self.call("list Hub models", lambda: list(self.api.list_models(full=True, **query)))

    def model_info(self, repo_id: str, revision: str | None = None, error: type[CompeftError] = SourceError,
                   files_metadata: bool = True) -> Any:
        """ModelInfo of one repo at a revision (with file sizes and LFS sha256s unless ``files_metadata`` is off)."""
        return self.call(
            f"hf://{repo_id}@{revision or 'main'}",
            lambda: self.api.model_info(repo_id, revision=revision, files_metadata=files_metadata,
                                        timeout=hub_timeout()),
            error,
        )

    def list_files(self, repo_id: str, revision: str, path: str = "") -> list[Any]:
        """Every file (RepoFile: path, size, blob id, LFS sha256) of a repo at a revision, below ``path``, from the
        Hub's paginated tree listing (the whole listing is read again when a page has to be retried)."""
        from huggingface_hub.hf_api import RepoFile

        def run() -> list[Any]:
            entries = self.api.list_repo_tree(repo_id, path_in_repo=path or None, recursive=True, revision=revision)
            return [entry for entry in entries if isinstance(entry, RepoFile)]

        return self.call(f"hf://{repo_id}@{revision}/{path}".rstrip("/") + " (tree)", run)

    def download(self, repo_id: str, filename: str, revision: str, dest: Path) -> Path:
        """Download one file of a repo at ``revision`` to the path ``dest`` (no shared cache, no copy)."""
        from huggingface_hub import hf_hub_download

        dest = Path(dest)

        def fetch() -> Path:
            # local_dir next to dest (same filesystem) so the finished file is renamed, not copied;
            # huggingface_hub keeps its bookkeeping in that scratch dir, never in the destination.
            with tempfile.TemporaryDirectory(prefix=".compeft-hf-", dir=dest.parent) as scratch:
                downloaded = hf_hub_download(
                    repo_id, filename, revision=revision, endpoint=self.endpoint, token=self._token,
                    local_dir=scratch, library_name="compeft", etag_timeout=hub_timeout(),
                )
                os.replace(downloaded, dest)
            return dest

        return self.call(f"hf://{repo_id}@{revision}/{filename}", fetch)

    def read_range(self, repo_id: str, filename: str, revision: str, start: int, length: int) -> bytes:
        """Bytes ``start`` .. ``start + length - 1`` of one file of a repo at ``revision``: a GET of its resolve URL
        with a Range header (redirects followed, as downloads do); never more than ``length`` bytes are read."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=self.endpoint)
        headers = {**build_hf_headers(token=self._token, library_name="compeft"),
                   "Range": f"bytes={start}-{start + length - 1}"}

        def fetch() -> bytes:
            with get_session().stream("GET", url, headers=headers, timeout=hub_timeout()) as response:
                if response.status_code >= 400:
                    response.read()  # the error's message is in the body
                    hf_raise_for_status(response)
                skip = start if response.status_code == 200 else 0  # a server that ignores Range sends the whole file
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) >= skip + length:
                        break
            return bytes(data[skip : skip + length])

        return self.call(f"hf://{repo_id}@{revision}/{filename} (bytes {start}-{start + length - 1})", fetch)


def _translate(what: str, fn: Callable[[], T], error: type[CompeftError]) -> T:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return fn()
    except HfHubHTTPError as err:
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        message = _one_line(response.headers.get("X-Error-Message") if response is not None else None, err)
        if status in _RETRY_STATUSES or status is None:
            raise RetryableError(f"{what}: HTTP {status}: {message}", _retry_after(response)) from err
        raise error(f"{what}: HTTP {status}: {message}") from err
    except (httpx2.TransportError, httpx2.TimeoutException) as err:
        raise RetryableError(f"{what}: network error: {type(err).__name__}: {_one_line(None, err)}") from err
    except OfflineModeIsEnabled as err:
        raise error(f"{what}: HF_HUB_OFFLINE is set, cannot reach the Hub") from err
    except LocalEntryNotFoundError as err:  # a download's network failure, after huggingface_hub's own retries
        raise error(f"{what}: cannot reach the Hub ({type(err).__name__})") from err


def _retry_after(response) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _one_line(preferred: str | None, err: Exception) -> str:
    text = preferred or str(err) or type(err).__name__
    return text.strip().splitlines()[0]
