"""Facts about an adapter directory for the registry: hashes, PEFT type, rank, targets, parameter count.

Reads only ``adapter_config.json`` and the safetensors header (no tensor data).
"""

from __future__ import annotations

import math
from pathlib import Path

from compeft.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    ADAPTER_WEIGHTS,
    base_model_of,
    detect_peft_type,
    parse_config,
)
from compeft.safetensors_header import METADATA, read_header
from storage.errors import SourceError
from storage.hashing import content_hash, file_hashes
from storage.registry.records import AdapterRecord


def safetensors_parameter_count(path: Path) -> int:
    """Number of parameters in a safetensors file, from its header only."""
    header, _, _ = read_header(path, SourceError)
    try:
        return sum(math.prod(int(d) for d in entry["shape"]) for name, entry in header.items() if name != METADATA)
    except (KeyError, TypeError, ValueError) as err:
        raise SourceError(f"{path}: safetensors header has a malformed shape") from err


def adapter_record(directory: str | Path, *, uri: str, repo: str, revision: str | None) -> AdapterRecord:
    """Build the registry record of a fetched adapter directory."""
    root = Path(directory)
    hashes = file_hashes(root, list(ADAPTER_FILES))
    config = parse_config((root / ADAPTER_CONFIG).read_bytes(), root / ADAPTER_CONFIG)
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
        base_model=base_model_of(config),
        rank=rank if isinstance(rank, int) else None,
        target_modules=targets,
        parameter_count=safetensors_parameter_count(root / ADAPTER_WEIGHTS),
        bytes=sum((root / name).stat().st_size for name in ADAPTER_FILES),
    )
