"""Serving from the compressed form: put compressed adapters and residuals into a live model.

Each module holds one way of doing it; this package re-exports their public names.
"""

from __future__ import annotations

from compeft.serving.residual import (
    AppliedResidual,
    ResidentResidual,
    apply_residual,
    revert_residual,
)

__all__: list[str] = ["AppliedResidual", "ResidentResidual", "apply_residual", "revert_residual"]
