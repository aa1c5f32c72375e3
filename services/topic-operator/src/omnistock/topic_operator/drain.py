"""Before the chart is uninstalled: delete the release's KafkaTopics while the operator
still runs, so a Delete resource's finalizer is honoured and removed rather than left
without an operator (which would leave the namespace stuck in Terminating).

The chart runs this as a pre-delete hook Job: ``python -m omnistock.topic_operator.drain``.
A failure (resources still there at the deadline) fails ``helm uninstall`` before
anything else is deleted, with the operator still running: retry, or look at the
resources' conditions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp

from omnistock.topic_operator.domain.resources import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesApi:
    """Just enough of the API server for KafkaTopics, with the pod's service account."""

    def __init__(self, base_url: str, token: str, ssl_context: ssl.SSLContext | bool) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl = ssl_context

    @classmethod
    def in_cluster(cls) -> KubernetesApi:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        token = (SERVICE_ACCOUNT / "token").read_text().strip()
        return cls(f"https://{host}:{port}", token, context)

    def _topics(self, namespace: str) -> str:
        return f"{self._base}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    async def list_topics(
        self, session: aiohttp.ClientSession, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        async with session.get(
            self._topics(namespace),
            params={"labelSelector": selector},
            headers=self._headers,
            ssl=self._ssl,
        ) as response:
            response.raise_for_status()
            items: list[dict[str, Any]] = (await response.json())["items"]
            return items

    async def delete_topic(self, session: aiohttp.ClientSession, namespace: str, name: str) -> None:
        async with session.delete(
            f"{self._topics(namespace)}/{name}", headers=self._headers, ssl=self._ssl
        ) as response:
            if response.status != 404:  # already gone is what we want
                response.raise_for_status()


async def drain(
    api: KubernetesApi,
    namespace: str,
    selector: str,
    *,
    timeout_s: float = 300.0,
    poll_s: float = 2.0,
) -> list[str]:
    """Delete every KafkaTopic matching ``selector`` and wait until all are gone; the
    names deleted. Raises TimeoutError naming what is left (with its Ready reason)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        found = await api.list_topics(session, namespace, selector)
        names = [item["metadata"]["name"] for item in found]
        for name in names:
            await api.delete_topic(session, namespace, name)
        log.info("deleting %d KafkaTopic(s) in %s: %s", len(names), namespace, names)
        while True:
            left = await api.list_topics(session, namespace, selector)
            if not left:
                return names
            if loop.time() >= deadline:
                raise TimeoutError(
                    "KafkaTopics still there (is the topic operator running?): "
                    + ", ".join(_describe(item) for item in left)
                )
            await asyncio.sleep(poll_s)


def _describe(item: dict[str, Any]) -> str:
    conditions = item.get("status", {}).get("conditions") or []
    reason = next((c.get("reason") for c in conditions if c.get("type") == "Ready"), "unknown")
    return f"{item['metadata']['name']} (Ready: {reason})"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    namespace, selector = os.environ["DRAIN_NAMESPACE"], os.environ["DRAIN_SELECTOR"]
    timeout_s = float(os.environ.get("DRAIN_TIMEOUT_S", "300"))
    try:
        names = asyncio.run(
            drain(KubernetesApi.in_cluster(), namespace, selector, timeout_s=timeout_s)
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("done: %d KafkaTopic(s) deleted", len(names))


if __name__ == "__main__":
    main()
