"""pydantic models generated from the project's frozen dataclasses (configurations, registry rows), so the HTTP
API's schema and the flows' run forms describe each value once: names, types, defaults, descriptions (a field's
``metadata["help"]``) and fixed choices (``metadata["choices"]``, drop-downs in a form).

Run forms (Prefect's "Custom run") also get, from the same metadata, a label in words (``metadata["label"]``,
else the name in words) and a ``position``: Prefect's UI orders fields by ``position`` (PostgreSQL's JSONB
stores object keys sorted, so key order is lost), main options first and ``advanced`` ones after them. An
optional field is shown as its plain type (an empty entry means "not set") instead of a choice between the
type and a field saying ``Property is type "None"``."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo


def fields_of(cls: type, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """pydantic field definitions of a dataclass's fields (except ``skip``)."""
    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        annotation = hints[f.name]
        if f.metadata.get("choices"):
            annotation = Literal[f.metadata["choices"]]  # type: ignore[valid-type]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        help_text = f.metadata.get("help")
        out[f.name] = (annotation, default if not help_text else Field(default, description=help_text + "."))
    return out


def model_of(cls: type, name: str | None = None, **extra: Any) -> type[BaseModel]:
    """A pydantic model with the fields of dataclass ``cls`` (plus ``extra`` definitions), extra keys ignored."""
    return create_model(name or cls.__name__, __config__=ConfigDict(extra="ignore"), __doc__=cls.__doc__,
                        **fields_of(cls), **extra)


def label_of(name: str, metadata: Mapping[str, Any] | None = None) -> str:
    """A field's label in a form: ``metadata["label"]``, else its name in words ('publish_to' → 'Publish to')."""
    return (metadata or {}).get("label") or name.replace("_", " ").capitalize()


def _optional(annotation: Any) -> bool:
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    return union and type(None) in typing.get_args(annotation)


def form_schema(label: str, position: int) -> Any:
    """``json_schema_extra`` of a form field: its label and position; an optional field (``X | None``) shown as
    ``X`` without a null default (Prefect's server still accepts null for a field that is not required and has
    no default: it adds the null branch back when it validates parameters)."""
    def edit(schema: dict[str, Any]) -> None:
        branches = schema.get("anyOf")
        if branches and {"type": "null"} in branches and len(branches) == 2:
            [plain] = [b for b in branches if b != {"type": "null"}]
            del schema["anyOf"]
            schema.update(plain)
            if schema.get("default", 0) is None:
                del schema["default"]
        schema["title"], schema["position"] = label, position
    return edit


def form_field(label: str, position: int) -> FieldInfo:
    """A top-level flow parameter's label and position in the run form (``Annotated[T, form_field(...)]``; Prefect
    adds its own ``position`` as a dict, and pydantic merges dicts only)."""
    return Field(json_schema_extra={"title": label, "position": position})


@dataclasses.dataclass(frozen=True)
class FormField:
    """One field of a run form before its position is known."""

    annotation: Any
    default: Any
    description: str | None
    label: str
    advanced: bool
    default_factory: Any = None


def form_fields(cls: type, *, skip: tuple[str, ...] = ()) -> dict[str, FormField]:
    """The fields of dataclass ``cls`` for a run form (positions come from ``in_form_order``)."""
    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        annotation = Literal[f.metadata["choices"]] if f.metadata.get("choices") else hints[f.name]  # type: ignore[valid-type]
        factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
        default = ... if f.default is dataclasses.MISSING and factory is None else f.default
        help_text = f.metadata.get("help")
        out[f.name] = FormField(annotation, default, help_text + "." if help_text else None, label_of(f.name, f.metadata),
                                bool(f.metadata.get("advanced")), factory)
    return out


def in_form_order(*groups: Mapping[str, FormField]) -> dict[str, tuple[Any, FieldInfo]]:
    """pydantic field definitions of ``groups`` in form order: every main field in the order given, then every
    advanced one, each with its label and ``position``."""
    merged: dict[str, FormField] = {}
    for group in groups:
        merged.update(group)
    ordered = [n for n, f in merged.items() if not f.advanced] + [n for n, f in merged.items() if f.advanced]
    out = {}
    for position, name in enumerate(ordered):
        f = merged[name]
        default = {"default_factory": f.default_factory} if f.default_factory is not None else {"default": f.default}
        out[name] = (f.annotation, Field(**default, title=f.label, description=f.description,
                                         json_schema_extra=form_schema(f.label, position)))
    return out
