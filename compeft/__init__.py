"""compeft: ComPEFT compression of PEFT adapters and fine-tune residuals (arXiv 2311.13171)."""

from __future__ import annotations

from compeft.version import __version__

__all__ = ["compress", "decompress", "load", "inspect", "__version__"]


def __getattr__(name: str):
    # The API pulls in torch and safetensors; keep `import compeft` (e.g. for the version) cheap.
    if name in ("compress", "decompress", "load", "inspect"):
        from compeft import api

        return getattr(api, name)
    raise AttributeError(f"module 'compeft' has no attribute {name!r}")
