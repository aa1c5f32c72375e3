"""The whole platform as real processes, and the faults the harness injects into it.

Services are found through the ``omnistock.services`` entry points, so every service
installed in the workspace runs here (replenishment joins once it is merged). Each
runs as an OS process (:class:`ServiceProcess`) against an embedded broker and an
embedded PostgreSQL that this harness owns, so it can kill, pause and restart them.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from system_client import Api, Apis, Ledger

from omnistock.devstack.broker import EMBEDDED_FETCH_MAX_WAIT_MS, EmbeddedBroker
from omnistock.devstack.postgres import EmbeddedPostgres, ensure_database
from omnistock.devstack.serving import ServiceProcess
from omnistock.devstack.waiting import eventually
from omnistock.events.admin import admin_client, ensure_topics
from omnistock.events.positions import log_end_offsets
from omnistock.events.producer import EventProducer
from omnistock.events.service import ServiceSpec, discover
from omnistock.events.settings import KafkaSettings
from omnistock.events.topics import TOPICS

#: Per-service settings that make a compressed day possible (short TTLs, quick expiry).
SERVICE_ENV: Mapping[str, Mapping[str, str]] = {
    "inventory": {
        "INVENTORY_MIN_TTL_SECONDS": "2",
        "INVENTORY_HELD_VERDICT_MARGIN_S": "1",
        "INVENTORY_EXPIRY_INTERVAL_S": "0.2",
    },
}


def kafka_settings(bootstrap: str, topic_prefix: str) -> KafkaSettings:
    # Tansu completes a group join after about half the session timeout: keep joins quick.
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        session_timeout_ms=3_000,
        heartbeat_interval_ms=300,
        fetch_max_wait_ms=EMBEDDED_FETCH_MAX_WAIT_MS,
    )


class Platform:
    """Every service (one replica each to begin with) on one broker and one PostgreSQL."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        postgres: EmbeddedPostgres,
        logs: Path,
        *,
        specs: Mapping[str, ServiceSpec] | None = None,
    ) -> None:
        self.broker = broker
        self.postgres = postgres
        self.logs = logs
        self.specs = dict(specs if specs is not None else discover())
        self.kafka = kafka_settings(broker.bootstrap_servers, f"s{uuid.uuid4().hex[:8]}.")
        self.databases: dict[str, str] = {}
        self.replicas: dict[str, list[ServiceProcess]] = {name: [] for name in self.specs}
        self._spawned = 0
        ledger = Ledger()
        self.apis = Apis(
            ledger, {name: Api(name, self._urls_of(name), ledger) for name in self.specs}
        )

    def _urls_of(self, name: str) -> Callable[[], list[str]]:
        def urls() -> list[str]:
            return [r.url for r in self.replicas[name] if _alive(r)]

        return urls

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.kafka, TOPICS)
        for name, spec in self.specs.items():
            if spec.needs_database:
                self.databases[name] = await ensure_database(
                    self.postgres.url(), f"{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
                )
        await asyncio.gather(*(self.add_replica(name) for name in self.specs))

    async def stop(self) -> None:
        await self.apis.aclose()
        # All at once: each one's graceful shutdown (consumers commit and leave) takes seconds.
        await asyncio.gather(
            *(
                asyncio.to_thread(replica.stop)
                for replicas in self.replicas.values()
                for replica in replicas
            )
        )

    def env(self, name: str, instance: str) -> dict[str, str]:
        kafka = self.kafka
        values = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
            "KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
            "KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
            "INSTANCE_ID": instance,
            "LOG_LEVEL": os.environ.get("SYSTEM_LOG_LEVEL", "warning"),
            **SERVICE_ENV.get(name, {}),
        }
        if name in self.databases:
            values["DATABASE_URL"] = self.databases[name]
        return values

    async def add_replica(self, name: str) -> ServiceProcess:
        """Start one more replica of ``name`` and wait until it is ready."""
        self._spawned += 1
        instance = f"{name}-{self._spawned}"
        replica = ServiceProcess(name, self.env(name, instance), self.logs / f"{instance}.log")
        self.replicas[name].append(replica)
        await replica.start(ready_timeout=90)
        return replica

    def remove_replica(self, name: str, *, crash: bool = False) -> None:
        """Take the newest replica of ``name`` away: SIGTERM (it leaves) or kill -9."""
        replica = self.replicas[name].pop()
        if crash:
            replica.kill()
        else:
            replica.stop()

    # --- faults ----------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """kill -9 every replica of ``name``."""
        for replica in self.replicas[name]:
            replica.kill()

    async def restart(self, name: str) -> None:
        """Start again every replica of ``name`` that is not running (as a supervisor would)."""
        await asyncio.gather(
            *(r.start(ready_timeout=90) for r in self.replicas[name] if not _alive(r))
        )

    async def kill_and_restart(self, *names: str) -> None:
        for name in names:
            self.kill(name)
        await asyncio.gather(*(self.restart(name) for name in names))

    def pause_broker(self) -> None:
        self.broker.pause()

    def resume_broker(self) -> None:
        self.broker.resume()

    def stop_postgres(self) -> None:
        self.postgres.stop()

    def start_postgres(self) -> None:
        self.postgres.start()

    async def heal(self) -> None:
        """Undo every fault: broker resumed, PostgreSQL up, one live replica per service."""
        self.broker.resume()
        if not self.postgres.running:
            self.postgres.start()
        # Services that lived through a fault are not restarted: the next test runs on
        # them, so one left wedged by an outage shows there.
        for name, replicas in self.replicas.items():
            while len(replicas) > 1:
                self.remove_replica(name)
            await self.restart(name)

    async def redeliver(self, seed: int = 11) -> int:
        """Write every record already in the log again, into the same partition, in a
        shuffled order: a broker or producer redelivering, duplicating and reordering."""
        names = [topic.physical(self.kafka.topic_prefix) for topic in TOPICS]
        reader = AIOKafkaConsumer(
            **self.kafka.client_options(), group_id=None, enable_auto_commit=False
        )
        await reader.start()
        try:
            await reader.topics()
            partitions = [
                TopicPartition(name, p)
                for name in names
                for p in sorted(reader.partitions_for_topic(name) or ())
            ]
            ends = await log_end_offsets(self.kafka, partitions)
            records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            reader.assign([tp for tp in partitions if ends.get(tp, 0) > 0])
            await reader.seek_to_beginning()
            while any(len(records.get(tp, [])) < ends[tp] for tp in partitions if ends.get(tp, 0)):
                for tp, batch in (await reader.getmany(timeout_ms=200)).items():
                    kept = [r for r in batch if r.offset < ends[tp]]
                    records.setdefault(tp, []).extend(kept)
        finally:
            await reader.stop()
        shuffle = random.Random(seed)
        writer = EventProducer(self.kafka, source="/omnistock/system-tests/redelivery")
        async with writer:
            copies = 0
            for tp, batch in records.items():
                again = list(batch)
                shuffle.shuffle(again)
                for record in again:
                    await writer.send_raw(
                        tp.topic,
                        record.key,
                        record.value,
                        list(record.headers),
                        partition=tp.partition,
                    )
                    copies += 1
        return copies

    async def consumed_to_the_end(self, timeout: float = 120.0) -> None:  # noqa: ASYNC109
        """Wait until every consumer group has handled every record of the topics it reads
        (committed offsets at the log end): a barrier for checks after a redelivery."""
        names = [topic.physical(self.kafka.topic_prefix) for topic in TOPICS]
        admin = admin_client(self.kafka)
        await admin.start()
        try:
            groups = sorted(
                g[0]
                for g in await admin.list_consumer_groups()
                if g[0].startswith(self.kafka.topic_prefix)
            )
        finally:
            await admin.close()
        probe = AIOKafkaConsumer(**self.kafka.client_options(), group_id=None)
        await probe.start()
        try:
            await probe.topics()
            partitions = [
                TopicPartition(name, p)
                for name in names
                for p in sorted(probe.partitions_for_topic(name) or ())
            ]
        finally:
            await probe.stop()
        ends = await log_end_offsets(self.kafka, partitions)
        readers = {
            group: AIOKafkaConsumer(
                **self.kafka.client_options(), group_id=group, enable_auto_commit=False
            )
            for group in groups
        }
        for reader in readers.values():
            await reader.start()
        try:

            async def caught_up() -> bool:
                for reader in readers.values():
                    committed = {tp: await reader.committed(tp) for tp in partitions}
                    reads = {tp.topic for tp, offset in committed.items() if offset is not None}
                    for tp in partitions:
                        if tp.topic in reads and (committed[tp] or 0) < ends[tp]:
                            return False
                return True

            await eventually(caught_up, timeout=timeout, interval=0.2, message="consumed")
        finally:
            for reader in readers.values():
                await reader.stop()

    @property
    def ledger(self) -> Ledger:
        return self.apis.ledger

    def service_pids(self) -> dict[str, list[int]]:
        return {
            name: [r.process.pid for r in replicas if r.process is not None and _alive(r)]
            for name, replicas in self.replicas.items()
        }


def _alive(replica: ServiceProcess) -> bool:
    return replica.process is not None and replica.process.poll() is None
