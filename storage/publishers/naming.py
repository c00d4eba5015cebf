"""Destination names: from a template such as ``{name}-compeft`` (validated: no traversal), and unique per
destination (``choose_name``: a name holds one source repo's publications; another source gets a stable
disambiguator, and nothing compeft did not write is ever replaced)."""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable

from storage.errors import AddressError, PublishError, ValidationError
from storage.validation import validate_file_name, validate_subfolder
from storage.values import Provenance

DEFAULT_TEMPLATE = "{name}"
DEFAULT_HUB_TEMPLATE = "{name}-compeft"
_FIELDS = ("name", "sha", "short_sha", "codec", "density", "alpha")


def render_name(template: str, provenance: Provenance) -> str:
    """Fill ``template`` ({name}, {sha}, {short_sha}, {codec}, {density}, {alpha}) and validate the result."""
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = used - set(_FIELDS)
    if unknown:
        raise AddressError(f"invalid name template {template!r}: unknown field(s) {sorted(unknown)}; use {_FIELDS}")
    options = provenance.options
    name = template.format(
        name=provenance.source_name,
        sha=provenance.artifact_sha256,
        short_sha=provenance.artifact_sha256[:12],
        codec=options.get("codec", ""),
        density=options.get("density", ""),
        alpha=options.get("alpha", ""),
    )
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-.")[:96]
    try:
        return validate_file_name(name)
    except ValidationError as err:
        raise AddressError(f"name template {template!r} gives an unusable name {name!r}: {err}") from err


def render_path(template: str, provenance: Provenance) -> str:
    """``NAME[/SUBFOLDER]``: the rendered name, then the adapter's folder inside its source repo (layouts kept)."""
    return with_subfolder(render_name(template, provenance), provenance)


def with_subfolder(name: str, provenance: Provenance) -> str:
    """``NAME[/SUBFOLDER]``: a destination name, then the adapter's folder inside its source repo."""
    if not provenance.subfolder:
        return name
    try:
        return f"{name}/{validate_subfolder(provenance.subfolder)}"
    except ValidationError as err:
        raise AddressError(f"cannot keep the source layout below {name!r}: {err}") from err


# Who holds a name at a destination: the source URI of the compeft publication there, None when the name is free,
# or FOREIGN when something compeft did not publish is there (a user's directory, a half-written foreign object).
FOREIGN = "\0foreign"
MARKER = "compeft-publication.json"  # written beside a local or Hub publication: its provenance, as JSON


def repo_uri(provenance: Provenance) -> str:
    """The source repo (or folder) a publication name belongs to: the source URI without the adapter's subfolder,
    so that the adapters of one multi-adapter repo share their name."""
    uri, sub = provenance.source_uri, provenance.subfolder.strip("/")
    return uri[: -len(sub) - 1] if sub and uri.endswith("/" + sub) else uri


def source_tag(source_uri: str) -> str:
    """The stable disambiguator of a source: 8 hex digits of its URI's sha256."""
    return hashlib.sha256(source_uri.encode()).hexdigest()[:8]


def choose_name(name: str, provenance: Provenance, holder: Callable[[str], str | None], *, fixed: bool = False) -> str:
    """The name ``provenance``'s artifact is published under at a destination where ``holder(name)`` says which
    source repo holds a name. Names are unique per destination: ``name`` when it is free or already holds this
    repo's publications (a new artifact of the same source replaces its own there), else ``name-<source_tag>`` on
    the same terms (two sources whose names sanitise alike, a user's own directory of that name); a PublishError
    when neither is usable (or, for a ``fixed`` destination such as one Hub repo, when ``name`` is not)."""
    owner = repo_uri(provenance)
    candidates = [name] if fixed else [name, f"{name}-{source_tag(owner)}"[:96]]
    for candidate in candidates:
        held_by = holder(candidate)
        if held_by is None or held_by == owner:
            return candidate
    held_by = holder(candidates[-1])
    what = "something compeft did not publish" if held_by == FOREIGN else f"the publication of {held_by}"
    raise PublishError(f"cannot publish {provenance.source_uri} as {candidates[-1]!r}: it holds {what} "
                       f"(names are unique per destination; nothing there is replaced)")


def marker_text(provenance: Provenance) -> str:
    """The marker file's content: the publication's provenance."""
    return json.dumps({"source_uri": repo_uri(provenance), "source_revision": provenance.source_revision,
                       "artifact_sha256": provenance.artifact_sha256, "compeft_version": provenance.package_version},
                      indent=2, sort_keys=True) + "\n"


def marker_source(text: bytes | str) -> str:
    """The source URI a marker file names, or FOREIGN when it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return FOREIGN
    source = value.get("source_uri") if isinstance(value, dict) else None
    return source if isinstance(source, str) and source else FOREIGN
