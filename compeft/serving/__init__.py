"""Serving from the compressed form: put compressed adapters and residuals into a live model.

Each module holds one way of doing it; this package re-exports their public names (peft is imported only when
an adapter is bound).
"""

from __future__ import annotations

from compeft.serving.pool import AdapterPool
from compeft.serving.residual import (
    AppliedResidual,
    ResidentResidual,
    apply_residual,
    revert_residual,
)
from compeft.serving.slot import Slot
from compeft.serving.swap import hotswap

__all__: list[str] = ["AdapterPool", "AppliedResidual", "ResidentResidual", "Slot", "apply_residual", "hotswap",
                      "revert_residual"]
