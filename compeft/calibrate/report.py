"""calibration.json and calibration.png: every evaluated point, the reference, the choice, timings."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from compeft.calibrate.result import CalibrationResult

REPORT_JSON = "calibration.json"
REPORT_PNG = "calibration.png"
REPORT_FORMAT = 1


def _clean(value):
    """JSON-safe: NaN/Inf become None, tuples lists, Paths strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def report_document(result: CalibrationResult) -> dict:
    """The calibration.json document."""
    return _clean({"format": REPORT_FORMAT, **result.to_dict()})


def write_json(result: CalibrationResult, directory: Path) -> Path:
    """Write calibration.json (sorted keys, trailing newline)."""
    path = directory / REPORT_JSON
    path.write_text(json.dumps(report_document(result), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def write_png(result: CalibrationResult, directory: Path) -> Path:
    """Score vs α, one line per density, the original adapter as a horizontal line, the choice marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    by_density: dict[float, list] = defaultdict(list)
    for p in result.points:
        by_density[p.density].append(p)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    try:
        for density in sorted(by_density):
            pts = sorted(by_density[density], key=lambda p: p.alpha)
            ax.plot([p.alpha for p in pts], [p.score for p in pts], marker="o", label=f"k = {density:g}")
        ref = result.reference
        ax.axhline(ref.value, color="black", linestyle="--", linewidth=1, label=f"original ({ref.value:.3f})")
        c = result.chosen
        ax.scatter([c.alpha], [c.score], s=160, facecolors="none", edgecolors="red", linewidths=2,
                   label=f"chosen k={c.density:g}, α={c.alpha:g}", zorder=5)
        ax.set_xscale("log")
        alphas = sorted({p.alpha for p in result.points})
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("α")
        ax.set_ylabel(result.metric)
        ax.set_title(f"ComPEFT calibration: {Path(result.task).name}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / REPORT_PNG
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
