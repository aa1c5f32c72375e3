"""Reorder rules proposed from demand, for SKUs that have none yet.

velocity = units demanded over the window / days in the window;
reorder_point = ceil(velocity x lead time in days) (what sells while the goods travel);
safety_stock = ceil(velocity x safety days) (inventory keeps it back from available, so
the reorder happens at velocity x lead time + safety stock units on the shelf);
order_up_to = reorder_point + ceil(velocity x review days), at least reorder_point + 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Suggestion:
    sku: str
    velocity_per_day: float
    reorder_point: int
    order_up_to: int
    safety_stock: int
    lead_time_hours: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def suggest(
    sku: str,
    units: int,
    *,
    window_days: int,
    lead_time_hours: int,
    safety_days: float,
    review_days: float,
) -> Suggestion:
    velocity = max(0, units) / window_days
    reorder_point = math.ceil(velocity * lead_time_hours / 24)
    return Suggestion(
        sku=sku,
        velocity_per_day=round(velocity, 4),
        reorder_point=reorder_point,
        order_up_to=max(reorder_point + 1, reorder_point + math.ceil(velocity * review_days)),
        safety_stock=math.ceil(velocity * safety_days),
        lead_time_hours=lead_time_hours,
    )
