"""Rules every source applies to a candidate adapter: which files, pickles, size caps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from compeft.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    MAX_CONFIG_BYTES,
    PICKLE_SUFFIXES,
)
from compeft.atomic import atomic_directory
from compeft.hashing import sha256_file
from storage.errors import HashMismatchError, SourceError
from storage.validation import check_size
from storage.values import AdapterRef, RemoteFile

PICKLE_WEIGHTS = tuple(f"adapter_model{suffix}" for suffix in PICKLE_SUFFIXES)


def classify(names: Iterable[str]) -> str | None:
    """None if ``names`` hold a loadable adapter, else why not (for a :class:`Skipped`)."""
    present = set(names)
    if ADAPTER_CONFIG not in present:
        return "not a PEFT adapter: no adapter_config.json"
    if ADAPTER_WEIGHTS in present:
        return None
    pickles = sorted(present.intersection(PICKLE_WEIGHTS))
    if pickles:
        return f"unsupported weights {pickles[0]}: pickle formats are never loaded, only adapter_model.safetensors"
    return "adapter_config.json without adapter_model.safetensors"


def check_sizes(files: Iterable[RemoteFile], max_file_bytes: int) -> None:
    """Raise ValidationError if any listed file is over its cap (configs: MAX_CONFIG_BYTES)."""
    for f in files:
        check_size(f.name, f.size, MAX_CONFIG_BYTES if f.name == ADAPTER_CONFIG else max_file_bytes)


def fetch_into(
    ref: AdapterRef, dest_dir: Path, download: Callable[[RemoteFile, Path], None], max_file_bytes: int
) -> Path:
    """Download each file of ``ref`` via ``download(file, path)`` into a hidden temp dir, verify, rename."""
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise SourceError(f"{dest_dir}: destination for {ref.uri} is not empty")
    if dest_dir.exists():
        dest_dir.rmdir()
    with atomic_directory(dest_dir, durable=False) as tmp:  # a scratch copy for one run
        for remote in ref.files:
            target = tmp / remote.name
            download(remote, target)
            size = target.stat().st_size
            check_size(f"{ref.uri}/{remote.name}", size, MAX_CONFIG_BYTES if remote.name == ADAPTER_CONFIG else max_file_bytes)
            if remote.size is not None and size != remote.size:
                raise HashMismatchError(f"{ref.uri}/{remote.name}: got {size} bytes, listing said {remote.size}")
            if remote.sha256 is not None and sha256_file(target) != remote.sha256:
                raise HashMismatchError(f"{ref.uri}/{remote.name}: sha256 does not match the listing")
    return dest_dir
