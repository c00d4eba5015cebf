"""What the Prefect UI shows for a run: progress, the outcome table and calibration plots."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from storage.catalog import AdapterOutcome
from storage.census import Census
from storage.registry import CalibrationRow

TABLE_KEY = "compeft-outcomes"
CENSUS_KEY = "compeft-census"
MAX_INLINE_PNG = 400_000


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def table_row(o: AdapterOutcome) -> dict[str, Any]:
    """One table line: adapter, status, bytes before → after, ratio, bits/param, density, α, validation
    scores (original vs compressed), link and reason, plus the raw outcome fields read back by a parent."""
    fields = o.fields()
    size = (f"{fields['bytes_source']:,} → {fields['bytes_artifact']:,}"
            if fields["bytes_source"] is not None and fields["bytes_artifact"] is not None else "")
    row: dict[str, Any] = {"adapter": o.name, "status": o.status, "bytes": size}
    row.update({k: v for k, v in fields.items() if k not in ("name", "status")})
    for key, digits in (("ratio", 2), ("bits_per_param", 4), ("score_original", 4), ("score_compressed", 4)):
        if row[key] is not None:
            row[key] = round(row[key], digits)
    row["link"] = o.link or ""
    return row


def outcome_table(outcomes: Sequence[AdapterOutcome], description: str) -> UUID:
    """Create the run's table artifact (the same rows are read back by a parent run)."""
    return create_table_artifact(table=[table_row(o) for o in outcomes], key=TABLE_KEY, description=description)


def outcomes_from_table(data: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The outcome fields (``AdapterOutcome.fields()``) of a table artifact written by :func:`outcome_table`."""
    if data is None:
        return []
    rows = json.loads(data) if isinstance(data, str) else list(data)
    return [{**row, "name": row["adapter"]} for row in rows]


def progress(description: str) -> UUID:
    """A progress artifact at 0 %."""
    return create_progress_artifact(progress=0.0, description=description)


def set_progress(artifact_id: UUID, done: int, total: int) -> None:
    update_progress_artifact(artifact_id=artifact_id, progress=100.0 * done / max(total, 1))


def calibration_markdown(name: str, calibration: CalibrationRow, plot: Path | None) -> UUID:
    """Markdown artifact of one adapter's sweep: the plot (inline PNG) and the score per (k, α)."""
    summary = (f"task `{calibration.task}`, metric `{calibration.metric}`; original adapter "
               f"{_num(calibration.original_score, '.4f')}; chosen k={calibration.chosen_density:g}, "
               f"α={calibration.chosen_alpha:g} → {_num(calibration.chosen_score, '.4f')}")
    lines = [f"# Calibration of {name}", "", summary, ""]
    if plot is not None and plot.stat().st_size <= MAX_INLINE_PNG:
        data = base64.b64encode(plot.read_bytes()).decode()
        lines += [f"![score vs α](data:image/png;base64,{data})", ""]
    lines += ["| density k | α | score |", "|---:|---:|---:|"]
    for point in calibration.scores:
        lines.append(f"| {point['density']:g} | {point['alpha']:g} | {_num(point.get('score'), '.4f')} |")
    key = "compeft-calibration-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]
    return create_markdown_artifact(markdown="\n".join(lines), key=key, description=f"calibration of {name}")


def census_markdown(census: Census, source: str) -> UUID:
    """The run's census (what the source holds: families, layouts, dtypes, base models, bytes, skip reasons)."""
    return create_markdown_artifact(markdown=census.markdown(f"Census of {source}"), key=CENSUS_KEY,
                                    description=f"census of {source}")
