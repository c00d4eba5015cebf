"""The memory limit: how many bytes one allocation may take, checked before anything large is allocated, so that
an oversized or hostile input (a container declaring 10¹² entries) is one exit-2 line naming the bytes it needs
and the limit, never a 4 TB allocation, an OOM kill or a MemoryError traceback.

``COMPEFT_MEMORY_LIMIT`` sets it (bytes, or with a K/M/G/T suffix in powers of 1024: ``512M``, ``24G``); the
default is the machine's physical memory. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from compeft.errors import OptionError, ResourceLimitError

MEMORY_LIMIT_ENV = "COMPEFT_MEMORY_LIMIT"
FALLBACK_LIMIT = 64 << 30  # where the physical memory cannot be read
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, name: str = MEMORY_LIMIT_ENV) -> int:
    """Bytes from ``123``, ``1.5G``, ``512MiB`` (powers of 1024); OptionError naming ``name`` otherwise."""
    match = _SIZE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise OptionError(f"{name}={text!r} is not a size in bytes (e.g. 8G, 512M, 1000000)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def physical_memory() -> int:
    """The machine's physical memory in bytes (FALLBACK_LIMIT where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return FALLBACK_LIMIT


def memory_limit() -> int:
    """The most bytes one allocation may take: COMPEFT_MEMORY_LIMIT, else the physical memory."""
    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    return parse_size(raw) if raw else physical_memory()


def check_allocation(nbytes: int, what: str) -> None:
    """Refuse (ResourceLimitError, exit 2) an allocation of ``nbytes`` for ``what`` above the memory limit."""
    limit = memory_limit()
    if nbytes > limit:
        raise ResourceLimitError(
            f"{what} needs {nbytes:,} bytes, more than the memory limit of {limit:,} bytes "
            f"(the machine's memory, or {MEMORY_LIMIT_ENV})"
        )


def is_out_of_memory(err: BaseException) -> bool:
    """A MemoryError, or torch's allocator failing (torch.OutOfMemoryError on CUDA, a RuntimeError on the CPU)."""
    if isinstance(err, MemoryError):
        return True
    return isinstance(err, RuntimeError) and (type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(err))


@contextmanager
def out_of_memory_as_error(what: str) -> Iterator[None]:
    """Turn running out of memory inside the block into one ResourceLimitError line about ``what``."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        detail = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ResourceLimitError(f"{what}: out of memory ({detail[:200]})") from err
