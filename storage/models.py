"""pydantic models generated from the project's frozen dataclasses (configurations, registry rows), so the HTTP
API's schema and the flows' run forms describe each value once: names, types, defaults, descriptions (a field's
``metadata["help"]``) and fixed choices (``metadata["choices"]``, drop-downs in a form)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


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
