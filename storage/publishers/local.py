"""Publish into a local directory: ROOT/<name>/[SUBFOLDER/] replaced atomically (rename) when the artifact
changes; the folders of the other adapters of the same repo below it are kept as they are."""

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
from storage.publishers.naming import render_path
from storage.stores.manifest import build_manifest
from storage.values import Provenance, Publication


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
    """name -> sha256 of the files directly in ``directory`` (its subfolders are other adapters'), or None."""
    if not directory.is_dir():
        return None
    return {p.name: sha256_file(p) for p in directory.iterdir() if p.is_file() and not p.is_symlink()}


class LocalPublisher:
    """Copies artifact directories to ROOT/<name>/ (ROOT/<name>/SUBFOLDER/ for an adapter below its repo's root)."""

    def __init__(self, root: str | Path, name_template: str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.destination = str(self.root)
        self.name_template = name_template

    def publish(self, artifact_dir: Path, provenance: Provenance) -> Publication:
        final = self.root / render_path(self.name_template, provenance)
        manifest = build_manifest(Path(artifact_dir))
        try:
            with _locked(self.root):
                if _files(final) == {n: digest for n, (_, digest) in manifest.files.items()}:
                    return Publication(self.destination, str(final), manifest.sha256, created=False)
                with atomic_directory(final, overwrite=True) as tmp:
                    for file_name in manifest.files:
                        shutil.copyfile(Path(artifact_dir) / file_name, tmp / file_name)
                    if final.is_dir():  # the repo's other adapters below this one move along (hard links, no copy)
                        for child in sorted(final.iterdir()):
                            if child.is_dir() and not child.is_symlink() and not child.name.startswith("."):
                                shutil.copytree(child, tmp / child.name, symlinks=True, copy_function=os.link)
        except (OSError, InputError) as err:
            raise PublishError(f"publishing {artifact_dir} to {final} failed: {err}") from err
        return Publication(self.destination, str(final), manifest.sha256, created=True)
