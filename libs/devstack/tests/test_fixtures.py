"""The plugin's per-test isolation fixtures."""

from __future__ import annotations

import re

import pytest

from omnistock.events.settings import KafkaSettings

_prefixes_seen: set[str] = set()


def test_topic_prefix_is_unique_per_test(topic_prefix: str) -> None:
    assert re.fullmatch(r"t[0-9a-f]{8}\.", topic_prefix)
    assert topic_prefix not in _prefixes_seen
    _prefixes_seen.add(topic_prefix)


def test_topic_prefix_differs_in_the_next_test(topic_prefix: str) -> None:
    assert topic_prefix not in _prefixes_seen
    _prefixes_seen.add(topic_prefix)


@pytest.mark.integration
def test_kafka_settings_point_at_the_session_broker(
    kafka_settings: KafkaSettings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    assert kafka_settings.bootstrap_servers == kafka_bootstrap
    assert kafka_settings.topic_prefix == topic_prefix
