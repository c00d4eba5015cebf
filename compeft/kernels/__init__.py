"""Optional Triton kernels for CUDA fast paths; imported lazily, only when a CUDA device is used."""

from __future__ import annotations


def triton_available() -> bool:
    """True when Triton imports (it needs a CUDA build of torch, or TRITON_INTERPRET=1 for tests)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
