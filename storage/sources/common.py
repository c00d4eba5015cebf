"""Rules every source applies to what it lists: which folders hold an adapter (asked of ``compeft.adapters``'
layouts, the one place that says which files make an adapter), which are skipped and why (pickles, a config
without weights, model folders, training checkpoints), where a folder's repo ends, size caps, verified fetches."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compeft import adapters
from compeft.adapters import MAX_CONFIG_BYTES, PICKLE_SUFFIXES, Layout, adapter_kind
from compeft.atomic import atomic_directory
from compeft.hashing import sha256_file
from storage.adapter_facts import HeaderFacts, remote_header_facts
from storage.errors import HashMismatchError, SourceError, ValidationError
from storage.fullmodels import FULL_LAYOUT, FullFolder, full_folder, model_files
from storage.validation import check_size
from storage.values import CHECKPOINT_CHOICES, AdapterRef, RemoteFile

MODEL_MARKERS = frozenset({"config.json", "model.safetensors.index.json"})
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
BESIDE_FINAL = "training checkpoint beside a final adapter: the final adapter is taken (checkpoints=all takes every checkpoint)"
OLDER = "older training checkpoint: only the latest is taken (checkpoints=all takes every checkpoint)"


def layout_named(name: str) -> Layout:
    """The layout called ``name`` (a ref's ``layout``), or a SourceError."""
    for layout in adapters.LAYOUTS:
        if layout.name == name:
            return layout
    raise SourceError(f"unknown adapter layout {name!r} (known: {', '.join(x.name for x in adapters.LAYOUTS)})")


def is_config(name: str) -> bool:
    """Whether ``name`` is the config file of some layout (configs have their own, small, size cap)."""
    return any(layout.config == name for layout in adapters.LAYOUTS)


def not_an_adapter() -> str:
    """Why a folder with weights or a model config but no layout's files is skipped."""
    wanted = ", ".join(dict.fromkeys(layout.config or layout.weights for layout in adapters.LAYOUTS))
    return f"not a PEFT adapter: no {wanted}"


def recognise(names: Iterable[str]) -> Layout | str | None:
    """What the file names of one folder make: a Layout (an adapter), a reason to skip it (it looks like an
    adapter or a model but cannot be read), or None (nothing of interest)."""
    present = set(names)
    layout = adapters.find_layout(present)
    if layout is not None:
        return layout
    for layout in adapters.LAYOUTS:
        stem = layout.weights.rsplit(".", 1)[0] + "."
        pickles = sorted(n for n in present if n.startswith(stem) and n.endswith(PICKLE_SUFFIXES))
        if pickles and (layout.config is None or layout.config in present):
            return f"unsupported weights {pickles[0]}: pickle formats are never loaded, only {layout.weights}"
    for layout in adapters.LAYOUTS:
        if layout.config is not None and layout.config in present:
            return f"{layout.config} without {layout.weights}"
    if MODEL_MARKERS.intersection(present) or any(n.endswith(WEIGHT_SUFFIXES) for n in present):
        return not_an_adapter()
    return None


@dataclass(frozen=True)
class Found:
    """A folder of a listing holding an adapter: its path below the listing's root ('' for the root), its
    layout and that layout's files as listed (names relative to the folder)."""

    directory: str
    layout: Layout
    files: tuple[RemoteFile, ...]


@dataclass(frozen=True)
class Passed:
    """A folder of a listing that looks like an adapter or a model but is skipped, and why."""

    directory: str
    reason: str


def _checkpoint(directory: str) -> tuple[str, int] | None:
    """(the folder holding it, N) when ``directory`` is inside a ``checkpoint-N`` training folder."""
    parts = directory.split("/") if directory else []
    for i, part in enumerate(parts):
        match = CHECKPOINT.match(part)
        if match:
            return "/".join(parts[:i]), int(match.group(1))
    return None


def survey(listing: Mapping[str, RemoteFile], checkpoints: str = "final") -> list[Found | Passed | FullFolder]:
    """Every folder of ``listing`` (a file's path below the root -> the file as listed) that holds an adapter,
    and every folder skipped with its reason, by folder; a folder holding a full model is a FullFolder.

    ``checkpoint-N/`` folders: with ``checkpoints="final"`` a checkpoint beside a final adapter (the folder
    holding ``checkpoint-N/`` holds an adapter too) is skipped, and without one only the highest N is taken;
    ``"all"`` takes every checkpoint. Only the layout's files are kept: optimizer, scheduler and trainer files
    of a checkpoint are never fetched."""
    if checkpoints not in CHECKPOINT_CHOICES:
        raise ValidationError(f"checkpoints {checkpoints!r} must be one of {', '.join(CHECKPOINT_CHOICES)}")
    folders: dict[str, dict[str, RemoteFile]] = defaultdict(dict)
    for path, remote in listing.items():
        directory, _, name = path.rpartition("/")
        folders[directory][name] = remote
    entries: dict[str, Found | Passed] = {}
    for directory in sorted(folders):
        files = folders[directory]
        if (full := full_folder(directory, files)) is not None:  # a full fine-tune (issue 17)
            entries[directory] = full
            continue
        what = recognise(files)
        if isinstance(what, Layout):
            listed = tuple(RemoteFile(name=n, size=files[n].size, etag=files[n].etag, sha256=files[n].sha256)
                           for n in what.files)
            entries[directory] = Found(directory, what, listed)
        elif what is not None:
            entries[directory] = Passed(directory, what)
    if checkpoints == "final":
        trainings: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for directory, entry in entries.items():
            where = _checkpoint(directory) if isinstance(entry, Found) else None
            if where is not None:
                trainings[where[0]].append((where[1], directory))
        for parent, members in trainings.items():
            final = isinstance(entries.get(parent), Found)
            latest = max(n for n, _ in members)
            for n, directory in members:
                if final or n != latest:
                    entries[directory] = Passed(directory, BESIDE_FINAL if final else OLDER)
    return [entries[d] for d in sorted(entries)]


def root_is_repo(entries: Iterable[Found | Passed]) -> bool:
    """Whether a tree or bucket listing's root is itself one repo: it holds an adapter, or training
    checkpoints directly."""
    return any(isinstance(e, Found) and (e.directory == "" or CHECKPOINT.match(e.directory.split("/")[0]))
               for e in entries)


def repo_split(directory: str, root_repo: bool) -> tuple[str, str]:
    """(repo folder, subfolder) of a folder of a tree or bucket listing: below a root that is a repo itself the
    root is the repo; otherwise each folder directly below the root is one (as a Hub organisation's repos)."""
    if root_repo or not directory:
        return "", directory
    head, _, rest = directory.partition("/")
    return head, rest


def listed_facts(read: Callable[[int, int], bytes], weights: RemoteFile, where: str) -> HeaderFacts | None:
    """What a listed adapter's weights header tells (dtypes, tensor names), read through ``read(start, length)`` by
    byte ranges, the weights never downloaded; None when the listing gave no size or the header is malformed (its
    faults are reported when the adapter is read; the listing goes on). Network failures are raised."""
    if weights.size is None:
        return None
    try:
        return remote_header_facts(read, weights.size, where)
    except SourceError:
        return None


def listed_kind(layout: Layout, config: Mapping[str, Any], facts: HeaderFacts | None) -> str | None:
    """A listed adapter's kind: its config's peft type, or for a layout without a config what its header's tensor
    names say; None when neither was read."""
    if layout.config is None and facts is None:
        return None
    return adapter_kind(layout, config, facts.names if facts else ())


def check_sizes(files: Iterable[RemoteFile], max_file_bytes: int) -> None:
    """Raise ValidationError if any listed file is over its cap (configs: MAX_CONFIG_BYTES)."""
    for f in files:
        check_size(f.name, f.size, MAX_CONFIG_BYTES if is_config(f.name) else max_file_bytes)


def check_fetchable(ref: AdapterRef, remote: RemoteFile) -> None:
    """Refuse to fetch a file that is not one of the ref's layout's files (never optimizer states or pickles)."""
    if ref.layout == FULL_LAYOUT:
        if remote.name not in model_files([remote.name]):
            raise ValidationError(f"{ref.uri}: refusing to download {remote.name!r} (not a model file)")
        return
    if remote.name not in layout_named(ref.layout).files:
        raise ValidationError(f"{ref.uri}: refusing to download {remote.name!r} (not a file of its {ref.layout} layout)")


def fetch_into(
    ref: AdapterRef, dest_dir: Path, download: Callable[[RemoteFile, Path], None], max_file_bytes: int
) -> Path:
    """Download each file of ``ref`` via ``download(file, path)`` into a hidden temp dir, verify, rename."""
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and any(dest_dir.iterdir()):
        raise SourceError(f"{dest_dir}: destination for {ref.uri} is not empty")
    if dest_dir.exists():
        dest_dir.rmdir()
    with atomic_directory(dest_dir, durable=False) as tmp:  # a scratch copy for one run
        for remote in ref.files:
            check_fetchable(ref, remote)
            target = tmp / remote.name
            download(remote, target)
            size = target.stat().st_size
            check_size(f"{ref.uri}/{remote.name}", size, MAX_CONFIG_BYTES if is_config(remote.name) else max_file_bytes)
            if remote.size is not None and size != remote.size:
                raise HashMismatchError(f"{ref.uri}/{remote.name}: got {size} bytes, listing said {remote.size}")
            if remote.sha256 is not None and sha256_file(target) != remote.sha256:
                raise HashMismatchError(f"{ref.uri}/{remote.name}: sha256 does not match the listing")
    return dest_dir
