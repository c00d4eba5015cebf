"""Publish into a local directory: ROOT/<name>/ replaced atomically (rename) when the artifact changes.

Each publication carries a marker file (naming.MARKER) naming its source; a directory without one was not
written by compeft and is never replaced or deleted (naming.choose_name picks another name instead)."""

from __future__ import annotations

import shutil
from pathlib import Path

from compeft.atomic import atomic_directory
from compeft.errors import InputError
from storage.errors import PublishError
from storage.publishers.naming import FOREIGN, MARKER, choose_name, marker_source, marker_text, render_name
from storage.stores.manifest import build_manifest
from storage.values import Provenance, Publication

MAX_MARKER_BYTES = 64 << 10


class LocalPublisher:
    """Copies artifact directories to ROOT/<name>/."""

    def __init__(self, root: str | Path, name_template: str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.destination = str(self.root)
        self.name_template = name_template

    def holder(self, name: str) -> str | None:
        """The source whose publication ROOT/<name> holds: None when free, FOREIGN when not compeft's."""
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
        name = choose_name(render_name(self.name_template, provenance), provenance, self.holder)
        final = self.root / name
        manifest = build_manifest(Path(artifact_dir))
        if final.is_dir():
            try:
                current = build_manifest(final)
            except Exception:  # noqa: BLE001 - an unreadable publication of this source gets replaced
                current = None
            if current is not None and {n: f for n, f in current.files.items() if n != MARKER} == manifest.files:
                return Publication(self.destination, str(final), manifest.sha256, created=False)
        try:
            with atomic_directory(final, overwrite=True) as tmp:
                for file_name in manifest.files:
                    shutil.copyfile(Path(artifact_dir) / file_name, tmp / file_name)
                (tmp / MARKER).write_text(marker_text(provenance), encoding="utf-8")
                if self.holder(name) not in (None, provenance.source_uri):  # appeared meanwhile: not ours to replace
                    raise PublishError(f"{final}: another source's publication or a foreign directory appeared there")
        except (OSError, InputError) as err:
            raise PublishError(f"publishing {artifact_dir} to {final} failed: {err}") from err
        return Publication(self.destination, str(final), manifest.sha256, created=True)
