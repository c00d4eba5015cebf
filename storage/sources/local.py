"""Source over a local directory tree: every folder holding an adapter (at any depth) is one adapter."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from compeft.adapters import base_model_of, parse_config
from compeft.errors import AdapterFormatError
from storage.adapter_facts import header_facts
from storage.errors import SourceError, ValidationError
from storage.fullmodels import FULL, FullFolder, local_full_ref
from storage.hashing import content_hash, file_hashes
from storage.sources.common import Found, check_sizes, fetch_into, listed_kind, repo_split, root_is_repo, survey
from storage.validation import MAX_WEIGHTS_BYTES
from storage.values import AdapterRef, RemoteFile, Skipped, adapter_name


class LocalSource:
    """Walks ``root`` (symlinks not followed); revision = content hash of the adapter files."""

    kind = "local"

    def __init__(self, root: str | Path, max_file_bytes: int = MAX_WEIGHTS_BYTES, checkpoints: str = "final") -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        self.max_file_bytes = max_file_bytes
        self.checkpoints = checkpoints

    def _listing(self) -> dict[str, RemoteFile]:
        listing: dict[str, RemoteFile] = {}
        for current, dirs, names in os.walk(self.root, followlinks=False):
            dirs.sort()
            relative = Path(current).relative_to(self.root).as_posix()
            for name in names:
                listing[name if relative == "." else f"{relative}/{name}"] = RemoteFile(name=name)
        return listing

    def iter_adapters(self) -> Iterator[AdapterRef | Skipped]:
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: source directory does not exist")
        entries = survey(self._listing(), self.checkpoints)
        root_repo = root_is_repo(entries)
        for entry in entries:
            directory = self.root / entry.directory if entry.directory else self.root
            if isinstance(entry, FullFolder):  # a full fine-tune: compressed against the base it names (issue 17)
                repo, subfolder = repo_split(entry.directory, root_repo)
                name = adapter_name((self.root / repo).name if repo else self.root.name, subfolder)
                try:
                    yield local_full_ref(directory, self.uri, name, subfolder)
                except (SourceError, OSError) as err:
                    yield Skipped(uri=str(directory), reason=str(err))
                continue
            if not isinstance(entry, Found):
                yield Skipped(uri=str(directory), reason=entry.reason)
                continue
            try:
                yield self._ref(directory, entry, root_repo)
            except (SourceError, ValidationError, AdapterFormatError, OSError) as err:
                yield Skipped(uri=str(directory), reason=str(err))

    def _ref(self, directory: Path, entry: Found, root_repo: bool) -> AdapterRef:
        layout = entry.layout
        if any((directory / name).is_symlink() for name in layout.files):
            raise SourceError(f"{directory}: adapter files must not be symlinks")
        files = tuple(RemoteFile(name=n, size=(directory / n).stat().st_size) for n in layout.files)
        check_sizes(files, self.max_file_bytes)
        config = parse_config((directory / layout.config).read_bytes(), str(directory)) if layout.config else {}
        hashes = file_hashes(directory, list(layout.files))
        files = tuple(RemoteFile(name=f.name, size=f.size, sha256=hashes[f.name]) for f in files)
        try:
            facts = header_facts(directory / layout.weights)
        except SourceError:  # the header's faults are reported when the adapter is read; the listing goes on
            facts = None
        repo, subfolder = repo_split(entry.directory, root_repo)
        return AdapterRef(
            uri=str(directory),
            source_uri=self.uri,
            name=adapter_name((self.root / repo).name if repo else self.root.name, subfolder),
            revision=content_hash(hashes),
            files=files,
            peft_type=listed_kind(layout, config, facts),
            base_model=base_model_of(config),
            config=config,
            subfolder=subfolder,
            layout=layout.name,
            dtype=facts.dtype if facts else None,
        )

    def fetch(self, ref: AdapterRef, dest_dir: Path) -> Path:
        source = Path(ref.uri)
        if self.root not in (source, *source.parents):
            raise SourceError(f"{ref.uri}: not inside source {self.root}")
        if ref.peft_type == FULL and any((source / f.name).is_symlink() for f in ref.files):
            raise SourceError(f"{ref.uri}: model files must not be symlinks")
        return fetch_into(ref, Path(dest_dir), lambda remote, target: shutil.copyfile(source / remote.name, target),
                          self.max_file_bytes)
