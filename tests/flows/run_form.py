"""What the Prefect UI's run form of ``compress-catalog`` shows, read from a parameter schema as a server stores
it: fields ordered by ``position`` (the UI's order; PostgreSQL's JSONB keeps no key order), labels in words,
fixed choices as drop-downs, no null alternatives, internal knobs absent. Shared by tests/flows (SQLite) and
tests/e2e (the deployment created by ``prefect deploy``, PostgreSQL in CI)."""

from __future__ import annotations

from typing import Any

TOP = ["source", "options", "service", "force", "batch_size", "max_in_flight"]
OPTIONS = ["density", "alpha", "task", "tasks", "base", "densities", "alphas", "metric",
           "codec", "device", "limit", "tolerance", "search", "base_for"]
SERVICE = ["publish_to", "store", "database_url", "s3_endpoint", "hf_endpoint", "checkpoints", "near_duplicate_cosine"]
CHOICES = {"codec": ["golomb", "bitmask"], "device": ["auto", "cpu", "cuda"], "search": ["refine", "grid"]}


def in_form_order(properties: dict[str, Any]) -> list[str]:
    """Field names as the UI lays them out (SchemaFormFields sorts by position)."""
    return [name for name, _ in sorted(properties.items(), key=lambda kv: kv[1].get("position", float("inf")))]


def _definition(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    return (schema.get("definitions") or schema["$defs"])[ref.rsplit("/", 1)[-1]]


def check_run_form(schema: dict[str, Any]) -> None:
    """Assert what a person sees in the run form of ``compress-catalog``."""
    top = schema["properties"]
    assert in_form_order(top) == TOP, in_form_order(top)
    options = _definition(schema, top["options"]["$ref"])["properties"]
    service = _definition(schema, top["service"]["$ref"])["properties"]
    assert in_form_order(options) == OPTIONS, in_form_order(options)
    assert in_form_order(service) == SERVICE, in_form_order(service)
    labels = [p["title"] for p in (*top.values(), *options.values(), *service.values())]
    assert all(t[0].isupper() or not t[0].isascii() for t in labels) and not any("_" in t for t in labels), labels
    assert [top[n]["title"] for n in TOP[:3]] == ["Source", "Compression", "Publish and store"]
    assert options["density"]["title"] == "Density k" and service["publish_to"]["title"] == "Publish to"
    for name, choices in CHOICES.items():
        assert options[name]["enum"] == choices and options[name]["type"] == "string", options[name]
    for prop in (*top.values(), *options.values(), *service.values()):  # no 'Property is type "None"'
        assert {"type": "null"} not in prop.get("anyOf", []), prop
    assert service["publish_to"]["type"] == "string" and options["limit"]["type"] == "number"
