"""Upcasters: turn the JSON of an older schema version into the next version's.

Events in the log are never rewritten; readers upcast on the way in, one version
step at a time, so every reader of every age folds the same current shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

JsonObject = dict[str, Any]
Upcaster = Callable[[JsonObject], JsonObject]

_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the step from ``from_version`` to ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"two upcasters for {event_type} v{from_version}")
        _UPCASTERS[key] = fn
        return fn

    return register


class MissingUpcaster(LookupError):
    pass


def upcast(event_type: str, version: int, target: int, data: JsonObject) -> JsonObject:
    while version < target:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise MissingUpcaster(f"no upcaster from {event_type} v{version} to v{version + 1}")
        data = step(data)
        version += 1
    return data


@upcaster("io.omnistock.inventory.LocationRegistered", 1)
def _location_kind_and_online_fulfilment(data: JsonObject) -> JsonObject:
    # v1 called the kind ``type`` and predates store fulfilment: only warehouses shipped online.
    upgraded = {k: v for k, v in data.items() if k != "type"}
    upgraded["kind"] = data["type"]
    upgraded["fulfils_online"] = data["type"] == "warehouse"
    return upgraded
