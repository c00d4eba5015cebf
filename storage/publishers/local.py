"""Publish into a local directory: ROOT/<name>/[SUBFOLDER/] replaced atomically (rename) when the artifact
changes; the folders of the other adapters of the same repo below it are kept as they are.

ROOT/<name>/ carries a marker file (naming.MARKER) naming the source repo it was published from, written before
anything else goes there; a directory without one was not written by compeft and is never replaced or deleted
(naming.choose_name picks another name instead)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compeft.atomic import atomic_directory
from compeft.errors import InputError
from compeft.hashing import sha256_file
from storage.errors import PublishError
from storage.publishers.naming import (
    FOREIGN,
    MARKER,
    choose_name,
    marker_source,
    marker_text,
    render_name,
    with_subfolder,
)
from storage.stores.manifest import build_manifest
from storage.values import Provenance, Publication

MAX_MARKER_BYTES = 64 << 10


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the publish root: publications of one repo's adapters nest in one folder."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _files(directory: Path) -> dict[str, str] | None:
    """name -> sha256 of the artifact files directly in ``directory`` (its subfolders are other adapters', the
    marker is compeft's), or None."""
    if not directory.is_dir():
        return None
    return {p.name: sha256_file(p) for p in directory.iterdir() if p.is_file() and not p.is_symlink() and p.name != MARKER}


class LocalPublisher:
    """Copies artifact directories to ROOT/<name>/ (ROOT/<name>/SUBFOLDER/ for an adapter below its repo's root)."""

    def __init__(self, root: str | Path, name_template: str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.destination = str(self.root)
        self.name_template = name_template

    def holder(self, name: str) -> str | None:
        """The source repo whose publications ROOT/<name> holds: None when free, FOREIGN when not compeft's."""
        path = self.root / name
        if not path.exists() and not path.is_symlink():
            return None
        marker = path / MARKER
        if path.is_symlink() or not path.is_dir() or marker.is_symlink() or not marker.is_file():
            return FOREIGN
        if marker.stat().st_size > MAX_MARKER_BYTES:
            return FOREIGN
        return marker_source(marker.read_bytes())

    def publish(self, artifact_dir: Path, provenance: Provenance) -> Publication:
        manifest = build_manifest(Path(artifact_dir))
        base_name = render_name(self.name_template, provenance)
        with_subfolder(base_name, provenance)  # the subfolder is checked before anything is written
        try:
            with _locked(self.root):
                name = choose_name(base_name, provenance, self.holder)
                top, final = self.root / name, self.root / with_subfolder(name, provenance)
                if _files(final) == {n: digest for n, (_, digest) in manifest.files.items()}:
                    return Publication(self.destination, str(final), manifest.sha256, created=False)
                if final != top and not top.exists():  # claim the name before anything goes below it
                    with atomic_directory(top) as claim:
                        (claim / MARKER).write_text(marker_text(provenance), encoding="utf-8")
                with atomic_directory(final, overwrite=True) as tmp:
                    for file_name in manifest.files:
                        shutil.copyfile(Path(artifact_dir) / file_name, tmp / file_name)
                    if final == top:
                        (tmp / MARKER).write_text(marker_text(provenance), encoding="utf-8")
                    if final.is_dir():  # the repo's other adapters below this one move along (hard links, no copy)
                        for child in sorted(final.iterdir()):
                            if child.is_dir() and not child.is_symlink() and not child.name.startswith("."):
                                shutil.copytree(child, tmp / child.name, symlinks=True, copy_function=os.link)
        except (OSError, InputError) as err:
            raise PublishError(f"publishing {artifact_dir} to {self.root} failed: {err}") from err
        return Publication(self.destination, str(final), manifest.sha256, created=True)
