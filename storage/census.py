"""The census of a catalog: what a source holds, a run found or the registry records — adapters by family (peft
type), layout, dtype and base model, bytes before and after compression, and every skip reason with its count.

``take_census`` is the one computation (pure, over ``CensusItem``s and skip reasons); ``source_census``,
``run_census`` and ``registry_census`` only gather its inputs, and the flow's artifact, ``compeft catalog
--dry-run``, ``compeft registry census`` and the HTTP API's ``/census`` only render its result."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from storage.values import AdapterRef, Skipped

UNKNOWN = "unknown"
_LEADING_WHERE = re.compile(r"^(?:hf://|s3://|file://|/|\./)\S*?:\s+")
_SIZES = re.compile(r"\b\d+(?= bytes\b|-byte\b)")


@dataclass(frozen=True)
class CensusItem:
    """One adapter as the census counts it (``bytes_after``: its artifact's size, None when not compressed)."""

    family: str
    layout: str
    dtype: str
    base_model: str
    bytes_before: int
    bytes_after: int | None = None


def _family(peft_type: str | None, layout: str | None) -> str:
    """An adapter's family: its peft type, else (a layout without a config) the layout's name."""
    return peft_type or layout or UNKNOWN


def item_of_ref(ref: AdapterRef, bytes_after: int | None = None, dtype: str | None = None) -> CensusItem:
    """A found adapter as the census counts it (``dtype``: as registered, when the listing did not tell it)."""
    return CensusItem(family=_family(ref.peft_type, ref.layout), layout=ref.layout, dtype=ref.dtype or dtype or UNKNOWN,
                      base_model=ref.base_model or UNKNOWN, bytes_before=ref.size, bytes_after=bytes_after)


def item_of_row(row: Any, bytes_after: int | None = None) -> CensusItem:
    """A registered adapter (an ``AdapterRow``) as the census counts it."""
    return CensusItem(family=_family(row.peft_type, row.layout), layout=row.layout or UNKNOWN,
                      dtype=row.dtype or UNKNOWN, base_model=row.base_model or UNKNOWN,
                      bytes_before=row.bytes or 0, bytes_after=bytes_after)


def reason_key(reason: str) -> str:
    """A skip reason as the census counts it: without the address or path it starts with, sizes as N."""
    text = (reason or "").strip().splitlines()[0] if (reason or "").strip() else "no reason given"
    text = _LEADING_WHERE.sub("", text, count=1)
    return _SIZES.sub("N", text)


def _ranked(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class Census:
    """Counts of adapters by family, layout, dtype and base model; bytes before (all adapters) and after (the
    ``compressed`` ones, whose own bytes before are ``bytes_before_compressed``); skips by reason."""

    adapters: int
    families: Mapping[str, int]
    layouts: Mapping[str, int]
    dtypes: Mapping[str, int]
    base_models: Mapping[str, int]
    bytes_before: int
    compressed: int
    bytes_before_compressed: int
    bytes_after: int
    skipped: int
    skip_reasons: Mapping[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Bytes before over bytes after, over the compressed adapters."""
        return self.bytes_before_compressed / self.bytes_after if self.bytes_after else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data

    def _summary(self) -> str:
        line = f"{self.adapters} adapter(s) found, {self.skipped} skipped; {self.bytes_before:,} bytes"
        if self.compressed:
            line += (f"; compressed {self.compressed} of them: {self.bytes_before_compressed:,} → "
                     f"{self.bytes_after:,} bytes ({self.ratio:.1f}×)")
        return line

    def _tables(self) -> list[tuple[str, Mapping[str, int]]]:
        return [("family", self.families), ("layout", self.layouts), ("dtype", self.dtypes),
                ("base model", self.base_models), ("skip reason", self.skip_reasons)]

    def markdown(self, title: str) -> str:
        """The census as Markdown (a run's artifact): a summary line and one table per count."""
        lines = [f"# {title}", "", self._summary()]
        for what, counts in self._tables():
            if counts:
                lines += ["", f"| {what} | count |", "|---|---:|"]
                lines += [f"| {name.replace('|', chr(92) + '|')} | {n} |" for name, n in counts.items()]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """The census as plain text (the CLI's): a summary line and one aligned block per count."""
        lines = [self._summary()]
        for what, counts in self._tables():
            if counts:
                width = max(len(str(n)) for n in counts.values())
                lines += ["", f"{what}:"] + [f"  {n:>{width}}  {name}" for name, n in counts.items()]
        return "\n".join(lines)


def take_census(items: Iterable[CensusItem], skip_reasons: Iterable[str] = ()) -> Census:
    """The census of these adapters and skips."""
    items = list(items)
    reasons = Counter(reason_key(r) for r in skip_reasons)
    compressed = [i for i in items if i.bytes_after is not None]
    return Census(
        adapters=len(items),
        families=_ranked(Counter(i.family for i in items)),
        layouts=_ranked(Counter(i.layout for i in items)),
        dtypes=_ranked(Counter(i.dtype for i in items)),
        base_models=_ranked(Counter(i.base_model for i in items)),
        bytes_before=sum(i.bytes_before for i in items),
        compressed=len(compressed),
        bytes_before_compressed=sum(i.bytes_before for i in compressed),
        bytes_after=sum(i.bytes_after or 0 for i in compressed),
        skipped=sum(reasons.values()),
        skip_reasons=_ranked(reasons),
    )


def source_census(refs: Sequence[AdapterRef], skipped: Sequence[Skipped]) -> Census:
    """The census of a listing (nothing compressed yet: a dry run)."""
    return take_census((item_of_ref(r) for r in refs), (s.reason for s in skipped))


def run_census(refs: Sequence[AdapterRef], skipped: Sequence[Skipped], outcomes: Sequence[Any],
               registry: Any = None) -> Census:
    """The census of a catalog run: its listing, the artifacts its outcomes (``AdapterOutcome``) hold, and the
    dtypes the registry recorded for adapters whose listing did not tell them."""
    artifacts = {o.uri: o.artifact for o in outcomes if getattr(o, "artifact", None) is not None}
    dtypes: dict[int, str | None] = {}
    wanted = sorted({a.adapter_id for uri, a in artifacts.items()})
    if registry is not None and wanted and any(r.dtype is None for r in refs):
        dtypes = {row.id: row.dtype for row in registry.get_adapters(wanted)}
    items = []
    for ref in refs:
        artifact = artifacts.get(ref.uri)
        items.append(item_of_ref(ref, artifact.bytes if artifact else None,
                                 dtypes.get(artifact.adapter_id) if artifact else None))
    return take_census(items, (s.reason for s in skipped))


def registry_census(registry: Any) -> Census:
    """The census of what the registry records: each adapter (newest registration of a repo and subfolder) with
    the newest artifact of its content, and the skips of each source's latest completed run."""
    newest: dict[tuple[str, str], Any] = {}
    for row in registry.list_adapters():
        newest[(row.repo, row.subfolder)] = row  # rows come oldest first
    after = registry.artifact_bytes()
    items = [item_of_row(row, after.get(row.content_sha256)) for row in newest.values()]
    latest: dict[str, Any] = {}
    for run in registry.latest_runs():
        source = (run.parameters or {}).get("source")
        if source is not None and source not in latest:
            latest[source] = run
    reasons = [e.get("reason") or "" for run in latest.values() for e in run.errors
               if isinstance(e, Mapping) and e.get("status") == "skipped"]
    return take_census(items, reasons)
