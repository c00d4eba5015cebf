"""What the Prefect UI shows for a run: a progress bar that says what it is doing, the outcome table a person
reads (in words, nine columns), the same outcomes as machine-readable fields (a second table, read back by a
parent run), calibration plots, and the parent's index linking its batch runs and calibration plots."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
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

TABLE_KEY = "compeft-outcomes"  # what a person reads
DATA_KEY = "compeft-outcome-fields"  # AdapterOutcome.fields() per adapter, read back by a parent run
INDEX_KEY = "compeft-run-index"
CALIBRATION_KEY_PREFIX = "compeft-calibration-"
CENSUS_KEY = "compeft-census"
MAX_INLINE_PNG = 400_000
#: the outcome table's columns, in the order a person reads them
COLUMNS = ("Adapter", "Status", "Size before → after", "Ratio", "Bits/param", "Density k", "α",
           "Score original → compressed", "Link or reason")


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def human_bytes(n: int | None) -> str:
    """1,234,567 → '1.2 MB' (decimal units, as file browsers show them)."""
    if n is None:
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def table_row(o: AdapterOutcome) -> dict[str, str]:
    """One line of the outcome table, in words."""
    art = o.artifact
    scores = (f"{_num(o.score_original, '.3f')} → {_num(o.score_compressed, '.3f')}"
              if o.score_compressed is not None else "")
    values = (
        o.name, o.status,
        f"{human_bytes(art.bytes_source)} → {human_bytes(art.bytes)}" if art and art.bytes_source is not None else "",
        f"{art.ratio:.1f}×" if art and art.ratio else "",
        _num(art.bits_per_param if art else None, ".3f"),
        _num(art.density if art else None, "g"),
        _num(art.alpha if art else None, "g"),
        scores,
        (f"near-duplicate of #{o.duplicate_of} (cosine {o.duplicate_cosine:.3f}); " if o.duplicate_of is not None else "")
        + (o.reason or o.link or ""),
    )
    return dict(zip(COLUMNS, values))


def outcome_tables(outcomes: Sequence[AdapterOutcome], description: str) -> None:
    """The run's outcome table (in words) and the machine-readable outcome fields beside it."""
    create_table_artifact(table=[table_row(o) for o in outcomes], key=TABLE_KEY, description=description)
    create_table_artifact(table=[o.fields() for o in outcomes], key=DATA_KEY,
                          description="Machine-readable outcome of every adapter (AdapterOutcome fields; the parent "
                                      "run reads them back). The registry holds the full records.")


def outcomes_from_table(data: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The outcome fields (``AdapterOutcome.fields()``) of a ``DATA_KEY`` table artifact."""
    if data is None:
        return []
    return json.loads(data) if isinstance(data, str) else list(data)


class Progress:
    """The run's progress artifact: what the run is doing now, and the share of adapters done; ends as "done".

    Updates are one API call each, so they are spaced at least ``every`` seconds apart (the last one always goes)."""

    def __init__(self, doing: str, every: float = 5.0) -> None:
        self.doing, self.every, self.last = doing, every, 0.0
        self.done = self.total = 0
        self.id = create_progress_artifact(progress=0.0, description=doing)

    def set(self, doing: str | None = None, *, done: int | None = None, total: int | None = None,
            force: bool = False) -> None:
        """Say what the run is doing and how far it is (an update at most every ``every`` seconds unless forced)."""
        self.doing = doing or self.doing
        self.done = self.done if done is None else done
        self.total = self.total if total is None else total
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            share = 100.0 * self.done / self.total if self.total else 0.0
            update_progress_artifact(artifact_id=self.id, progress=share, description=self.line())

    def line(self) -> str:
        return f"{self.doing}: {self.done}/{self.total} adapters" if self.total else self.doing

    def finish(self, summary: str) -> None:
        """The final state: 100 %, "done: <summary>"."""
        self.doing = f"done: {summary}"
        update_progress_artifact(artifact_id=self.id, progress=100.0, description=self.doing)


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
    return create_markdown_artifact(markdown="\n".join(lines), key=calibration_key(name),
                                    description=f"calibration of {name}")


def calibration_key(name: str) -> str:
    return CALIBRATION_KEY_PREFIX + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]


@dataclass(frozen=True)
class RunLink:
    """A batch run of a catalog run: its name, adapters, final state and flow run id."""

    name: str
    adapters: int
    state: str
    flow_run_id: UUID


@dataclass(frozen=True)
class PlotLink:
    """A calibration plot (markdown artifact) and the run it belongs to."""

    adapter: str
    description: str
    artifact_id: UUID


def run_index(batches: Sequence[RunLink], plots: Sequence[PlotLink]) -> UUID | None:
    """The parent run's index: a link to every batch run and to every calibration plot (links relative to the
    UI's root, so they work wherever the UI is served)."""
    if not batches and not plots:
        return None
    lines = []
    if batches:
        lines += ["## Batch runs", "", "| batch run | adapters | state |", "|---|---:|---|"]
        lines += [f"| [{b.name}](/runs/flow-run/{b.flow_run_id}) | {b.adapters} | {b.state} |" for b in batches]
        lines.append("")
    if plots:
        lines += ["## Calibration plots", "", "| adapter | calibration |", "|---|---|"]
        lines += [f"| {p.adapter} | [{p.description}](/artifacts/artifact/{p.artifact_id}) |" for p in plots]
    return create_markdown_artifact(markdown="\n".join(lines), key=INDEX_KEY,
                                    description="links to this run's batch runs and calibration plots")


def census_markdown(census: Census, source: str) -> UUID:
    """The run's census (what the source holds: families, layouts, dtypes, base models, bytes, skip reasons)."""
    return create_markdown_artifact(markdown=census.markdown(f"Census of {source}"), key=CENSUS_KEY,
                                    description=f"census of {source}")
