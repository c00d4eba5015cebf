"""Source over the Hugging Face Hub: one repo, every repo of an author, or a search query.

Every adapter is pinned to the commit sha seen when it was listed; only adapter_config.json and
adapter_model.safetensors are downloaded, and their LFS sha256s are verified.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compeft.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    detect_peft_type,
    parse_config,
)
from compeft.errors import AdapterFormatError
from storage.addresses import (
    HubAddress,
    HubAuthorAddress,
    HubQueryAddress,
    HubRepoAddress,
)
from storage.errors import SourceError, TransientError, ValidationError
from storage.fullmodels import CARD, CONFIG, FULL, declared_base, is_full_model, model_files, read_card, read_json
from storage.hub import HubClient
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.sources.common import check_sizes, classify, fetch_into
from storage.validation import (
    MAX_WEIGHTS_BYTES,
    validate_repo_id,
    validate_revision,
)
from storage.values import AdapterRef, RemoteFile, Skipped


class HubSource:
    """Lists adapters on the Hub through ``huggingface_hub`` at the address's endpoint (token: HF_TOKEN)."""

    kind = "hf"

    def __init__(self, address: HubAddress, token: str | bool | None = None, policy: RetryPolicy = DEFAULT_POLICY,
                 max_file_bytes: int = MAX_WEIGHTS_BYTES) -> None:
        self.address = address
        self.uri = str(address)
        self.hub = HubClient(address.endpoint, token=token, policy=policy)
        self.max_file_bytes = max_file_bytes

    def _candidates(self) -> list[tuple[str, str | None, list[str] | None]]:
        """(repo_id, revision, file names if the listing gave them) to inspect."""
        address = self.address
        if isinstance(address, HubRepoAddress):
            return [(address.repo_id, address.revision, None)]
        if isinstance(address, HubAuthorAddress):
            models = self.hub.list_models(author=address.author)
        elif isinstance(address, HubQueryAddress):
            filters = [f for f in (address.filter,) if f]
            if address.base_model:
                filters.append(f"base_model:adapter:{address.base_model}")
            query: dict[str, Any] = {"search": address.search, "author": address.author, "limit": address.limit}
            if filters:
                query["filter"] = filters
            models = self.hub.list_models(**{k: v for k, v in query.items() if v is not None})
        else:
            raise SourceError(f"unsupported Hub address {address!r}")
        return [
            (model.id, model.sha, [s.rfilename for s in model.siblings] if model.siblings is not None else None)
            for model in models
        ]

    def iter_adapters(self) -> Iterator[AdapterRef | Skipped]:
        for repo_id, revision, names in self._candidates():
            uri = f"hf://{repo_id}@{revision}" if revision else f"hf://{repo_id}"
            reason = classify(names) if names is not None and not is_full_model(names) else None
            if reason is not None:  # the listing already shows it is no adapter: no extra request
                yield Skipped(uri=uri, reason=reason)
                continue
            try:
                validate_repo_id(repo_id)
                if revision is not None:
                    validate_revision(revision)
                yield self._inspect(repo_id, revision)
            except (ValidationError, SourceError, TransientError, AdapterFormatError) as err:
                if isinstance(self.address, HubRepoAddress) and not isinstance(err, ValidationError):
                    raise  # a single named repo that cannot be read is an error (retried by the flow), not a skip
                # in a listing, one repo the Hub keeps failing on is recorded and the crawl goes on;
                # it is not registered, so the next run tries it again
                yield Skipped(uri=uri, reason=str(err))
            except _NotAdapter as skip:
                yield Skipped(uri=skip.uri, reason=skip.reason)

    def _inspect(self, repo_id: str, revision: str | None) -> AdapterRef:
        info = self.hub.model_info(repo_id, revision)
        sha = info.sha
        if not sha:
            raise SourceError(f"hf://{repo_id}: the Hub returned no commit sha")
        validate_revision(sha)
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        if is_full_model(siblings):
            return self._inspect_full(repo_id, sha, siblings)
        reason = classify(siblings)
        if reason is not None:
            raise _NotAdapter(f"hf://{repo_id}@{sha}", reason)
        files = tuple(
            RemoteFile(
                name=name,
                size=siblings[name].size if siblings[name].size is not None else None,
                etag=siblings[name].blob_id,
                sha256=siblings[name].lfs.sha256 if siblings[name].lfs else None,
            )
            for name in ADAPTER_FILES
        )
        check_sizes(files, self.max_file_bytes)
        with tempfile.TemporaryDirectory(prefix="compeft-cfg-") as tmp:
            target = Path(tmp) / ADAPTER_CONFIG
            self.hub.download(repo_id, ADAPTER_CONFIG, sha, target)
            config = parse_config(target.read_bytes(), f"hf://{repo_id}@{sha}")
        return AdapterRef(
            uri=f"hf://{repo_id}@{sha}",
            source_uri=self.uri,
            name=repo_id.split("/", 1)[1],
            revision=sha,
            files=files,
            peft_type=detect_peft_type(config),
            base_model=config.get("base_model_name_or_path") or None,
            config=config,
        )

    def _inspect_full(self, repo_id: str, sha: str, siblings: dict) -> AdapterRef:
        """A full fine-tune's reference: its model files, and the base its card or config names (issue 17)."""
        uri = f"hf://{repo_id}@{sha}"
        files = tuple(RemoteFile(name=n, size=siblings[n].size, etag=siblings[n].blob_id,
                                 sha256=siblings[n].lfs.sha256 if siblings[n].lfs else None)
                      for n in model_files(siblings))
        check_sizes(files, self.max_file_bytes)
        with tempfile.TemporaryDirectory(prefix="compeft-cfg-") as tmp:
            self.hub.download(repo_id, CONFIG, sha, Path(tmp) / CONFIG)
            config = read_json(Path(tmp) / CONFIG, uri)
            if CARD in siblings:
                self.hub.download(repo_id, CARD, sha, Path(tmp) / CARD)
            card = read_card(Path(tmp) / CARD)
        return AdapterRef(uri=uri, source_uri=self.uri, name=repo_id.split("/", 1)[1], revision=sha, files=files,
                          peft_type=FULL, base_model=declared_base(config, card), config=config)

    def fetch(self, ref: AdapterRef, dest_dir: Path) -> Path:
        if not ref.uri.startswith("hf://") or "@" not in ref.uri:
            raise SourceError(f"{ref.uri}: not a pinned Hub adapter reference")
        repo_id, revision = ref.uri[len("hf://"):].split("@", 1)
        validate_repo_id(repo_id)
        validate_revision(revision)

        def download(remote: RemoteFile, target: Path) -> None:
            if remote.name not in ADAPTER_FILES and not (ref.peft_type == FULL and remote.name in model_files([remote.name])):
                raise ValidationError(f"{ref.uri}: refusing to download {remote.name!r} (not an adapter file)")
            self.hub.download(repo_id, remote.name, revision, target)

        return fetch_into(ref, Path(dest_dir), download, self.max_file_bytes)


class _NotAdapter(Exception):
    """Internal: a listed repo is not a loadable adapter (becomes a Skipped)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(reason)
        self.uri = uri
        self.reason = reason
