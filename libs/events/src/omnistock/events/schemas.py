"""JSON Schema for every event and an AsyncAPI 3.0 document, generated from the catalogue.

The generated files are committed under ``libs/events/schemas`` so that other
teams can read them without Python; a test fails when they are stale.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import orjson

from omnistock.events.catalogue import EVENT_TYPES
from omnistock.events.codec import (
    CONTENT_TYPE,
    H_CAUSATION,
    H_CORRELATION,
    H_EPOCH,
    H_ID,
    H_SCHEMAVERSION,
    H_SOURCE,
    H_SPECVERSION,
    H_SUBJECT,
    H_TIME,
    H_TRACEPARENT,
    H_TRACESTATE,
    H_TYPE,
)
from omnistock.events.envelope import Event
from omnistock.events.examples import EXAMPLES
from omnistock.events.topics import DOMAIN_TOPICS, Topic

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
SCHEMA_BASE = "https://omnistock.io/schemas/events/"


def schema_file_name(model: type[Event]) -> str:
    return f"{model.__name__}.v{model.schema_version}.schema.json"


def _summary(model: type[Event]) -> str:
    doc = inspect.getdoc(model) or ""
    return doc.split("\n\n")[0].replace("\n", " ") or model.__name__


def event_json_schema(model: type[Event]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_BASE + schema_file_name(model),
        "x-cloudevents-type": model.event_type,
        "x-schema-version": model.schema_version,
        "x-topic": model.topic.name if model.topic else None,
        "x-key": model.key_field,
        **schema,
    }


def _headers_schema() -> dict[str, Any]:
    def text(description: str) -> dict[str, str]:
        return {"type": "string", "description": description}

    return {
        "type": "object",
        "required": [H_SPECVERSION, H_ID, H_SOURCE, H_TYPE, H_SCHEMAVERSION],
        "properties": {
            H_SPECVERSION: {"type": "string", "const": "1.0"},
            H_ID: text("Unique event id (UUID); duplicates of a retried send share it."),
            H_SOURCE: text("The writing service, e.g. /omnistock/inventory."),
            H_TYPE: text("The CloudEvents type, e.g. io.omnistock.inventory.StockReceived."),
            H_TIME: text("RFC 3339 time the event was decided."),
            H_SUBJECT: text("The key value the event is about (sku, order id, ...)."),
            H_SCHEMAVERSION: text("Schema version of the body; older ones are upcast on read."),
            H_CORRELATION: text("Id of the first event of the flow (saga) this belongs to."),
            H_CAUSATION: text("Id of the event or request that caused this one."),
            H_EPOCH: text("Ownership epoch of the deciding partition owner (fencing)."),
            H_TRACEPARENT: text("W3C trace context."),
            H_TRACESTATE: text("W3C trace state."),
            "content-type": {"type": "string", "const": CONTENT_TYPE},
        },
    }


def _hoisted_schema(model: type[Event], schemas: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _topic_binding(topic: Topic) -> dict[str, Any]:
    return {
        "kafka": {
            "topic": topic.name,
            "partitions": topic.partitions,
            "topicConfiguration": {
                "cleanup.policy": [topic.cleanup_policy],
                "retention.ms": topic.retention_ms,
            },
            "bindingVersion": "0.5.0",
        }
    }


def asyncapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for model in EVENT_TYPES:
        messages[model.__name__] = {
            "name": model.__name__,
            "title": model.event_type,
            "summary": _summary(model),
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "payload": _hoisted_schema(model, schemas),
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": f"{model.key_field or 'none'}"},
                    "bindingVersion": "0.5.0",
                }
            },
            "examples": [{"name": "example", "payload": EXAMPLES[model].model_dump(mode="json")}],
        }
    schemas["CloudEventsHeaders"] = _headers_schema()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in DOMAIN_TOPICS:
        models = [m for m in EVENT_TYPES if m.topic is topic]
        refs = {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in models}
        channel_id = topic.name.replace(".", "_")
        channels[channel_id] = {
            "address": topic.name,
            "title": topic.name,
            "description": f"{topic.description} Key: {topic.key}.",
            "messages": refs,
            "bindings": _topic_binding(topic),
        }
        own = [{"$ref": f"#/channels/{channel_id}/messages/{name}"} for name in refs]
        operations[f"{topic.owner}_sends_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"{topic.owner} writes {topic.name}.",
            "messages": own,
        }
        for consumer in topic.consumers:
            operations[f"{consumer}_receives_{channel_id}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{consumer} folds {topic.name}.",
                "messages": own,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "omnistock events",
            "version": "1.0.0",
            "description": "Every stock movement, reservation, order, POS transaction and "
            "replenishment as CloudEvents 1.0 in Kafka binary content mode. Generated from "
            "libs/events; do not edit by hand.",
        },
        "servers": {
            "dev": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The embedded dev broker started by `omnistock dev up`.",
            }
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _dump(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def rendered_files() -> dict[str, bytes]:
    """Every generated file, by path relative to the schema directory."""
    files = {f"events/{schema_file_name(m)}": _dump(event_json_schema(m)) for m in EVENT_TYPES}
    files["asyncapi.json"] = _dump(asyncapi_document())
    return files


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Paths under ``directory`` that differ from, lack, or are not among the generated files."""
    wanted = rendered_files()
    present = (
        {str(p.relative_to(directory)) for p in directory.rglob("*.json")}
        if directory.exists()
        else set()
    )
    stale = [
        name
        for name, content in wanted.items()
        if not (directory / name).exists() or (directory / name).read_bytes() != content
    ]
    return sorted(stale + sorted(present - set(wanted)))


def write_files(directory: Path = SCHEMA_DIR) -> list[str]:
    wanted = rendered_files()
    for name in stale_files(directory):
        path = directory / name
        if name in wanted:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(wanted[name])
        else:
            path.unlink()
    return sorted(wanted)
