"""The calibration call of the GPU flow: ``compeft.calibrate.calibrate`` writes the artifact at the
chosen (k, α) plus calibration.json/.png; this returns its figures and the registry's calibration record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.params import CompressionOptions


def calibrate(adapter_dir: str, out_dir: str, *, base: str, task: str, options: CompressionOptions) -> dict[str, Any]:
    """Calibrate one adapter; returns CompressResult fields + ``calibration`` (registry record) + ``plot``."""
    from compeft.calibrate import calibrate as sweep

    result = sweep(adapter_dir, out_dir, base=base, task=task, densities=options.densities, alphas=options.alphas,
                   metric=options.metric, limit=options.limit, tolerance=options.tolerance, device=options.device,
                   search=options.search, codec=options.codec)
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
