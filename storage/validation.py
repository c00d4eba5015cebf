"""Checks on names that come from outside (repo ids, object keys, file names) and on sizes.

Everything a source, store or publisher writes to disk or sends to a server passes through here,
so that no remote listing can make us write outside a destination, load a pickle, or fill a disk.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from compeft.adapters import PICKLE_SUFFIXES
from storage.errors import ValidationError

#: Largest adapter weight file fetched by default (bytes).
MAX_WEIGHTS_BYTES = 8 * 1024**3

_NAME_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def validate_namespace(name: str) -> str:
    """Return ``name`` if it is a valid Hub user/org name (letters, digits, ``._-``, no ``..``)."""
    if not isinstance(name, str) or not _NAME_PART.match(name) or ".." in name or "--" in name:
        raise ValidationError(f"invalid Hub namespace {name!r}: use letters, digits, '.', '_', '-' (max 96 chars)")
    return name


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is ``AUTHOR/NAME`` with two safe parts."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2:
        raise ValidationError(f"invalid Hub repo id {repo_id!r}: expected AUTHOR/NAME")
    for part in parts:
        if not _NAME_PART.match(part) or ".." in part or "--" in part:
            raise ValidationError(f"invalid Hub repo id {repo_id!r}: part {part!r} has unsafe characters")
    return repo_id


def validate_revision(revision: str) -> str:
    """Return ``revision`` if it looks like a branch, tag or commit sha (no ``..``, no spaces)."""
    if not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision:
        raise ValidationError(f"invalid revision {revision!r}")
    return revision


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes)."""
    if not isinstance(bucket, str) or not _BUCKET.match(bucket) or ".." in bucket:
        raise ValidationError(f"invalid S3 bucket name {bucket!r}")
    return bucket


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Return an S3 key/prefix if it has no ``..``/``.`` segments, backslashes or control characters."""
    if not isinstance(key, str):
        raise ValidationError(f"invalid S3 key {key!r}: not a string")
    if not key:
        if allow_empty:
            return key
        raise ValidationError("invalid S3 key '': empty")
    if len(key.encode()) > 1024:
        raise ValidationError(f"invalid S3 key {key[:40]!r}...: longer than 1024 bytes")
    if key.startswith("/") or "\\" in key or any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise ValidationError(f"invalid S3 key {key!r}: leading '/', backslash or control character")
    segments = key.rstrip("/").split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise ValidationError(f"invalid S3 key {key!r}: empty, '.' or '..' path segment")
    return key


def validate_file_name(name: str) -> str:
    """Return a single file name if it is a plain safe name (no directories, no pickle suffix)."""
    if not isinstance(name, str) or not _FILE_NAME.match(name) or name in (".", ".."):
        raise ValidationError(f"invalid file name {name!r}: only letters, digits, '._-', no directories")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ValidationError(f"refusing file {name!r}: pickle-capable format, only safetensors/json are read")
    return name


def validate_relative_path(path: str) -> PurePosixPath:
    """Return ``path`` as a relative POSIX path whose every part is a safe name (no traversal)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise ValidationError(f"invalid relative path {path!r}")
    pure = PurePosixPath(path)
    for part in pure.parts[:-1]:
        if part in (".", "..") or not _FILE_NAME.match(part):
            raise ValidationError(f"invalid relative path {path!r}: unsafe directory {part!r}")
    validate_file_name(pure.name)
    return pure


def validate_subfolder(path: str) -> str:
    """Return ``path`` if it is a relative folder inside a repo or prefix (``a/b``): safe names, no traversal."""
    parts = path.split("/") if isinstance(path, str) else []
    if not path or any(part in (".", "..") or not _FILE_NAME.match(part) for part in parts):
        raise ValidationError(f"invalid subfolder {path!r}: expected DIR[/DIR...] of letters, digits, '._-'")
    return path


def check_size(name: str, size: int | None, limit: int) -> int | None:
    """Raise if ``size`` (bytes, may be unknown) exceeds ``limit``; return it."""
    if size is not None and size > limit:
        raise ValidationError(f"refusing file {name!r}: {size} bytes exceeds the {limit}-byte cap")
    return size
