"""The service's rules for full fine-tunes in a catalog (issue 17): which model directories are full fine-tunes,
which files travel, which base each names, and their registry record.

A model directory is a candidate when it holds ``config.json`` and safetensors weights (``model.safetensors`` or
an index) and no ``adapter_config.json``. Its base is, in order: the user's mapping (``base_for``: fine-tune name
→ base), the model card's ``base_model`` metadata, the config's ``_name_or_path``. One that names none is a
recorded skip; pickle-only model directories stay skipped as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compeft.adapters import ADAPTER_CONFIG, MAX_CONFIG_BYTES
from compeft.checkpoint import INDEX, WEIGHTS
from storage.adapter_facts import safetensors_parameter_count
from storage.errors import SourceError
from storage.hashing import content_hash, file_hashes
from storage.registry.records import AdapterRecord

FULL = "FULL"
FULL_LAYOUT = "full"  # AdapterRef.layout of a full fine-tune (its files: model_files)
CONFIG = "config.json"
CARD = "README.md"
SIDE_FILES = frozenset({"generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", CARD})
NO_BASE = ("not a PEFT adapter, and a full model whose base is unknown: its model card names no base_model, its "
           "config no _name_or_path, and no base_for mapping names it")


def is_full_model(names: Iterable[str]) -> bool:
    """True for a model directory's file names: config.json and safetensors weights, no adapter_config.json."""
    present = set(names)
    return CONFIG in present and ADAPTER_CONFIG not in present and bool({WEIGHTS, INDEX} & present)


def model_files(names: Iterable[str]) -> list[str]:
    """The files of a full fine-tune that are fetched: config, weights (shards and index) and small side files."""
    return sorted(n for n in names if "/" not in n and (n in (CONFIG, INDEX) or n.endswith(".safetensors") or n in SIDE_FILES))


def card_base_model(text: str) -> str | None:
    """``base_model`` from a model card's YAML front matter (a string, or the first of a list), else None."""
    match = re.match(r"\A---\s*\n(.*?)\n---", text, re.S)
    if not match:
        return None
    lines = match.group(1).splitlines()
    for i, line in enumerate(lines):
        key, sep, value = line.partition(":")
        if key.strip() != "base_model" or not sep or line[:1].isspace():
            continue
        value = value.strip().strip("'\"")
        if value:
            return value
        items = [ln.strip()[1:].strip().strip("'\"") for ln in lines[i + 1 :] if ln.strip().startswith("-")]
        return items[0] if items else None
    return None


def declared_base(config: Mapping, card: str | None) -> str | None:
    """The base a full fine-tune names itself: its card's base_model, else its config's _name_or_path."""
    from_card = card_base_model(card) if card else None
    name = config.get("_name_or_path")
    return from_card or (name if isinstance(name, str) and name else None)


def read_json(path: Path, where: str) -> dict:
    """A small JSON object file (config.json), capped and checked."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise SourceError(f"{where}: {path.name} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise SourceError(f"{where}: {path.name} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise SourceError(f"{where}: {path.name} is not a JSON object")
    return value


def read_card(path: Path) -> str | None:
    """A model card's text (its first 64 KiB: the metadata is at the top), or None."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        return f.read(1 << 16).decode("utf-8", errors="replace")


def resolve_full_base(name: str, declared: str | None, base_for: Mapping[str, str], uri: str = "") -> str | None:
    """The base to compress a full fine-tune against: the user's mapping for its name (or URI), else what it
    declares; a relative local path is resolved against a local fine-tune's directory."""
    base = base_for.get(name) or (base_for.get(uri) if uri else None) or declared
    if base and base.startswith(".") and uri and "://" not in uri:
        return str((Path(uri) / base).resolve())
    return base or None


def full_record(directory: str | Path, *, uri: str, repo: str, revision: str | None, base_model: str | None,
                subfolder: str = "") -> AdapterRecord:
    """The registry record of a fetched full fine-tune: hashes of its files, type FULL, parameter count."""
    root = Path(directory)
    names = model_files(p.name for p in root.iterdir() if p.is_file())
    hashes = file_hashes(root, names)
    weights = [n for n in names if n.endswith(".safetensors")]
    return AdapterRecord(
        uri=uri, repo=repo, revision=revision, content_sha256=content_hash(hashes), file_hashes=hashes, peft_type=FULL,
        base_model=base_model, rank=None, target_modules=None,
        parameter_count=sum(safetensors_parameter_count(root / n) for n in weights),
        bytes=sum((root / n).stat().st_size for n in names), subfolder=subfolder, layout=FULL_LAYOUT,
    )


@dataclass(frozen=True)
class FullFolder:
    """A folder of a listing holding a full model (sources.common.survey): its path below the listing's root and
    its model files as listed (names relative to the folder)."""

    directory: str
    files: tuple


def full_folder(directory: str, files: Mapping) -> FullFolder | None:
    """The folder's full model when its file names (name → RemoteFile) make one, else None."""
    if not is_full_model(files):
        return None
    return FullFolder(directory, tuple(files[n] for n in model_files(files)))


def local_full_ref(directory: Path, source_uri: str, name: str, subfolder: str = ""):
    """The AdapterRef of a local full fine-tune (revision: a hash of its files' names, sizes and mtimes, so that a
    re-crawl finds the registered content without reading the weights)."""
    import hashlib

    from storage.values import AdapterRef, RemoteFile

    names = model_files(p.name for p in directory.iterdir() if p.is_file() and not p.is_symlink())
    stats = {n: (directory / n).stat() for n in names}
    stamp = hashlib.sha256("\n".join(f"{n}\0{s.st_size}\0{s.st_mtime_ns}" for n, s in stats.items()).encode()).hexdigest()
    config = read_json(directory / CONFIG, str(directory))
    return AdapterRef(uri=str(directory), source_uri=source_uri, name=name, revision=f"files-{stamp}",
                      files=tuple(RemoteFile(name=n, size=s.st_size) for n, s in stats.items()), peft_type=FULL,
                      base_model=declared_base(config, read_card(directory / CARD)), config=config, subfolder=subfolder,
                      layout=FULL_LAYOUT)
