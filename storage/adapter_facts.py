"""Facts about an adapter directory for the registry: hashes, PEFT type, rank, targets, parameter count.

Reads only ``adapter_config.json`` and the safetensors header (no tensor data, no torch).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from compeft.adapters import ADAPTER_CONFIG, ADAPTER_FILES, ADAPTER_WEIGHTS, detect_peft_type
from storage.errors import SourceError
from storage.hashing import content_hash, file_hashes
from storage.registry.records import AdapterRecord
from storage.validation import MAX_CONFIG_BYTES

_MAX_HEADER = 100 * 1024 * 1024
__all__ = ["ADAPTER_CONFIG", "ADAPTER_FILES", "ADAPTER_WEIGHTS", "detect_peft_type", "parse_config"]


def parse_config(data: bytes, where: str) -> dict[str, Any]:
    """Decode adapter_config.json bytes into a dict; SourceError naming ``where`` otherwise."""
    if len(data) > MAX_CONFIG_BYTES:
        raise SourceError(f"{where}: adapter_config.json is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SourceError(f"{where}: adapter_config.json is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise SourceError(f"{where}: adapter_config.json is not a JSON object")
    return config


def safetensors_parameter_count(path: Path) -> int:
    """Number of parameters in a safetensors file, from its header only."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise SourceError(f"{path}: truncated safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise SourceError(f"{path}: safetensors header of {length} bytes is implausibly large")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SourceError(f"{path}: safetensors header is not valid JSON") from err
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry.get("shape", []):
            count *= int(dim)
        total += count
    return total


def adapter_record(directory: str | Path, *, uri: str, repo: str, revision: str | None) -> AdapterRecord:
    """Build the registry record of a fetched adapter directory."""
    root = Path(directory)
    hashes = file_hashes(root, list(ADAPTER_FILES))
    config = parse_config((root / ADAPTER_CONFIG).read_bytes(), str(root))
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = (targets,)
    elif isinstance(targets, (list, tuple)):
        targets = tuple(sorted(str(t) for t in targets))
    else:
        targets = None
    rank = config.get("r")
    return AdapterRecord(
        uri=uri,
        repo=repo,
        revision=revision,
        content_sha256=content_hash(hashes),
        file_hashes=hashes,
        peft_type=detect_peft_type(config),
        base_model=config.get("base_model_name_or_path") or None,
        rank=rank if isinstance(rank, int) else None,
        target_modules=targets,
        parameter_count=safetensors_parameter_count(root / ADAPTER_WEIGHTS),
        bytes=sum((root / name).stat().st_size for name in ADAPTER_FILES),
    )
