"""Publish into a local directory: ROOT/<name>/ replaced atomically (rename) when the artifact changes."""

from __future__ import annotations

import shutil
from pathlib import Path

from compeft.atomic import atomic_directory
from compeft.errors import InputError
from storage.errors import PublishError
from storage.publishers.naming import render_name
from storage.stores.manifest import build_manifest
from storage.values import Provenance, Publication


class LocalPublisher:
    """Copies artifact directories to ROOT/<name>/."""

    def __init__(self, root: str | Path, name_template: str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.destination = str(self.root)
        self.name_template = name_template

    def publish(self, artifact_dir: Path, provenance: Provenance) -> Publication:
        name = render_name(self.name_template, provenance)
        final = self.root / name
        manifest = build_manifest(Path(artifact_dir))
        if final.is_dir():
            try:
                current = build_manifest(final)
            except Exception:  # noqa: BLE001 - anything unreadable there gets replaced
                current = None
            if current is not None and current.files == manifest.files:
                return Publication(self.destination, str(final), manifest.sha256, created=False)
        try:
            with atomic_directory(final, overwrite=True) as tmp:
                for file_name in manifest.files:
                    shutil.copyfile(Path(artifact_dir) / file_name, tmp / file_name)
        except (OSError, InputError) as err:
            raise PublishError(f"publishing {artifact_dir} to {final} failed: {err}") from err
        return Publication(self.destination, str(final), manifest.sha256, created=True)
