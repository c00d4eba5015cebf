"""Publish to a Hub model repo: create it if missing, then one commit with every artifact file (below the
adapter's folder in its source repo, so a repo of several adapters is republished with the same layout).

The commit message carries the provenance (source repo + revision, options, package version). If the
repo already holds exactly these files, nothing is committed. A commit refused because another one landed
first (HTTP 412, e.g. a sibling adapter of the same repo) is made again on top of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from storage.addresses import HubAuthorAddress, HubRepoAddress, hub_uri
from storage.errors import PublishError
from storage.hub import HubClient
from storage.publishers.naming import render_name, render_path
from storage.retry import DEFAULT_POLICY, RetryPolicy
from storage.stores.manifest import build_manifest
from storage.validation import validate_repo_id
from storage.values import Provenance, Publication


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file (the Hub's blob id for files not stored in LFS)."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


CONFLICT_ATTEMPTS = 5


class HubPublisher:
    """Publishes to ``ORG/<template>`` (or one fixed repo) with the token from HF_TOKEN."""

    def __init__(self, address: HubAuthorAddress | HubRepoAddress, name_template: str,
                 token: str | bool | None = None, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.address = address
        self.destination = str(address)
        self.name_template = name_template
        self.hub = HubClient(address.endpoint, token=token, policy=policy)

    def repo_id_for(self, provenance: Provenance) -> str:
        """The repo this provenance is published to."""
        if isinstance(self.address, HubRepoAddress):
            return self.address.repo_id
        return validate_repo_id(f"{self.address.author}/{render_name(self.name_template, provenance)}")

    def _unchanged(self, info, artifact_dir: Path, names: list[str], folder: str) -> bool:
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        for name in names:
            sibling = siblings.get(f"{folder}/{name}" if folder else name)
            if sibling is None:
                return False
            local = Path(artifact_dir) / name
            if sibling.lfs is not None:
                if sibling.lfs.sha256 != hashlib.sha256(local.read_bytes()).hexdigest():
                    return False
            elif sibling.blob_id != git_blob_sha1(local):
                return False
        return True

    def publish(self, artifact_dir: Path, provenance: Provenance) -> Publication:
        from huggingface_hub import CommitOperationAdd

        manifest = build_manifest(Path(artifact_dir))
        if manifest.sha256 != provenance.artifact_sha256:
            raise PublishError(
                f"{artifact_dir}: compeft.safetensors sha256 {manifest.sha256} does not match the provenance "
                f"({provenance.artifact_sha256})"
            )
        repo_id = self.repo_id_for(provenance)
        folder = provenance.subfolder
        if folder:
            render_path(self.name_template, provenance)  # the subfolder is checked as every destination path is
        uri = f"hf://{repo_id}"
        self.hub.call(f"create {uri}", lambda: self.hub.api.create_repo(repo_id, exist_ok=True), PublishError)
        names = sorted(manifest.files)
        description = json.dumps(
            {
                "source": provenance.source_uri,
                "source_revision": provenance.source_revision,
                "options": dict(provenance.options),
                "compeft_version": provenance.package_version,
                "artifact_sha256": provenance.artifact_sha256,
            },
            indent=2,
            sort_keys=True,
        )
        for attempt in range(CONFLICT_ATTEMPTS):
            info = self.hub.model_info(repo_id, error=PublishError)
            if self._unchanged(info, artifact_dir, names, folder):
                return Publication(self.destination, hub_uri(repo_id, info.sha, folder), info.sha, created=False)

            def commit(parent=info.sha):
                operations = [CommitOperationAdd(f"{folder}/{name}" if folder else name, str(Path(artifact_dir) / name))
                              for name in names]
                return self.hub.api.create_commit(
                    repo_id, operations, commit_message=provenance.summary(), commit_description=description,
                    parent_commit=parent,
                )

            try:
                result = self.hub.call(f"commit to {uri}", commit, PublishError)
            except PublishError as err:
                if "HTTP 412" in str(err) and attempt + 1 < CONFLICT_ATTEMPTS:
                    continue  # another commit landed since model_info: look again and commit on top of it
                raise
            return Publication(self.destination, hub_uri(repo_id, result.oid, folder), result.oid,
                               created=result.oid != info.sha)
        raise PublishError(f"commit to {uri}: still conflicting after {CONFLICT_ATTEMPTS} attempts")
