"""Where the log ends, measured so that it is right on every broker we run against.

The embedded Tansu broker answers ListOffsets(latest) with the *base* offset of
the last record batch plus one, so when a producer packed several records into
that batch the answer falls short of the real end (10 records at offsets 3..12
give 4, not 13). Fetch responses carry the correct high watermark. So the
listed offset is only a lower bound, and every partition is fetched from just
below it to read the high watermark; on Apache Kafka both agree and the fetch
costs one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

#: How long to wait for the last batch of a partition before trusting ListOffsets alone.
FETCH_DEADLINE_S = 2.0


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The next offset to be written, per partition.

    ``partitions`` must be assigned to ``consumer`` (no group); their positions are
    moved, so seek afterwards.
    """
    listed: dict[TopicPartition, int] = dict(await consumer.end_offsets(list(partitions)))
    ends = dict(listed)
    pending = set(partitions)
    for tp in pending:
        consumer.seek(tp, max(listed[tp] - 1, 0))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FETCH_DEADLINE_S
    try:
        while pending and loop.time() < deadline:
            # Take everything fetched: records left in aiokafka's buffer stop it fetching
            # from that broker at all. Partitions already measured are paused instead.
            batches = await consumer.getmany(timeout_ms=100)
            for tp in list(pending):
                records = batches.get(tp)
                highwater = consumer.highwater(tp)
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1, highwater or 0)
                elif highwater is None:
                    continue
                else:
                    # Nothing to read there (an empty partition, a compacted or control record).
                    ends[tp] = max(ends[tp], highwater)
                pending.discard(tp)
                consumer.pause(tp)
    finally:
        consumer.resume(*partitions)
    return ends
