"""The embedded broker, driven by the real aiokafka client."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from omnistock.devstack.broker import EmbeddedBroker
from omnistock.devstack.errors import EmbeddedProcessError
from omnistock.devstack.waiting import eventually

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _cluster(bootstrap: str) -> tuple[str, list[str]]:
    """The cluster id the broker reports, and its topics."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        return cluster["cluster_id"], await admin.list_topics()
    finally:
        await admin.close()


def _process_state(pid: int) -> str:
    # Field 3 of /proc/<pid>/stat: R running, S sleeping, T stopped, ...
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def test_produce_consume_round_trip_keeps_key_value_and_headers(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}round-trip"
    await _create_topic(kafka_bootstrap, topic)
    headers = [("ce_id", b"0b6a"), ("ce_type", b"omnistock.test.v1"), ("empty", b"")]

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"n": 1}', key=b"sku-1", headers=headers)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        received = await asyncio.wait_for(consumer.getone(), timeout=10)
    finally:
        await consumer.stop()

    assert (received.partition, received.offset) == (sent.partition, sent.offset)
    assert received.key == b"sku-1"
    assert received.value == b'{"n": 1}'
    assert list(received.headers) == headers


async def test_restarted_broker_is_a_new_empty_log_on_the_same_address(
    embedded_broker: EmbeddedBroker,
) -> None:
    bootstrap = embedded_broker.bootstrap_servers
    first_id = embedded_broker.cluster_id
    await _create_topic(bootstrap, "before-restart")
    assert await _cluster(bootstrap) == (first_id, ["before-restart"])

    embedded_broker.stop()
    assert not embedded_broker.running
    embedded_broker.start()

    assert embedded_broker.bootstrap_servers == bootstrap
    assert embedded_broker.cluster_id != first_id
    assert await _cluster(bootstrap) == (embedded_broker.cluster_id, [])


async def test_killed_broker_is_gone_and_starts_again(embedded_broker: EmbeddedBroker) -> None:
    pid = embedded_broker.pid
    embedded_broker.kill()

    assert not embedded_broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    embedded_broker.start()
    assert (await _cluster(embedded_broker.bootstrap_servers))[0] == embedded_broker.cluster_id


async def test_paused_broker_answers_nothing_until_resumed(
    embedded_broker: EmbeddedBroker,
) -> None:
    bootstrap = embedded_broker.bootstrap_servers
    await _create_topic(bootstrap, "paused")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        assert (await producer.send_and_wait("paused", b"before")).offset == 0

        embedded_broker.pause()
        await eventually(
            lambda: _process_state(embedded_broker.pid) == "T", message="broker process stopped"
        )
        # The kernel still accepts connections; the broker answers none of them.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_cluster(bootstrap), timeout=0.3)

        embedded_broker.resume()
        # The producer's connection, idle through the pause, works again.
        after = await asyncio.wait_for(producer.send_and_wait("paused", b"after"), timeout=10)
    finally:
        await producer.stop()
    assert after.offset == 1


def test_stopping_a_paused_broker_does_not_hang(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    broker.pause()
    broker.stop()
    assert not broker.running


def test_start_failure_names_the_cause_from_the_log(tmp_path: Path) -> None:
    # Bound but not listening: the port is taken, yet connections to it are refused, so
    # the failure shows at once instead of after a probe of a listener that never answers.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        broker = EmbeddedBroker(port=squatter.getsockname()[1], log_path=tmp_path / "tansu.log")

        with pytest.raises(EmbeddedProcessError, match="Address in use") as failure:
            broker.start()

    assert str(tmp_path / "tansu.log") in str(failure.value)
    assert not broker.running


def test_temporary_log_is_removed_with_the_broker() -> None:
    with EmbeddedBroker() as broker:
        log_path = broker.log_path
        assert "ready" in log_path.read_text()
    assert not log_path.exists()
