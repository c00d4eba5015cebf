"""Artifact store in a local directory: ROOT/<sha[:2]>/<sha>/ made visible by one atomic rename."""

from __future__ import annotations

import shutil
from pathlib import Path

from compeft.atomic import atomic_directory
from compeft.errors import DestinationExistsError
from storage.errors import ArtifactNotFoundError, StoreError
from storage.stores.manifest import (
    MANIFEST,
    Manifest,
    build_manifest,
    check_sha,
    materialize,
    verify_file,
)
from storage.values import StoredArtifact


class LocalStore:
    """Content-addressed directory store; temporary copies live under ROOT/.tmp until renamed."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _final(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def uri_for(self, sha256: str) -> str:
        return str(self._final(check_sha(sha256)))

    def exists(self, sha256: str) -> bool:
        return (self._final(check_sha(sha256)) / MANIFEST).is_file()

    def put(self, artifact_dir: Path) -> StoredArtifact:
        manifest = build_manifest(Path(artifact_dir))
        final = self._final(manifest.sha256)
        size = sum(s for s, _ in manifest.files.values())
        if (final / MANIFEST).is_file():
            return StoredArtifact(uri=str(final), sha256=manifest.sha256, bytes=size, created=False)
        try:
            with atomic_directory(final) as tmp:
                for name in manifest.files:
                    shutil.copyfile(Path(artifact_dir) / name, tmp / name)
                    verify_file(tmp / name, name, manifest, str(tmp))
                (tmp / MANIFEST).write_bytes(manifest.to_bytes())
        except DestinationExistsError:
            if (final / MANIFEST).is_file():  # a concurrent writer won the race with the same bytes
                return StoredArtifact(uri=str(final), sha256=manifest.sha256, bytes=size, created=False)
            raise StoreError(f"storing {artifact_dir} in {self.root} failed: {final} exists without {MANIFEST}") from None
        except OSError as err:
            raise StoreError(f"storing {artifact_dir} in {self.root} failed: {err}") from err
        return StoredArtifact(uri=str(final), sha256=manifest.sha256, bytes=size, created=True)

    def get(self, sha256: str, dest: Path) -> Path:
        final = self._final(check_sha(sha256))
        if not (final / MANIFEST).is_file():
            raise ArtifactNotFoundError(f"artifact {sha256} not found in store {self.root}")
        manifest = Manifest.from_bytes((final / MANIFEST).read_bytes(), str(final))
        return materialize(manifest, dest, lambda name, target: shutil.copyfile(final / name, target),
                           f"{self.root}/{sha256}")
