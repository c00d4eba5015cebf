"""Facts about an adapter directory for the registry: hashes, layout, PEFT type, rank, targets, dtype, parameter
count.

Reads only the layout's config (when it has one) and the safetensors header (no tensor data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compeft.adapters import Layout, adapter_kind, base_model_of, find_layout, parse_config
from compeft.safetensors_header import METADATA, fetch_header, read_header
from storage.errors import SourceError
from storage.hashing import content_hash, file_hashes
from storage.registry.records import AdapterRecord


@dataclass(frozen=True)
class HeaderFacts:
    """What a safetensors header tells: tensor names, parameter count, and the dtype label (the tensors' dtypes
    as safetensors names them, sorted and joined with '+': ``F32``, ``BF16+F32``)."""

    names: tuple[str, ...]
    parameters: int
    dtype: str


def header_facts(path: Path) -> HeaderFacts:
    """The facts of a safetensors file, from its header only."""
    header, _, _ = read_header(path, SourceError)
    return facts_of_header(header, path)


def remote_header_facts(read: Callable[[int, int], bytes], size: int, where: str) -> HeaderFacts:
    """The facts of a remote safetensors file of ``size`` bytes, from its header read by byte ranges through
    ``read(start, length)`` (an S3 ranged GetObject, a Hub ranged GET): its weights are not downloaded."""
    header, _ = fetch_header(read, size, where, SourceError)
    return facts_of_header(header, where)


def facts_of_header(header: Mapping, where) -> HeaderFacts:
    """The facts a parsed safetensors header tells."""
    try:
        entries = {name: entry for name, entry in header.items() if name != METADATA}
        count = sum(math.prod(int(d) for d in entry["shape"]) for entry in entries.values())
        dtypes = sorted({str(entry["dtype"]) for entry in entries.values()})
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SourceError(f"{where}: safetensors header has a malformed shape or dtype") from err
    return HeaderFacts(tuple(entries), count, "+".join(dtypes) or "none")


def safetensors_parameter_count(path: Path) -> int:
    """Number of parameters in a safetensors file, from its header only."""
    return header_facts(path).parameters


def directory_layout(root: Path) -> Layout:
    """The layout of a fetched adapter directory, or a SourceError naming it."""
    layout = find_layout(p.name for p in root.iterdir() if p.is_file())
    if layout is None:
        raise SourceError(f"{root}: holds no adapter files of a known layout")
    return layout


def adapter_record(directory: str | Path, *, uri: str, repo: str, revision: str | None,
                   subfolder: str = "") -> AdapterRecord:
    """Build the registry record of a fetched adapter directory (``subfolder``: its folder inside its repo)."""
    root = Path(directory)
    layout = directory_layout(root)
    hashes = file_hashes(root, list(layout.files))
    config = parse_config((root / layout.config).read_bytes(), root / layout.config) if layout.config else {}
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = (targets,)
    elif isinstance(targets, (list, tuple)):
        targets = tuple(sorted(str(t) for t in targets))
    else:
        targets = None
    rank = config.get("r")
    facts = header_facts(root / layout.weights)
    return AdapterRecord(
        uri=uri,
        repo=repo,
        revision=revision,
        content_sha256=content_hash(hashes),
        file_hashes=hashes,
        peft_type=adapter_kind(layout, config, facts.names),
        base_model=base_model_of(config),
        rank=rank if isinstance(rank, int) else None,
        target_modules=targets,
        parameter_count=facts.parameters,
        bytes=sum((root / name).stat().st_size for name in layout.files),
        subfolder=subfolder,
        layout=layout.name,
        dtype=facts.dtype,
    )
