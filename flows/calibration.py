"""What the GPU flow needs to calibrate a batch: ``BaseSessions`` keeps one loaded base model for the batch (so
its adapters do not load it again each), and ``resolve_base`` finds the base an adapter names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.catalog import source_kind
from storage.values import AdapterRef


class BaseSessions:
    """The batch's ``BaseModelSession``: one base model in memory at a time (a GPU batch shares one)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.current: Any = None  # compeft.calibrate.BaseModelSession, created on first use

    def get(self, base: str) -> Any:
        """The session holding ``base`` (the previous base is released first when the batch mixes bases)."""
        from compeft.calibrate import BaseModelSession

        if self.current is None or self.current.base != base:
            self.close()
            self.current = BaseModelSession(base, self.device)
        return self.current

    def close(self) -> None:
        """Free the loaded base model's memory."""
        if self.current is not None:
            self.current.close()
            self.current = None


def resolve_base(ref: AdapterRef, base: str | None) -> str | None:
    """The base model to calibrate an adapter against: the option, else its config (a relative path resolved
    against a local adapter directory), else None."""
    base = base or ref.base_model
    if not base:
        return None
    if source_kind(ref.uri) == "local" and base.startswith((".", "/")):
        return str((Path(ref.uri) / base).resolve()) if not base.startswith("/") else base
    return base
