"""Source over the Hugging Face Hub: one repo (or the part of it below a folder), every repo of an author, or a
search query.

Every adapter is pinned to the commit sha seen when it was listed; a repo's files come from the Hub's tree
listing, so adapters in subfolders (peft's multi-adapter saves, per-task folders, training checkpoints) are
found; only each adapter's own files are downloaded, and their LFS sha256s are verified. The listing reads each
adapter's config and its weights' safetensors header (ranged GETs: dtypes, a config-less layout's kind), never
the weights.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compeft.adapters import base_model_of, parse_config
from compeft.errors import AdapterFormatError
from storage.addresses import (
    HubAddress,
    HubAuthorAddress,
    HubQueryAddress,
    HubRepoAddress,
    hub_uri,
    parse_address,
)
from storage.errors import AddressError, SourceError, TransientError, ValidationError
from storage.fullmodels import CARD, CONFIG, FULL, FULL_LAYOUT, FullFolder, declared_base, read_card, read_json
from storage.hub import HubClient
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.sources.common import (
    Found,
    Passed,
    check_sizes,
    fetch_into,
    listed_facts,
    listed_kind,
    not_an_adapter,
    survey,
)
from storage.validation import (
    MAX_WEIGHTS_BYTES,
    validate_repo_id,
    validate_revision,
    validate_subfolder,
)
from storage.values import AdapterRef, RemoteFile, Skipped, adapter_name


class HubSource:
    """Lists adapters on the Hub through ``huggingface_hub`` at the address's endpoint (token: HF_TOKEN)."""

    kind = "hf"

    def __init__(self, address: HubAddress, token: str | bool | None = None, policy: RetryPolicy = DEFAULT_POLICY,
                 max_file_bytes: int = MAX_WEIGHTS_BYTES, checkpoints: str = "final") -> None:
        self.address = address
        self.uri = str(address)
        self.hub = HubClient(address.endpoint, token=token, policy=policy)
        self.max_file_bytes = max_file_bytes
        self.checkpoints = checkpoints
        self.subfolder = address.subfolder if isinstance(address, HubRepoAddress) else ""

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
            uri = hub_uri(repo_id, revision)
            if names is not None:  # the listing's file names show whether the repo holds an adapter: if not, no request
                entries = survey({n: RemoteFile(name=n.rpartition("/")[2]) for n in names}, self.checkpoints)
                if not any(isinstance(e, (Found, FullFolder)) for e in entries):
                    yield from self._no_adapter(repo_id, revision, entries)
                    continue
            try:
                validate_repo_id(repo_id)
                if revision is not None:
                    validate_revision(revision)
                yield from self._inspect(repo_id, revision)
            except (ValidationError, SourceError, TransientError, AdapterFormatError) as err:
                if isinstance(self.address, HubRepoAddress) and not isinstance(err, ValidationError):
                    raise  # a single named repo that cannot be read is an error (retried by the flow), not a skip
                # in a listing, one repo the Hub keeps failing on is recorded and the crawl goes on;
                # it is not registered, so the next run tries it again
                yield Skipped(uri=uri, reason=str(err))

    def _no_adapter(self, repo_id: str, revision: str | None, entries: list[Found | Passed]) -> Iterator[Skipped]:
        """A repo without an adapter: its adapter-like folders with their reasons, else the repo itself."""
        adapter_like = [e for e in entries if isinstance(e, Passed) and e.reason != not_an_adapter()]
        for entry in adapter_like:
            yield Skipped(uri=hub_uri(repo_id, revision, entry.directory), reason=entry.reason)
        if not adapter_like:
            yield Skipped(uri=hub_uri(repo_id, revision, self.subfolder), reason=not_an_adapter())

    def _inspect(self, repo_id: str, revision: str | None) -> Iterator[AdapterRef | Skipped]:
        info = self.hub.model_info(repo_id, revision, files_metadata=False)
        sha = info.sha
        if not sha:
            raise SourceError(f"hf://{repo_id}: the Hub returned no commit sha")
        validate_revision(sha)
        listing = {
            f.path: RemoteFile(name=f.path.rpartition("/")[2], size=f.size, etag=f.blob_id,
                               sha256=f.lfs.sha256 if f.lfs else None)
            for f in self.hub.list_files(repo_id, sha, self.subfolder)
        }
        entries = survey(listing, self.checkpoints)
        if not any(isinstance(e, (Found, FullFolder)) for e in entries):
            yield from self._no_adapter(repo_id, sha, entries)
            return
        for entry in entries:
            uri = hub_uri(repo_id, sha, entry.directory)
            if isinstance(entry, FullFolder):  # a full fine-tune: compressed against the base it names (issue 17)
                try:
                    yield self._full_ref(repo_id, sha, entry)
                except (ValidationError, SourceError) as err:
                    yield Skipped(uri=uri, reason=str(err))
                continue
            if isinstance(entry, Passed):
                if entry.reason != not_an_adapter():  # model folders inside an adapter repo are not worth a line
                    yield Skipped(uri=uri, reason=entry.reason)
                continue
            try:
                yield self._ref(repo_id, sha, entry)
            except (ValidationError, AdapterFormatError) as err:
                yield Skipped(uri=uri, reason=str(err))

    def _ref(self, repo_id: str, sha: str, entry: Found) -> AdapterRef:
        directory, layout = entry.directory, entry.layout
        if directory:
            validate_subfolder(directory)
        uri = hub_uri(repo_id, sha, directory)
        check_sizes(entry.files, self.max_file_bytes)
        config: dict = {}
        if layout.config:
            with tempfile.TemporaryDirectory(prefix="compeft-cfg-") as tmp:
                target = Path(tmp) / layout.config
                self.hub.download(repo_id, f"{directory}/{layout.config}" if directory else layout.config, sha, target)
                config = parse_config(target.read_bytes(), f"{uri}/{layout.config}")
        weights = next(f for f in entry.files if f.name == layout.weights)
        path = f"{directory}/{weights.name}" if directory else weights.name
        facts = listed_facts(lambda start, length: self.hub.read_range(repo_id, path, sha, start, length), weights,
                             f"{uri}/{weights.name}")
        return AdapterRef(
            uri=uri,
            source_uri=self.uri,
            name=adapter_name(repo_id.split("/", 1)[1], directory),
            revision=sha,
            files=entry.files,
            peft_type=listed_kind(layout, config, facts),
            base_model=base_model_of(config),
            config=config,
            subfolder=directory,
            layout=layout.name,
            dtype=facts.dtype if facts else None,
        )

    def _full_ref(self, repo_id: str, sha: str, entry: FullFolder) -> AdapterRef:
        """A full fine-tune's reference: its model files, and the base its card or config names."""
        directory = entry.directory
        if directory:
            validate_subfolder(directory)
        uri = hub_uri(repo_id, sha, directory)
        check_sizes(entry.files, self.max_file_bytes)
        names = {f.name for f in entry.files}
        with tempfile.TemporaryDirectory(prefix="compeft-cfg-") as tmp:
            for name in (CONFIG, CARD):
                if name in names:
                    self.hub.download(repo_id, f"{directory}/{name}" if directory else name, sha, Path(tmp) / name)
            config, card = read_json(Path(tmp) / CONFIG, uri), read_card(Path(tmp) / CARD)
        return AdapterRef(uri=uri, source_uri=self.uri, name=adapter_name(repo_id.split("/", 1)[1], directory), revision=sha,
                          files=entry.files, peft_type=FULL, base_model=declared_base(config, card), config=config,
                          subfolder=directory, layout=FULL_LAYOUT)

    def fetch(self, ref: AdapterRef, dest_dir: Path) -> Path:
        try:
            address = parse_address(ref.uri, hf_endpoint=self.hub.endpoint)
        except AddressError as err:
            raise SourceError(f"{ref.uri}: not a pinned Hub adapter reference ({err})") from err
        if not isinstance(address, HubRepoAddress) or not address.revision:
            raise SourceError(f"{ref.uri}: not a pinned Hub adapter reference")
        folder = address.subfolder

        def download(remote: RemoteFile, target: Path) -> None:
            self.hub.download(address.repo_id, f"{folder}/{remote.name}" if folder else remote.name, address.revision,
                              target)

        return fetch_into(ref, Path(dest_dir), download, self.max_file_bytes)
