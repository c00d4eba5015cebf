"""Write an output directory atomically and durably: build it beside the destination, sync it, then rename
it into place (the one way every artifact, adapter, store entry and publication directory is written)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compeft.errors import DestinationExistsError, InputError


def check_destination(dst: Path, overwrite: bool) -> None:
    """Refuse an existing destination unless overwriting was asked for."""
    if dst.exists() and not overwrite:
        raise DestinationExistsError(f"{dst}: already exists (pass --overwrite to replace it)")
    if dst.exists() and not dst.is_dir():
        raise InputError(f"{dst}: exists and is not a directory")


@contextmanager
def atomic_directory(dst: str | Path, overwrite: bool = False, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``dst`` only if the block finishes without error.

    A crash leaves at most a hidden ``.NAME.tmp-*`` sibling, never a half-written ``dst``; its files are
    synced before the rename and the parent after it. An existing ``dst`` (with ``overwrite``) is moved aside
    first and deleted only after the swap; without ``overwrite``, a ``dst`` that appeared meanwhile (a
    concurrent writer) is a DestinationExistsError and is left as it is. ``durable=False`` skips the syncs, for
    scratch copies that are deleted after use (a sync costs milliseconds per file, as much as a small adapter's work).
    """
    dst = Path(dst)
    check_destination(dst, overwrite)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = dst.parent / f".{dst.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if durable:
            for path in tmp.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    _fsync(path)
            _fsync(tmp)
        check_destination(dst, overwrite)
        backup = dst.parent / f".{dst.name}.old-{tag}"
        if dst.exists():
            os.rename(dst, backup)
        os.rename(tmp, dst)
        shutil.rmtree(backup, ignore_errors=True)
        if durable:
            _fsync(dst.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
