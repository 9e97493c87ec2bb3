"""The base of every study-file model: immutable, and unknown keys are errors (never dropped)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python


def describe_defaults(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Append each field's default to its JSON Schema description (what an editor shows on hover).

    A description that already speaks of its default (the word "default") is left as written, and
    a field without a description gets none; defaults built by a factory, which pydantic leaves out
    of the schema, are said too.
    """
    properties = schema.get("properties", {})
    for name, field in cls.model_fields.items():
        prop = properties.get(field.alias or name)
        if prop is None or field.is_required() or "default" in prop.get("description", "default").lower():
            continue
        value = to_jsonable_python(field.get_default(call_default_factory=True))
        said = "not set" if value is None else json.dumps(value)
        text = prop["description"]
        prop["description"] = f"{text}{'' if text.endswith('.') else '.'} Default: {said}."


class Frozen(BaseModel):
    """Immutable pydantic model that refuses unknown keys; its JSON Schema says every field's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=describe_defaults)
