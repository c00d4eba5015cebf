"""Helpers shared by the storage tests (imported as ``storage_testlib``; tests/storage is on sys.path)."""

from __future__ import annotations

import json
import socket
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
