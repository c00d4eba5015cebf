"""Values a calibration returns: the reference score, every point, the chosen one, and the timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from compeft.artifact import ArtifactInfo
from compeft.calibrate.evaluator import Score
from compeft.calibrate.search import GridPoint


@dataclass(frozen=True)
class Timings:
    """Where a sweep's wall time went (seconds)."""

    load: float  # task objects + model load
    reference: float  # evaluating the original adapter
    evaluations: float  # sum of the grid evaluations (lm-eval wall time)
    patterns: float  # compress at α=1 + decode + bind, once per density
    updates: float  # in-place weight writes, all points together
    sweep: float  # from the first pattern to the last evaluation
    write: float  # final compress + reports
    total: float

    @property
    def overhead_ratio(self) -> float:
        """sweep wall / (evaluations + one load): the issue's ≤ 1.2 budget."""
        denom = self.evaluations + self.reference + self.load
        return (self.sweep + self.reference + self.load) / denom if denom > 0 else float("nan")


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of ``calibrate``: what was evaluated, what was chosen, and where the artifact is."""

    src: str
    base: str | None
    dst: str | None
    task: str
    metric: str
    split: str | None
    limit: float | None
    search: str
    seed: int
    device: str
    densities: tuple[float, ...]
    alphas: tuple[float, ...]
    tolerance: float
    reference: Score
    points: tuple[GridPoint, ...]
    chosen: GridPoint
    artifact: ArtifactInfo | None = field(default=None)  # the artifact written at the chosen point
    timings: Timings | None = field(default=None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reference"] = asdict(self.reference)
        d["points"] = [p.to_dict() for p in self.points]
        d["chosen"] = self.chosen.to_dict()
        if self.timings is not None:
            d["timings"] = {**asdict(self.timings), "overhead_ratio": self.timings.overhead_ratio}
        return d
