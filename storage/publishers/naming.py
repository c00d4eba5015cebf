"""Destination names from a template such as ``{name}-compeft`` (validated: no traversal)."""

from __future__ import annotations

import re
import string

from storage.errors import AddressError, ValidationError
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
    name = render_name(template, provenance)
    if not provenance.subfolder:
        return name
    try:
        return f"{name}/{validate_subfolder(provenance.subfolder)}"
    except ValidationError as err:
        raise AddressError(f"cannot keep the source layout below {name!r}: {err}") from err
