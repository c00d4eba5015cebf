"""The calibration call of the GPU flow: ``compeft.calibrate.calibrate`` writes the artifact at the
chosen (k, α) plus calibration.json/.png; this returns its figures and the registry's calibration record.
``BaseSessions`` keeps one loaded base model for a batch, so its adapters do not load it again each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.params import CompressionOptions


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


def calibrate(adapter_dir: str, out_dir: str, *, base: str, task: str, options: CompressionOptions,
              session: Any = None) -> dict[str, Any]:
    """Calibrate one adapter (on the session's loaded base, if given); returns CompressResult fields +
    ``calibration`` (registry record) + ``plot``."""
    from compeft.calibrate import calibrate as sweep

    result = sweep(adapter_dir, out_dir, base=base, task=task, densities=options.densities, alphas=options.alphas,
                   metric=options.metric, limit=options.limit, tolerance=options.tolerance, device=options.device,
                   search=options.search, codec=options.codec, session=session)
    record = {
        "task": result.task, "metric": result.metric,
        "scores": [{"density": p.density, "alpha": p.alpha, "score": p.score, "stderr": p.stderr, "bytes": p.bytes}
                   for p in result.points],
        "chosen_density": result.chosen.density, "chosen_alpha": result.chosen.alpha,
        "chosen_score": result.chosen.score, "original_score": result.reference.value,
        "runtime_s": result.timings.total if result.timings else None,
    }
    plot = Path(out_dir) / "calibration.png"
    return {**(result.artifact or {}), "calibration": record, "plot": str(plot) if plot.is_file() else None}
