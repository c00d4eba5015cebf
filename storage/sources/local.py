"""Source over a local directory tree: every directory holding an adapter is one adapter."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from compeft.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    PICKLE_SUFFIXES,
    detect_peft_type,
    parse_config,
)
from compeft.errors import AdapterFormatError
from storage.errors import SourceError, ValidationError
from storage.fullmodels import FULL, is_full_model, local_full_ref
from storage.hashing import content_hash, file_hashes
from storage.sources.common import check_sizes, classify, fetch_into
from storage.validation import MAX_WEIGHTS_BYTES
from storage.values import AdapterRef, RemoteFile, Skipped

MODEL_MARKERS = frozenset({"config.json", "model.safetensors.index.json"})
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


class LocalSource:
    """Walks ``root`` (symlinks not followed); revision = content hash of the adapter files."""

    kind = "local"

    def __init__(self, root: str | Path, max_file_bytes: int = MAX_WEIGHTS_BYTES) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        self.max_file_bytes = max_file_bytes

    def iter_adapters(self) -> Iterator[AdapterRef | Skipped]:
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: source directory does not exist")
        for current, dirs, names in os.walk(self.root, followlinks=False):
            dirs.sort()
            directory = Path(current)
            if ADAPTER_CONFIG not in names:
                if is_full_model(names):  # a full fine-tune: compressed against the base it names (issue 17)
                    try:
                        yield local_full_ref(directory, self.uri, directory.name if directory != self.root else self.root.name)
                    except (SourceError, OSError) as err:
                        yield Skipped(uri=str(directory), reason=str(err))
                    continue
                if MODEL_MARKERS.intersection(names) or any(n.endswith(WEIGHT_SUFFIXES) for n in names):
                    yield Skipped(uri=str(directory), reason=f"no {ADAPTER_CONFIG}: a model directory, not a PEFT adapter")
                continue
            reason = classify(names)
            if reason is not None:
                yield Skipped(uri=str(directory), reason=reason)
                continue
            try:
                yield self._ref(directory)
            except (SourceError, ValidationError, AdapterFormatError, OSError) as err:
                yield Skipped(uri=str(directory), reason=str(err))

    def _ref(self, directory: Path) -> AdapterRef:
        if any((directory / name).is_symlink() for name in ADAPTER_FILES):
            raise SourceError(f"{directory}: adapter files must not be symlinks")
        files = tuple(RemoteFile(name=n, size=(directory / n).stat().st_size) for n in ADAPTER_FILES)
        check_sizes(files, self.max_file_bytes)
        config = parse_config((directory / ADAPTER_CONFIG).read_bytes(), str(directory))
        hashes = file_hashes(directory, list(ADAPTER_FILES))
        files = tuple(RemoteFile(name=f.name, size=f.size, sha256=hashes[f.name]) for f in files)
        return AdapterRef(
            uri=str(directory),
            source_uri=self.uri,
            name=directory.name if directory != self.root else self.root.name,
            revision=content_hash(hashes),
            files=files,
            peft_type=detect_peft_type(config),
            base_model=config.get("base_model_name_or_path") or None,
            config=config,
        )

    def fetch(self, ref: AdapterRef, dest_dir: Path) -> Path:
        source = Path(ref.uri)
        if self.root not in (source, *source.parents):
            raise SourceError(f"{ref.uri}: not inside source {self.root}")
        if ref.peft_type == FULL and any((source / f.name).is_symlink() for f in ref.files):
            raise SourceError(f"{ref.uri}: model files must not be symlinks")
        return fetch_into(ref, Path(dest_dir), lambda remote, target: shutil.copyfile(source / remote.name, target),
                          self.max_file_bytes)
