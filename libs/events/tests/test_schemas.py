"""The committed JSON Schemas and AsyncAPI document match the catalogue."""

from __future__ import annotations

from typing import Any

from omnistock.events import schemas
from omnistock.events.catalogue import EVENT_TYPES


def test_committed_schema_files_are_current() -> None:
    stale = schemas.stale_files()
    assert not stale, f"regenerate with `uv run omnistock-events schemas`: {stale}"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_document_is_complete_and_every_ref_resolves() -> None:
    document = schemas.asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert set(document["components"]["messages"]) == {m.__name__ for m in EVENT_TYPES}
    for ref in _refs(document):
        assert _resolve(document, ref) is not None, ref
    for operation in document["operations"].values():
        assert operation["action"] in {"send", "receive"}
